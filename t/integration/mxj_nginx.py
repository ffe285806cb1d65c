"""Integration harness (imported by conftest.py and the tests): the real Debian /usr/sbin/nginx with our module, on a
loopback port picked here, in a private prefix; at teardown the error log is
scanned for [alert], [emerg] and "exited on signal", as nginx-tests does.

Run with Debian's /usr/bin/python3 (t/test does)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MXJ_BUILD", TOP / "build")).resolve()
MODULE = BUILD / "ngx_http_matrix_join_module.so"
CTL = BUILD / "matrix-join-ctl"
NGINX = "/usr/sbin/nginx"

BAD_LOG_MARKERS = ("[alert]", "[emerg]", "[crit]", "exited on signal")

# t/test --asan: the module is built with ASan+UBSan; Debian's nginx is not,
# so the runtime is preloaded. A finding aborts the process (the error log
# then says "exited on signal 6") and leaves a report in sanitizer/report.*.
ASAN = os.environ.get("MXJ_ASAN") == "1"


# t/valgrind: nginx runs as one process (master_process off) under valgrind;
# every error and every definitely lost block fails the test.
VALGRIND = os.environ.get("MXJ_VALGRIND") == "1"


def sanitizer_env(prefix):
    env = dict(os.environ)
    if ASAN:
        libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"],
                                 capture_output=True, text=True).stdout.strip()
        # workers run as nobody: the reports need a folder they can write
        sdir = Path(prefix) / "sanitizer"
        sdir.mkdir(exist_ok=True)
        os.chmod(sdir, 0o777)
        log = f"{sdir}/report"
        env["LD_PRELOAD"] = libasan
        # Leaks are not checked here: nginx leaves its cycle's arrays at a
        # worker's exit, from static functions LeakSanitizer cannot name
        # for a suppression. t/valgrind checks the module for leaks.
        env["ASAN_OPTIONS"] = (f"log_path={log}:abort_on_error=1:"
                               "detect_leaks=0:detect_odr_violation=0")
        env["UBSAN_OPTIONS"] = (f"log_path={log}:halt_on_error=1:"
                                "abort_on_error=1:print_stacktrace=1")
    return env


# Under pytest-xdist (t/test runs the suite in several workers) a port that
# one worker picked and released, but has not bound yet, must not be handed
# to another worker, nor to any socket bound to port 0 in the meantime: each
# worker takes its ports from its own block of PORT_BLOCK ports below the
# kernel's ephemeral range, which the kernel never hands out by itself.
PORT_BLOCK = 400
_port_next = 0


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port():
    """A loopback port nothing is bound to: the kernel's pick, or under
    pytest-xdist the next free one of this worker's block."""
    global _port_next
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    base = _ephemeral_low() - (int(worker[2:]) + 1) * PORT_BLOCK
    if base < 1024:
        raise RuntimeError(f"no port block for xdist worker {worker}")
    for _ in range(PORT_BLOCK):
        port = base + _port_next % PORT_BLOCK
        _port_next += 1
        if _bindable(port):
            return port
    raise RuntimeError(f"every port of {base}..{base + PORT_BLOCK - 1} "
                       "is in use")


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Nginx:
    """One private nginx: prefix dir, config from a template, start/stop."""

    def __init__(self, workers=1):
        if not MODULE.exists():
            pytest.fail(f"{MODULE} is missing: run t/build first")
        self.prefix = Path(tempfile.mkdtemp(prefix="mxj-nginx-"))
        os.chmod(self.prefix, 0o755)   # workers run as nobody
        (self.prefix / "conf").mkdir()
        (self.prefix / "logs").mkdir()
        self.port = free_port()
        self.workers = workers
        self.proc = None
        self.allowed_log = []          # substrings of expected bad lines

    @property
    def conf_path(self):
        return self.prefix / "conf" / "nginx.conf"

    @property
    def error_log(self):
        return self.prefix / "logs" / "error.log"

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def write_file(self, name, text, mode=0o644):
        p = self.prefix / "conf" / name
        p.write_text(text)
        os.chmod(p, mode)
        return p

    def write_conf(self, http_body, main_extra=""):
        """http_body goes inside http {}; $PORT and $PREFIX are replaced."""
        p = self.prefix
        conf = textwrap.dedent(f"""\
            load_module {MODULE};
            worker_processes {self.workers};
            pid {p}/logs/nginx.pid;
            error_log {p}/logs/error.log info;
            {main_extra}
            events {{ worker_connections 1024; }}
            http {{
                access_log {p}/logs/access.log;
                client_body_temp_path {p}/client_body_temp;
                proxy_temp_path {p}/proxy_temp;
                fastcgi_temp_path {p}/fastcgi_temp;
                uwsgi_temp_path {p}/uwsgi_temp;
                scgi_temp_path {p}/scgi_temp;
            """)
        body = textwrap.dedent(http_body).replace("$PORT", str(self.port))
        body = body.replace("$PREFIX", str(p))
        conf += textwrap.indent(body, "    ") + "}\n"
        self.conf_path.write_text(conf)

    def test_config(self):
        """nginx -t; returns (returncode, output). Its messages go to the
        output and to a log of its own, not to the error log that the
        teardown scans for alerts."""
        r = subprocess.run([NGINX, "-t", "-p", str(self.prefix), "-c",
                            str(self.conf_path), "-e",
                            str(self.prefix / "logs" / "test-config.log")],
                           capture_output=True, text=True, timeout=60,
                           env=sanitizer_env(self.prefix))
        return r.returncode, r.stdout + r.stderr

    def command(self):
        cmd = [NGINX, "-p", str(self.prefix), "-c", str(self.conf_path),
               "-e", str(self.error_log)]
        if not VALGRIND:
            return cmd + ["-g", "daemon off;"]
        vdir = self.prefix / "valgrind"
        vdir.mkdir(exist_ok=True)
        return ["valgrind", "--quiet", "--leak-check=full",
                f"--suppressions={TOP}/t/lib/valgrind.supp",
                "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
                "--num-callers=30", f"--log-file={vdir}/%p.log"] + cmd + [
                "-g", "daemon off; master_process off;"]

    def valgrind_reports(self):
        out = []
        for f in sorted((self.prefix / "valgrind").glob("*.log")):
            text = f.read_text(errors="replace")
            if text.strip():
                out.append(f"--- valgrind {f.name}\n" + text)
        return out

    def start(self):
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=sanitizer_env(self.prefix))
        try:
            wait_port(self.port, self.proc,
                      timeout=60 if (ASAN or VALGRIND) else 10)
        except RuntimeError as e:
            # a master still running (listening elsewhere) holds its
            # output open: reading it would wait forever
            if self.proc.poll() is None:
                self.proc.terminate()       # the master stops its workers
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            out = self.proc.stdout.read().decode(errors="replace")
            raise RuntimeError(f"nginx did not start: {e}\n{out}\n"
                               f"{self.log_text()}")
        return self

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, timeout=10.0):
        """SIGHUP and wait until a new generation of workers is up."""
        # one process under valgrind: it reconfigures itself
        mark = "reconfiguring" if VALGRIND else "start worker process"
        before = self.log_text().count(mark)
        self.signal(signal.SIGHUP)
        deadline = time.monotonic() + (timeout * 6 if VALGRIND else timeout)
        while time.monotonic() < deadline:
            if self.log_text().count(mark) > before:
                time.sleep(0.2)    # let the old workers hand over
                return
            time.sleep(0.05)
        raise RuntimeError("reload did not start new workers\n"
                           + self.log_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            limit = 60 if VALGRIND else 15
            try:
                if VALGRIND:
                    self._quit_single_process(limit)
                else:
                    self.proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"nginx did not quit within {limit} s; "
                                     "the end of its error log:\n"
                                     + self.log_text()[-3000:])

    def _quit_single_process(self, limit):
        """Under valgrind nginx runs with master_process off, and its
        single-process loop (ngx_single_process_cycle) looks at the quit
        flag only when epoll_wait returns: a SIGQUIT that lands between
        that check and the next epoll_wait, with no timer pending, is not
        acted on until something else happens (seen in about 1 quit in
        200 under valgrind, whose signal delivery widens the window;
        worker processes do not have it, the master also writes to their
        channel). So after 10 s the quit is repeated, with a connection
        to the listening port to wake the loop; the memory checks of the
        run are the same."""
        deadline = time.monotonic() + limit
        while True:
            try:
                self.proc.wait(timeout=min(10, max(0.1, deadline
                                                   - time.monotonic())))
                return
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise
            self.proc.send_signal(signal.SIGQUIT)
            try:
                socket.create_connection(("127.0.0.1", self.port),
                                         timeout=1).close()
            except OSError:
                pass

    def log_text(self):
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sanitizer_reports(self):
        out = []
        for f in sorted((self.prefix / "sanitizer").glob("report*")):
            out.append(f"--- {f.name}\n" + f.read_text(errors="replace"))
        return out

    def bad_log_lines(self):
        bad = self.sanitizer_reports() + self.valgrind_reports()
        for line in self.log_text().splitlines():
            if any(m in line for m in BAD_LOG_MARKERS):
                if not any(a in line for a in self.allowed_log):
                    bad.append(line)
        return bad

    def cleanup(self):
        shutil.rmtree(self.prefix, ignore_errors=True)
