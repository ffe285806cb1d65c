"""A private redis-server on a loopback port picked here, for the tests.

It runs in its own temporary folder with persistence off unless asked
(aof=True gives appendonly yes + appendfsync always, the setting the
schema assumes for the outbox)."""

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis as redis_py

from mxj_nginx import free_port, wait_port

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, aof=False, password=None):
        self.dir = Path(tempfile.mkdtemp(prefix="mxj-redis-"))
        self.port = free_port()
        self.password = password
        self.aof = aof
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "",
                "--logfile", str(self.dir / "redis.log")]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        self.wait_loaded()
        return self

    def wait_loaded(self, timeout=30.0):
        """Until the data set (the AOF after a restart) is loaded: Redis
        accepts connections before, and answers LOADING meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client(socket_timeout=5).ping()
                return
            except redis_py.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def client(self, **kw):
        return redis_py.Redis(host="127.0.0.1", port=self.port,
                              password=self.password, **kw)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def pause(self, ms):
        """CLIENT PAUSE: the server stops answering clients for ms."""
        self.client().execute_command("CLIENT", "PAUSE", str(ms), "ALL")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        """Start again on the same port and folder (after kill9 or stop)."""
        self.stop()
        deadline = time.monotonic() + 5
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
