"""`matrix-join-ctl forward` and `outbox` as the tests and the benchmark
run them (docs/forwarder.md), and what they read back from Redis.

    Forwarder    one forwarder process: its standard error in a file,
                 started, waited for with a bound, signalled, killed; the
                 log's `forward: delivered` / `retrying` lines parsed.
    outbox_*     the Redis side: a room's outbox entries, its dead letters,
                 its delivered record, the group's pending entries.
    run_outbox   `matrix-join-ctl outbox`, its lines parsed.

A Forwarder that is still running at stop() is killed (SIGKILL, by its
own PID): the tests call stop() in a finally or a fixture.
"""

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

TOP = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MXJ_BUILD", TOP / "build")).resolve()
CTL = BUILD / "matrix-join-ctl"
PREFIX = "mxj:"
GROUP = "forwarder"

_KV = re.compile(r"(\w+)=(\S+)")


def kv(line):
    """{name: value} of the name=value words of a log line."""
    return dict(_KV.findall(line))


def key(room_id, name, prefix=PREFIX):
    return f"{prefix}{{{room_id}}}:{name}"


class Forwarder:
    """`matrix-join-ctl forward --redis ADDRESS --upstream URL ARGS...`."""

    def __init__(self, redis_address, upstream_url, *args, workdir=None,
                 name="fwd"):
        self.cmd = [str(CTL), "forward", "--redis", redis_address,
                    "--upstream", upstream_url] + [str(a) for a in args]
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="mxj-fwd-"))
        self.err_path = self.dir / f"{name}.stderr"
        self.out_path = self.dir / f"{name}.stdout"
        self.proc = None
        self.ended_ms = None

    def start(self):
        self._err = open(self.err_path, "wb")
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout):
        """The exit code; AssertionError (and the process killed) when it
        has not exited within timeout seconds."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the forwarder did not exit within "
                                 f"{timeout} s: {self.cmd}\n{self.log()}")
        self._closed()
        return rc

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._closed()

    def stop(self):
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.proc is not None:
            self._closed()

    def _closed(self):
        if self.ended_ms is None:
            self.ended_ms = int(time.time() * 1000)
        for f in (self._err, self._out):
            if not f.closed:
                f.close()

    def log(self):
        try:
            return self.err_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def lines(self, what):
        """The `forward: <what> ...` lines of the log, as {name: value}."""
        head = f"forward: {what} "
        return [kv(line) for line in self.log().splitlines()
                if line.startswith(head)]

    def delivered(self):
        return self.lines("delivered")

    def retrying(self):
        return self.lines("retrying")

    def excerpt(self, limit=4000):
        text = self.log()
        return text if len(text) <= limit else "..." + text[-limit:]


# -- what Redis holds ---------------------------------------------------------

def _s(b):
    return b.decode() if isinstance(b, bytes) else b


def outbox_entries(r, room_id, prefix=PREFIX):
    """[(stream ID, {field: bytes})] of the room's outbox, oldest first."""
    return [(_s(i), f) for i, f in r.xrange(key(room_id, "outbox", prefix))]


def outbox_ids(r, room_id, prefix=PREFIX):
    """The event IDs in the room's outbox, oldest first."""
    return [_s(f[b"event_id"]) for _, f in outbox_entries(r, room_id,
                                                          prefix)]


def dead_entries(r, room_id, prefix=PREFIX):
    return [(_s(i), {_s(k): v for k, v in f.items()})
            for i, f in r.xrange(key(room_id, "dead", prefix))]


def delivered_record(r, room_id, prefix=PREFIX):
    """{event ID: ms} of P{R}:delivered."""
    return {_s(k): int(v)
            for k, v in r.hgetall(key(room_id, "delivered", prefix)).items()}


def pending_count(r, room_id, prefix=PREFIX):
    """Entries delivered to a consumer of the group, not acknowledged
    (0 when the group does not exist)."""
    k = key(room_id, "outbox", prefix)
    try:
        info = r.xpending(k, GROUP)
    except redis.exceptions.ResponseError as e:
        if "NOGROUP" in str(e):     # no group (yet)
            return 0
        raise
    return int(info["pending"])


def stream_id_ms(sid):
    return int(_s(sid).split("-")[0])


def run_outbox(redis_address, *args, timeout=30):
    """`matrix-join-ctl outbox --redis ADDRESS ARGS`: (exit code, rooms,
    total, output), rooms {room ID: {name: int}} from the lines
    `ROOM name=N ...`, total {name: int} from `total name=N ...` (None
    when there is no such line)."""
    p = subprocess.run([str(CTL), "outbox", "--redis", redis_address]
                       + list(args), capture_output=True, text=True,
                       timeout=timeout)
    rooms, total = {}, None
    for line in p.stdout.splitlines():
        head = line.split(" ", 1)[0]
        vals = {k: int(v) for k, v in kv(line).items()
                if re.fullmatch(r"-?\d+", v)}
        if head == "total":
            total = vals
        elif head.startswith("!"):
            rooms[head] = vals
    return p.returncode, rooms, total, p.stdout + p.stderr
