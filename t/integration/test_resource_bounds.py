"""Resource bounds (issue 10, "Resource bounds"; docs/reliability.md):
hostile clients against the real nginx with the module (1 worker),
redis-server and a key server, all on 127.0.0.1, with the settings
docs/reliability.md recommends set low so that the tests are short:
client_header_timeout and client_body_timeout 2 s,
matrix_key_fetch_timeout 2 s.

    slow headers     one header byte a second: the connection is closed
                     (client_header_timeout bounds the whole header), and
                     other clients are served meanwhile;
    stalled body     a body that stops coming: closed (client_body_timeout
                     bounds the wait between two reads);
    idle connections 10,000 connections that send nothing: all accepted,
                     others served meanwhile, all closed again and the
                     worker's descriptors back to where they were;
    hanging key      a flood from an origin whose key fetch never answers:
                     every one of its requests answered 401 (bounded by
                     matrix_key_fetch_timeout), other origins served, the
                     fetches bounded (shared, rate-limited);
    a 100 MB claim   Content-Length: 100000000 with a 2-byte body: 413
                     M_TOO_LARGE without the body being waited for, and
                     the worker's memory does not grow by the claim.

Every socket has a timeout; nothing here asserts how fast anything is:
the bounds asserted are "closed at all" and "answered at all" within
generous limits (several times the configured timeouts)."""

import json
import os
import resource
import select
import socket
import sys
import threading
import time
import urllib.parse

import pytest

from mxj_nginx import TOP

sys.path.insert(0, str(TOP / "t" / "fault"))
import mxj_fault  # noqa: E402
from mxj_fault import EDGE, send  # noqa: E402
from mxj_remote import KeyServer, RemoteServer  # noqa: E402

pytestmark = [pytest.mark.timeout(180), pytest.mark.no_valgrind]

SLOW = "slow.test"
# nginx inherits this process's descriptor limit (an unprivileged
# setrlimit cannot raise it past the hard limit): 10,000 idle connections
# when it allows, fewer when it does not
_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
IDLE = max(500, min(10000, _NOFILE - 2000))


class HangingKeyServer(KeyServer):
    """A key server that never answers for SLOW (until it is stopped)."""

    def _answer_now(self, req):
        if SLOW in urllib.parse.unquote(req.target):
            self._record(req)
            self.wait(60)
            return self._json(504, {"errcode": "M_UNKNOWN",
                                    "error": "hung"})
        return super()._answer_now(req)


@pytest.fixture
def edge():
    e = mxj_fault.Edge(
        workers=1, rooms=1, forwarder=False, key_server=HangingKeyServer,
        worker_connections=min(IDLE + 1024, _NOFILE),
        http_extra="client_header_timeout 2s; client_body_timeout 2s; "
                   "matrix_key_fetch_timeout 2s; proxy_read_timeout 5s;",
        server_extra="client_max_body_size 200m;")
    e.slow = e.keys.add(RemoteServer(SLOW, seed=b"s" * 32))
    e.start()
    yield e
    e.stop()
    bad = e.nginx.bad_log_lines()
    log = e.nginx.log_text()
    e.cleanup()
    assert not bad, "nginx error log has alerts:\n" + "\n".join(bad) \
        + "\n--- log (end) ---\n" + log[-4000:]


def make_join(e, remote=None, user="u"):
    return e.make_join_req(e.rooms[0], remote or e.remotes[0], user)


def served(e):
    status, body, err = send(e.nginx.port, make_join(e), timeout=20)
    assert status == 200, (status, err, body[:300])


def closed_within(sock, seconds):
    """True when the peer closes (EOF or reset) within seconds; anything
    it sends before (an error page) is read and dropped."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        p = select.poll()
        p.register(sock, select.POLLIN)
        if p.poll(500):
            try:
                if sock.recv(65536) == b"":
                    return True
            except (ConnectionResetError, OSError):
                return True
    return False


def worker_pid(e):
    """The worker's pid. nginx's master listens before it forks the
    worker, so a connectable port does not mean the worker is there yet:
    wait for it (a guard against a hang, not a timing check)."""
    deadline = time.monotonic() + 30
    while not e.workers():
        assert time.monotonic() < deadline, "nginx started no worker"
        time.sleep(0.05)
    return e.workers()[0]


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_headers_closed_others_served(edge):
    s = socket.create_connection(("127.0.0.1", edge.nginx.port), timeout=5)
    try:
        s.sendall(b"GET /_mxj/status HTTP/1.1\r\nHost: x\r\n")
        slow = b"X-Slow: " + b"a" * 40
        closed = False
        for i in range(len(slow)):       # at most 48 s, one byte a second
            try:
                s.sendall(slow[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            served(edge)                  # another client, meanwhile
            if closed_within(s, 1.0):
                closed = True
                break
        assert closed, "a header sent a byte a second was never cut off"
        assert i < len(slow) - 1
    finally:
        s.close()


def test_stalled_body_closed_others_served(edge):
    room = edge.rooms[0]
    target = mxj_fault.send_join_target(room.room_id, "$stalled", v=2)
    s = socket.create_connection(("127.0.0.1", edge.nginx.port), timeout=5)
    try:
        s.sendall(f"PUT {target} HTTP/1.1\r\nHost: {EDGE}\r\n"
                  f"Content-Type: application/json\r\n"
                  f"Content-Length: 1000\r\n\r\n".encode())
        # a trickle first (a byte a second keeps resetting
        # client_body_timeout: see docs/reliability.md), then nothing
        for _ in range(3):
            s.sendall(b" ")
            served(edge)
            time.sleep(1)
        assert closed_within(s, 20), "a stalled body was never cut off"
        served(edge)
    finally:
        s.close()


def test_idle_connections_accepted_bounded_and_closed(edge):
    pid = worker_pid(edge)
    fds0 = fds(pid)
    rss0 = rss_kb(pid)
    socks = []
    try:
        for _ in range(IDLE):
            socks.append(socket.create_connection(
                ("127.0.0.1", edge.nginx.port), timeout=10))
        served(edge)
        # every one accepted: the worker holds one descriptor each
        # (a few may have been closed already by client_header_timeout)
        held = fds(pid)
        rss1 = rss_kb(pid)
        print(f"{IDLE} idle: worker fds {fds0} -> {held}, "
              f"RSS {rss0} -> {rss1} kB")
        assert held > fds0 + IDLE // 2, (fds0, held)
        # closed by client_header_timeout (2 s): every socket sees EOF
        deadline = time.monotonic() + 60
        open_ = list(socks)
        poller = select.poll()
        by_fd = {s.fileno(): s for s in socks}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while open_ and time.monotonic() < deadline:
            for fd, _ in poller.poll(1000):
                s = by_fd[fd]
                try:
                    data = s.recv(1024)
                except OSError:
                    data = b""
                if data == b"":
                    open_.remove(s)
                    poller.unregister(fd)
        assert not open_, f"{len(open_)} idle connections still open"
        served(edge)
        assert fds(pid) < fds0 + 50, (fds0, fds(pid))
    finally:
        for s in socks:
            s.close()


def test_hanging_key_fetch_flood_bounded(edge):
    results = []
    lock = threading.Lock()

    def slow_client(k):
        req = make_join(edge, edge.slow, f"flood{k}")
        r = send(edge.nginx.port, req, timeout=30)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=slow_client, args=(k,), daemon=True)
               for k in range(50)]
    for t in threads:
        t.start()
    for _ in range(5):          # other origins are served meanwhile
        served(edge)
    for t in threads:
        t.join(40)
    assert len(results) == 50, "some flood requests were never answered"
    for status, body, err in results:
        assert err is None and status == 401, (status, err, body[:200])
        assert json.loads(body)["errcode"] == "M_UNAUTHORIZED"
    fetches = [q for q in edge.keys.requests()
               if SLOW in urllib.parse.unquote(q.target)]
    # concurrent misses share a fetch; at most matrix_key_fetch_rate (10)
    # a minute per origin
    assert 1 <= len(fetches) <= 10, len(fetches)
    served(edge)


def test_huge_content_length_refused_at_once(edge):
    pid = worker_pid(edge)
    served(edge)
    rss0 = rss_kb(pid)
    room = edge.rooms[0]
    target = mxj_fault.send_join_target(room.room_id, "$huge", v=2)
    s = socket.create_connection(("127.0.0.1", edge.nginx.port), timeout=10)
    try:
        s.sendall(f"PUT {target} HTTP/1.1\r\nHost: {EDGE}\r\n"
                  f"Content-Type: application/json\r\n"
                  f"Content-Length: 100000000\r\n\r\n{{}}".encode())
        data = b""
        # answered without the rest of the body: a wait for it would end
        # at client_body_timeout (2 s) with a close, not with a 413
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), data[:300]
    assert json.loads(body)["errcode"] == "M_TOO_LARGE"
    served(edge)
    grown = rss_kb(pid) - rss0
    assert grown < 20 * 1024, f"the worker grew by {grown} kB"
