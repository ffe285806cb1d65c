"""A Redis Sentinel set on loopback for the tests (issue 18, item 2): one
master and two replicas (redis-server, appendonly yes + appendfsync
always, as the schema assumes for the outbox) and three sentinels
(redis-server --sentinel, quorum 2, down-after-milliseconds DOWN_MS), on
ports picked here, each in its own temporary folder.

It stands in for mxj_redis.RedisServer in t/fault's Edge: `address` is
the `sentinel:NAME host:port ...` form that matrix_redis and --redis take,
`client()` a client of the master the sentinels name now, `proc` the
master's process, `kill9()` kills the master. With password, the data
nodes require it (and the replicas and sentinels use it); with
sentinel_password, the sentinels require theirs."""

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis as redis_py

from mxj_nginx import free_port, wait_port

REDIS_SERVER = "/usr/bin/redis-server"
NAME = "mxjmaster"
DOWN_MS = 1000          # sentinel down-after-milliseconds
FAILOVER_MS = 4000      # sentinel failover-timeout


class Server:
    """One redis-server process (a data node or a sentinel)."""

    def __init__(self, root, name, sentinel=False, replicaof=None,
                 password=None, sentinel_password=None):
        self.dir = root / name
        self.dir.mkdir()
        self.name = name
        self.port = free_port()
        self.sentinel = sentinel
        self.replicaof = replicaof
        self.password = password
        self.sentinel_password = sentinel_password
        self.proc = None

    def args(self):
        if self.sentinel:
            conf = self.dir / "sentinel.conf"
            if not conf.exists():
                conf.write_text(
                    f"port {self.port}\n"
                    f"bind 127.0.0.1\n"
                    f"dir {self.dir}\n"
                    f"logfile {self.dir / 'redis.log'}\n"
                    f"sentinel monitor {NAME} 127.0.0.1 "
                    f"{self.replicaof} 2\n"
                    f"sentinel down-after-milliseconds {NAME} {DOWN_MS}\n"
                    f"sentinel failover-timeout {NAME} {FAILOVER_MS}\n"
                    f"sentinel parallel-syncs {NAME} 2\n"
                    + (f"sentinel auth-pass {NAME} {self.password}\n"
                       if self.password else "")
                    + (f"requirepass {self.sentinel_password}\n"
                       f"sentinel sentinel-pass {self.sentinel_password}\n"
                       if self.sentinel_password else ""))
            return [REDIS_SERVER, str(conf), "--sentinel"]
        a = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--save", "",
             "--logfile", str(self.dir / "redis.log"),
             "--appendonly", "yes", "--appendfsync", "always"]
        if self.replicaof:
            a += ["--replicaof", "127.0.0.1", str(self.replicaof)]
        if self.password:
            # every node may become the master, and replicate from one
            a += ["--requirepass", self.password,
                  "--masterauth", self.password]
        return a

    def start(self):
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        return self

    def client(self, **kw):
        kw.setdefault("password", self.sentinel_password if self.sentinel
                      else self.password)
        return redis_py.Redis(host="127.0.0.1", port=self.port,
                              socket_timeout=kw.pop("socket_timeout", 5),
                              **kw)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SentinelSet:
    def __init__(self, replicas=2, sentinels=3, password=None,
                 sentinel_password=None):
        self.root = Path(tempfile.mkdtemp(prefix="mxj-sentinel-"))
        pw = {"password": password, "sentinel_password": sentinel_password}
        self.master0 = Server(self.root, "master", **pw)
        self.nodes = [self.master0] + [
            Server(self.root, f"replica{i}", replicaof=self.master0.port,
                   **pw)
            for i in range(replicas)]
        self.sentinels = [Server(self.root, f"sentinel{i}", sentinel=True,
                                 replicaof=self.master0.port, **pw)
                          for i in range(sentinels)]
        self.down = []      # what was killed or stopped, for the notes
        self.nudged = []    # when wait_failover asked for a failover

    @property
    def address(self):
        return f"sentinel:{NAME} " + " ".join(
            f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self):
        for n in self.nodes:
            n.start()
        self.wait_replicas(len(self.nodes) - 1)
        for s in self.sentinels:
            s.start()
        self.wait_sentinels()
        return self

    def wait_replicas(self, n, timeout=30.0):
        """Until the master has n replicas online."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = self.master_node().client().info("replication")
                ok = sum(1 for k, v in info.items()
                         if k.startswith("slave") and isinstance(v, dict)
                         and v.get("state") == "online")
                if ok >= n:
                    return
            except redis_py.exceptions.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {n} replicas online")
            time.sleep(0.05)

    def wait_sentinels(self, timeout=30.0):
        """Until every sentinel sees the others and both replicas."""
        deadline = time.monotonic() + timeout
        while True:
            ok = 0
            for s in self.sentinels:
                try:
                    m = s.client().execute_command("SENTINEL", "MASTER",
                                                   NAME)
                    f = dict(zip(m[::2], m[1::2]))
                    if (int(f[b"num-other-sentinels"])
                            >= len(self.sentinels) - 1
                            and int(f[b"num-slaves"]) >= len(self.nodes) - 1):
                        ok += 1
                except redis_py.exceptions.RedisError:
                    pass
            if ok == len(self.sentinels):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not find each other")
            time.sleep(0.1)

    def master_addr(self):
        """(host, port) the first answering sentinel names."""
        for s in self.sentinels:
            try:
                h, p = s.client(socket_timeout=1).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME)
                return h.decode(), int(p)
            except (redis_py.exceptions.RedisError, TypeError):
                continue
        raise RuntimeError("no sentinel answered")

    def master_node(self):
        try:
            _, port = self.master_addr()
        except RuntimeError:
            return self.master0
        for n in self.nodes:
            if n.port == port:
                return n
        raise RuntimeError(f"the sentinels name an unknown port {port}")

    @property
    def proc(self):
        return self.master_node().proc

    def client(self, **kw):
        return self.master_node().client(**kw)

    def kill9(self):
        m = self.master_node()
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait()
        self.down.append(m)
        return m

    def wait_failover(self, old, timeout=60.0, nudge=20.0):
        """Until the sentinels name a master other than `old` and it
        answers as one. Returns the seconds waited. On a busy machine the
        sentinels' own failover may be late (a replica whose INFO reply
        is too old is not eligible, and a failed try waits twice
        failover-timeout): after `nudge` seconds a sentinel is asked for
        one (SENTINEL FAILOVER), noted in self.nudged."""
        t0 = time.monotonic()
        nudged = False
        while True:
            try:
                _, port = self.master_addr()
                if port != old.port:
                    n = self.master_node()
                    role = n.client(socket_timeout=1).execute_command("ROLE")
                    if role[0] == b"master":
                        return time.monotonic() - t0
            except (RuntimeError, redis_py.exceptions.RedisError):
                pass
            if not nudged and time.monotonic() - t0 > nudge:
                nudged = True
                self.nudged.append(time.monotonic() - t0)
                for sen in self.sentinels:
                    try:
                        sen.client(socket_timeout=2).execute_command(
                            "SENTINEL", "FAILOVER", NAME)
                        break
                    except redis_py.exceptions.RedisError:
                        continue
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("no failover within "
                                   f"{timeout:.0f} s")
            time.sleep(0.05)

    def stop(self):
        for s in self.sentinels + self.nodes:
            s.stop()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
