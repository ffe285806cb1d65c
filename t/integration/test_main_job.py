"""The main job of the README's Quick start, end to end: `t/run --once`
builds, starts redis-server, the stand-in homeserver with the demo room,
the room's sync (or load), nginx with the module and the forwarder; a
remote server joins through the edge (directory query, make_join,
send_join) and the answer is judged by t/lib/mxj_joiner.py; the
forwarder delivers the join to the homeserver; then everything stops.

Run twice in one folder on free ports (a second run must work), and
after each: exit 0, every step answered 200 and verified, nothing of the
run left (processes, listening ports, the PID file), no alert in nginx's
error log. t/run uses build/ (not build/asan/) and its own nginx, so the
suite's ASan and valgrind runs leave it out."""

import os
import socket
import subprocess

import pytest

from mxj_nginx import ASAN, BAD_LOG_MARKERS, TOP, free_port

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.no_valgrind,
    pytest.mark.skipif(ASAN, reason="t/run runs the plain build, not ASan's"),
]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def processes_mentioning(text):
    """PIDs whose command line holds text (the run's folder or a port)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append((int(pid), cmd))
    return found


def run_once(env):
    return subprocess.run([str(TOP / "t" / "run"), "--once"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=540)


# t/run --once runs t/build, which rewrites the module and the CLI in the
# build directory every other test runs from
@pytest.mark.serial
def test_main_job_once(tmp_path):
    run_dir = tmp_path / "run"
    port, redis_port = free_port(), free_port()
    env = dict(os.environ, MXJ_RUN_DIR=str(run_dir), MXJ_PORT=str(port),
               MXJ_REDIS_PORT=str(redis_port))
    env.pop("MXJ_CACHE", None)
    for attempt in (1, 2):
        p = run_once(env)
        out = p.stdout + p.stderr
        why = f"run {attempt}, exit {p.returncode}:\n{out[-6000:]}"
        assert p.returncode == 0, why
        # every step answered and judged
        for want in ("1. directory query", "2. make_join", "3. send_join",
                     "template checked", "answer verified",
                     "4. the forwarder replays the join",
                     "forward: delivered", "join accepted",
                     "the homeserver has it",
                     "t/run --once: the join was verified"):
            assert want in out, f"{want!r} missing; {why}"
        steps = [ln for ln in out.splitlines() if ln.startswith("   -> ")]
        assert len(steps) == 3 and all(ln.startswith("   -> 200, ")
                                       for ln in steps), why
        assert "FAILED" not in out, why
        # MXJ_CACHE unset and the CLI has sync: t/run syncs
        assert "matrix-join-ctl sync: the room pulled" in out, why
        assert "matrix-join-ctl load:" not in out, why
        # nothing left
        left = processes_mentioning(str(run_dir)) + \
            processes_mentioning(f"127.0.0.1:{redis_port}")
        assert not left, f"left running after run {attempt}: {left}"
        assert not listening(port) and not listening(redis_port)
        assert not (run_dir / "pids").exists()
        log = (run_dir / "logs" / "error.log").read_text(errors="replace")
        bad = [ln for ln in log.splitlines()
               if any(m in ln for m in BAD_LOG_MARKERS)]
        assert not bad, "nginx error log:\n" + "\n".join(bad)
