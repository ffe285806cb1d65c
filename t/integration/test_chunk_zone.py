"""matrix_send_join_cache is one shared memory zone per machine: a room's
chunks are read from Redis once, whichever workers answer; an answer
still being sent keeps its generation's memory after a new generation
took its place; a worker killed half-way through an answer does not
keep that memory for ever. Redis's own counts (INFO commandstats, the
lists' STRLEN) are the judges, not the module's."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from test_metrics import parse
from test_send_join import (EDGE, answer_of, at_once, edge,  # noqa: F401
                            new_room, raw_request)

import mxj_joiner  # noqa: E402 (t/lib, on the path test_send_join sets)
from mxj_joiner import Joiner, View, send_join_target  # noqa: E402
from mxj_nginx import free_port  # noqa: E402

pytestmark = pytest.mark.no_valgrind(reason="several worker processes")

FULL = ("state_nm", "state_m", "auth")


def start(edge, room, workers, size=None):
    edge.nginx.workers = workers
    edge.status_port = free_port()
    cache = f"matrix_send_join_cache {size};" if size else ""
    # a waiter gives up on another's read after matrix_redis_timeout plus
    # 0.5 s: far beyond any read here, even on a busy machine
    edge.load(room).start(listen="reuseport", http_extra=f"""
        {cache}
        matrix_redis_timeout 20s;
        server {{
            listen 127.0.0.1:{edge.status_port};
            location = /status {{ matrix_status; }}
            location = /metrics {{ matrix_metrics; }}
        }}
        """)
    edge.r.config_resetstat()


def zone(edge):
    """matrix_status's send_join_cache, which matrix_metrics's gauges
    must say too."""
    r = requests.get(f"http://127.0.0.1:{edge.status_port}/status",
                     timeout=10)
    assert r.status_code == 200, r.text
    z = r.json()["send_join_cache"]
    m = requests.get(f"http://127.0.0.1:{edge.status_port}/metrics",
                     timeout=10)
    assert m.status_code == 200, m.text
    g = parse(m.text, zone=True)
    c = "matrix_join_send_join_cache_"
    assert (g[c + "size_bytes"], g[(c + "bytes", "linked")],
            g[(c + "bytes", "unlinked")], g[(c + "entries", "linked")],
            g[(c + "entries", "unlinked")], g[c + "free_bytes"]) == \
        (z["size"], z["bytes"], z["unlinked_bytes"], z["entries"],
         z["unlinked"], z["free_bytes"]), (z, g)
    return z


def chunk_bytes(edge, room, lists=FULL):
    """What Redis holds for a full answer: every element's STRLEN."""
    total = 0
    for name in lists:
        key = edge.key(room, name)
        for i in range(edge.r.llen(key)):
            total += len(edge.r.lindex(key, i))
    return total


def lranges(edge):
    return edge.r.info("commandstats").get("cmdstat_lrange",
                                           {}).get("calls", 0)


def workers(edge, count=None):
    """The pids of the master's children (the workers). With count, waits
    (up to 30 s) until there are that many: the master writes its pid file
    and opens the port before it forks them, so a test that starts nginx
    can look before they exist (CI's ASan build did)."""
    end = time.monotonic() + 30
    while True:
        out = children(edge)
        if count is None or len(out) == count or time.monotonic() > end:
            return out
        time.sleep(0.05)


def children(edge):
    master = int((edge.nginx.prefix / "logs" / "nginx.pid").read_text())
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == master:
            out.append(int(pid))
    return out


def answering_pids(edge):
    """The pids that logged a send_join in the mxj access log."""
    log = edge.nginx.prefix / "logs" / "mxj.log"
    return {int(line.split()[0]) for line in log.read_text().splitlines()
            if "/send_join/" in line and line.split()[1] == "200"}


def joins(edge, room, view, n, tag):
    js = [Joiner(edge.remotes[k % 3], f"{tag}{k}") for k in range(n)]
    evs = [j.fill(room.version, edge.template(room, j)) for j in js]
    results = at_once(n, lambda k: edge.send_join(room, js[k], evs[k]))
    for k, s in enumerate(results):
        doc = answer_of(s.rep, 2)
        mxj_joiner.check_answer(room, view, evs[k], doc,
                                edge.judge_keys(room))
    for ev in evs:
        view.accept(ev)


@pytest.mark.timeout(240)
def test_one_copy_one_read_for_four_workers(edge):
    """Four workers answer send_joins of one room at once: Redis is read
    for its chunks once (three LRANGEs, the full answer's lists), and the
    zone holds one copy, as many bytes as the lists hold in Redis."""
    room = new_room("10", members=400, servers=20)
    start(edge, room, 4)
    view = View(room)
    want = chunk_bytes(edge, room)
    rounds = 0
    while len(answering_pids(edge)) < 2 and rounds < 8:
        joins(edge, room, view, 8, f"w{rounds}-")
        rounds += 1
    assert len(answering_pids(edge)) >= 2, \
        "reuseport gave every connection to one worker"
    assert lranges(edge) == len(FULL)
    z = zone(edge)
    assert (z["entries"], z["bytes"]) == (1, want), z
    assert z["size"] == 256 * 1024 * 1024


WAITS = re.compile(r"\[info\] (\d+)#\d+: .*waits for another request's "
                   r"read of generation")


@pytest.mark.timeout(240)
def test_waiting_workers_are_woken_by_the_read(edge):
    """Joins of a fresh generation from four workers at once: requests
    that find another's read of the chunks under way, in their own worker
    and in others, wait for it and are woken by its end (through the
    readers' wake sockets), never by their timer; Redis is read once."""
    room = new_room("10", members=2000, servers=20)
    start(edge, room, 4)
    view = View(room)
    pids = set()
    for rounds in range(6):
        if rounds:
            new_generation(edge, room)
        edge.r.config_resetstat()
        joins(edge, room, view, 12, f"wake{rounds}-")
        assert lranges(edge) == len(FULL)
        log = edge.nginx.log_text()
        pids = set(WAITS.findall(log))
        if len(pids) >= 2:
            break
    assert len(pids) >= 2, \
        "no two workers waited for a read in six rounds:\n" + log
    assert "in vain" not in log, log


def slow_send_join(edge, room, joiner):
    """A send_join whose client reads 4 KiB of the answer and stops: the
    worker keeps sending from the zone. Returns the socket."""
    tpl = edge.template(room, joiner)
    ev = joiner.fill(room.version, tpl)
    eid = mxj_joiner.event_id(room.version, ev)
    target = send_join_target(room.room_id, eid, 2, "", False)
    body = mxj_joiner.body_bytes(ev, "canonical")
    auth = joiner.remote.auth_header("PUT", target, EDGE,
                                     content=json.loads(body))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(20)
    s.connect(("127.0.0.1", edge.port))
    s.sendall(raw_request("PUT", target, auth, body))
    head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return s, head


def read_rest(s, head):
    data = head
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        data += b
    s.close()
    return data


def new_generation(edge, room):
    """The room loaded again: a new generation, the same lists' bytes."""
    edge.load(room)


def wait_zone(edge, pred, what):
    """The zone's figures once pred holds (a scrape of matrix_status
    after the request that changes them has been answered: bounded only
    to end a hang)."""
    end = time.monotonic() + 10
    while True:
        z = zone(edge)
        if pred(z) or time.monotonic() > end:
            return z
        time.sleep(0.05)


@pytest.mark.timeout(240)
def test_a_generation_being_sent_outlives_its_place(edge):
    """A slow client holds the answer of generation 1 while generation 2
    takes its place: the zone keeps generation 1's bytes (unlinked) until
    that answer ends, and the slow client gets every byte of it."""
    room = new_room("10", members=2000, servers=20)
    start(edge, room, 2)
    view = View(room)
    want = chunk_bytes(edge, room)
    s, head = slow_send_join(edge, room, Joiner(edge.remotes[0], "slow"))
    z = zone(edge)
    assert (z["entries"], z["bytes"], z["unlinked"]) == (1, want, 0), z

    new_generation(edge, room)
    joins(edge, room, view, 1, "after")
    z = zone(edge)
    assert (z["entries"], z["bytes"]) == (1, want), z
    assert (z["unlinked"], z["unlinked_bytes"]) == (1, want), z

    data = read_rest(s, head)
    status_line, _, rest = data.partition(b"\r\n\r\n")
    doc = json.loads(rest)
    assert len(doc["state"]) == room.expected["state_events"]
    z = wait_zone(edge, lambda z: z["unlinked"] == 0, "released")
    assert (z["entries"], z["bytes"], z["unlinked"],
            z["unlinked_bytes"]) == (1, want, 0, 0), z


@pytest.mark.timeout(240)
def test_a_killed_worker_does_not_keep_its_generation(edge):
    """Every worker is killed (-9) while one sends generation 1 to a slow
    client: the master starts new ones, generation 2 takes generation 1's
    place and generation 1's memory is freed at once (its holder is
    dead); joins go on being answered."""
    room = new_room("10", members=2000, servers=20)
    start(edge, room, 2)
    edge.nginx.allowed_log.append("exited on signal 9")
    view = View(room)
    want = chunk_bytes(edge, room)
    s, head = slow_send_join(edge, room, Joiner(edge.remotes[0], "slow"))
    before = workers(edge, 2)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    s.close()
    end = time.monotonic() + 10
    while len(set(workers(edge)) - set(before)) < 2 \
            and time.monotonic() < end:
        time.sleep(0.05)
    assert len(set(workers(edge)) - set(before)) == 2

    # the dead worker's reference is still in the zone
    z = zone(edge)
    assert (z["entries"], z["bytes"], z["unlinked"]) == (1, want, 0), z

    new_generation(edge, room)
    joins(edge, room, view, 2, "after")
    z = zone(edge)
    assert (z["entries"], z["bytes"], z["unlinked"],
            z["unlinked_bytes"]) == (1, want, 0, 0), z
    assert lranges(edge) == 2 * len(FULL)
    log = edge.nginx.log_text()
    assert len(re.findall(r"exited on signal 9", log)) == 2


@pytest.mark.timeout(240)
def test_a_room_larger_than_the_zone_is_read_each_time(edge):
    """matrix_send_join_cache smaller than the room: each answer reads the
    chunks itself (three LRANGEs each), nothing is cached, every answer is
    whole."""
    room = new_room("10", members=400, servers=20)
    start(edge, room, 1, size="64k")
    view = View(room)
    assert chunk_bytes(edge, room) > 64 * 1024
    for k in range(3):
        joins(edge, room, view, 1, f"big{k}")
    assert lranges(edge) == 3 * len(FULL)
    z = zone(edge)
    assert (z["entries"], z["bytes"], z["size"]) == (0, 0, 64 * 1024), z


def stopped_in_gdb(pid, where):
    """gdb attached to pid with a breakpoint at where and the process
    running again; at the breakpoint gdb kills it (SIGKILL)."""
    gdb = subprocess.Popen(
        ["gdb", "-q", "-nx", "-batch", "-p", str(pid),
         "-ex", f"break {where}", "-ex", "continue",
         "-ex", "signal SIGKILL"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # attached and running: a tracer, and the process not stopped by it
    end = time.monotonic() + 60
    while time.monotonic() < end:
        status = open(f"/proc/{pid}/status").read()
        tracer = re.search(r"TracerPid:\s+(\d+)", status).group(1)
        state = re.search(r"State:\s+(\S)", status).group(1)
        if tracer != "0" and state in "SR":
            return gdb
        time.sleep(0.05)
    gdb.kill()
    raise AssertionError("gdb did not attach: " + gdb.communicate()[0])


@pytest.mark.timeout(180)
def test_a_worker_killed_holding_the_zones_lock(edge):
    """The only worker is killed (-9) while it holds the zone's lock:
    stopped by gdb in the red-black tree lookup that the zone's lookup
    makes under its lock, then killed there. nginx's master releases the
    lock (its alert names the zone) and the worker it starts answers the
    next join (with the lock held for ever it would hang)."""
    room = new_room("10", members=50, servers=5)
    start(edge, room, 1)
    edge.nginx.allowed_log += [
        "exited on signal 9",
        'shared memory zone "matrix_send_join_cache" was locked by']
    view = View(room)
    (pid,) = workers(edge, 1)
    gdb = stopped_in_gdb(pid, "ngx_str_rbtree_lookup")
    joiner = Joiner(edge.remotes[0], "locked")
    ev = joiner.fill(room.version, edge.template(room, joiner))
    lost = []

    def doomed():
        try:
            edge.send_join(room, joiner, ev)
        except (ConnectionError, OSError) as e:    # the worker died
            lost.append(e)

    t = threading.Thread(target=doomed)
    t.start()
    out = gdb.communicate(timeout=60)[0]
    assert "Breakpoint 1, " in out and "ngx_str_rbtree_lookup" in out, out
    t.join(60)
    assert lost, "the join on the killed worker was answered"
    end = time.monotonic() + 10
    while not [w for w in workers(edge) if w != pid] \
            and time.monotonic() < end:
        time.sleep(0.05)
    log = edge.nginx.log_text()
    assert f'shared memory zone "matrix_send_join_cache" was locked by ' \
           f'{pid}' in log, log
    joins(edge, room, view, 1, "after-lock")
    z = zone(edge)
    assert z["entries"] == 1, z


def test_size_too_small_names_the_line(nginx):
    nginx.write_conf("""
        matrix_send_join_cache 4k;
        server { listen 127.0.0.1:$PORT; }
        """)
    rc, out = nginx.test_config()
    assert rc != 0
    assert re.search(r"matrix_send_join_cache of 4096 bytes is too small: "
                     r"0 \(off\) or at least \d+ in .*nginx.conf:\d+", out), \
        out


@pytest.mark.timeout(120)
def test_off_reads_every_time(edge):
    room = new_room("10", members=50, servers=5)
    start(edge, room, 1, size="0")
    view = View(room)
    for k in range(2):
        joins(edge, room, view, 1, f"off{k}")
    assert lranges(edge) == 2 * len(FULL)
    z = zone(edge)
    assert (z["entries"], z["bytes"], z["size"]) == (0, 0, 0), z
