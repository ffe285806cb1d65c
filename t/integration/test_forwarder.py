"""`matrix-join-ctl forward` and `outbox` against their contract:
docs/forwarder.md (what is sent, order and delivery, the log, `outbox`),
docs/redis-schema.md ("Join outbox", "Joins accepted at the edge") and
docs/directives.md ("matrix_send_join", "matrix_status",
"matrix_join_fallback").

Every outbox entry here is genuine: real joining servers
(t/lib/mxj_joiner.py on t/lib/mxj_remote.py, matrix-org's signedjson)
ask the real edge (Debian's nginx with the module, redis-server, all on
127.0.0.1) for a make_join template, sign the join and PUT it to
send_join; the module answers 200 and writes the entry. The homeserver
is t/lib/mxj_upstream.py's Upstream: it records what the forwarder sends,
checks each X-Matrix signature with the joining server's key for
destination = the edge's name, and answers as each test tells it (fail,
hang, refuse connections). Order is judged by mxj_upstream.order_violations
against the outbox order read before forwarding.

Every forwarder runs with a bound (--once with a timeout, or a signal)
and is killed at teardown if still running."""

import hashlib
import itertools
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest

from mxj_nginx import CTL, TOP

sys.path.insert(0, str(TOP / "t" / "lib"))
import mxj_forwarder as fw  # noqa: E402
import mxj_http  # noqa: E402
import mxj_joiner  # noqa: E402
import mxj_room  # noqa: E402
from mxj_joiner import Joiner, send_join_target  # noqa: E402
from mxj_remote import KeyServer, Recorder, RemoteServer  # noqa: E402
from mxj_upstream import (Answer, Drop, Hang, Upstream,  # noqa: E402
                          order_violations, now_ms)

pytestmark = pytest.mark.timeout(120)

EDGE = "s0.example.org"        # our matrix_server_name, one of the room's
ORIGINS = ("remote.test", "remote2.test")
PREFIX = "mxj:"
MJ = "/_matrix/federation/v1/make_join/"
STATUS = "/_mxj/status"

_seeds = itertools.count(9100)


def remote_server(name):
    seed = hashlib.sha256(f"mxj-forwarder:{name}".encode()).digest()
    return RemoteServer(name, seed=seed)


def new_room(version="10"):
    """A small room (6 members on s0 and s1.example.org), a fresh room ID
    each time."""
    return mxj_room.Room(str(version), members=6, servers=2,
                         seed=next(_seeds))


def request(port, method, target, auth=(), body=None, timeout=20):
    """One request, the target byte for byte, each Authorization value
    its own header. Returns (status, body bytes)."""
    rep = mxj_http.send(port, method, target, EDGE, auth=auth, body=body,
                        content_type="application/json", timeout=timeout)
    return rep.status, rep.body


class Sent:
    """One accepted send_join as it went on the wire."""

    def __init__(self, room, target, body, auth, event_id, t0, t1):
        self.room = room
        self.target = target
        self.body = body
        self.auth = auth
        self.event_id = event_id
        self.t0 = t0            # ms before the request
        self.t1 = t1            # ms after the 200

    def __repr__(self):
        return f"<Sent {self.event_id}>"


class FwdEdge:
    """nginx (make_join, send_join, matrix_status, the fallback) + Redis +
    a key server for the joining servers + the homeserver (Upstream) the
    forwarder replays to."""

    def __init__(self, nginx, redis_server, tmp_path):
        self.nginx = nginx
        self.redis = redis_server
        self.r = redis_server.client()
        self.tmp = tmp_path
        self.remotes = [remote_server(n) for n in ORIGINS]
        self.keys = KeyServer(*self.remotes, avoid=[nginx.port])
        self.fallback = Recorder(body={"from": "fallback"},
                                 avoid=[nginx.port])
        self.upstream = Upstream(verify_keys=self.verify_keys(),
                                 destination=EDGE, avoid=[nginx.port])
        self.forwarders = []
        self._users = itertools.count(1)

    def verify_keys(self):
        return {rs.name: {kid: mxj_room.get_verify_key(k)
                          for kid, k in rs.keys.items()}
                for rs in self.remotes}

    def stop(self):
        for f in self.forwarders:
            f.stop()
        self.upstream.stop()
        self.keys.stop()
        self.fallback.stop()

    @property
    def port(self):
        return self.nginx.port

    def load(self, *rooms):
        for room in rooms:
            path = self.tmp / "snap.json"
            room.write(path)
            p = subprocess.run([str(CTL), "load", "--redis",
                                   self.redis.address, str(path)],
                                  capture_output=True, text=True,
                                  timeout=120)
            assert p.returncode == 0, p.stderr
        return self

    def start(self, locations=""):
        """nginx on its port; locations: more of them in its server."""
        key = subprocess.run([str(CTL), "keygen", EDGE],
                                capture_output=True, text=True, timeout=30,
                                check=True).stdout
        self.nginx.write_file("signing.key", key, mode=0o600)
        self.nginx.write_conf(f"""
            matrix_server_name {EDGE};
            matrix_signing_key signing.key;
            matrix_redis {self.redis.address};
            matrix_key_fetch /_mxj_keys/;
            matrix_join_fallback @hs;
            server {{
                listen 127.0.0.1:$PORT;
                location {MJ} {{
                    matrix_make_join;
                }}
                location ~ ^/_matrix/federation/v[12]/send_join/ {{
                    matrix_send_join;
                }}
                location = {STATUS} {{
                    matrix_status;
                }}
                location /_mxj_keys/ {{
                    internal;
                    proxy_pass http://127.0.0.1:{self.keys.port}/_matrix/key/v2/query/;
                    subrequest_output_buffer_size 64k;
                }}
                location @hs {{
                    proxy_pass http://127.0.0.1:{self.fallback.port};
                }}
                {locations}
            }}
            """)
        self.nginx.start()
        return self

    # -- joins through the edge -----------------------------------------------

    def joiner(self, k=None):
        """A new remote user (alternating between the joining servers)."""
        n = next(self._users) if k is None else k
        return Joiner(self.remotes[n % len(self.remotes)], f"j{n}")

    def make_join(self, room, user, remote):
        target = MJ + urllib.parse.quote(room.room_id, safe="") + "/" \
            + urllib.parse.quote(user, safe="") + "?ver=" + room.version
        return request(self.port, "GET", target,
                       auth=[remote.auth_header("GET", target, EDGE)])

    def join(self, room, joiner=None, v=2, query="", style="canonical",
             lower=False):
        """make_join, fill in, sign, send_join: the edge must answer 200
        (an entry in the room's outbox). Returns the Sent."""
        joiner = joiner or self.joiner()
        status, body = self.make_join(room, joiner.user, joiner.remote)
        assert status == 200, (status, body[:500])
        ev = joiner.fill(room.version, json.loads(body)["event"])
        eid = mxj_joiner.event_id(room.version, ev)
        target = send_join_target(room.room_id, eid, v, query, lower)
        data = mxj_joiner.body_bytes(ev, style)
        auth = joiner.auth("PUT", target, data, EDGE)
        t0 = now_ms()
        status, answer = request(self.port, "PUT", target, auth=[auth],
                                 body=data)
        assert status == 200, (status, answer[:500])
        return Sent(room, target, data, auth, eid, t0, now_ms())

    def joins(self, room, n):
        """n joins one after the other: each one's template builds on the
        previous join (a chain the homeserver must receive in order)."""
        return [self.join(room) for _ in range(n)]

    # -- the forwarder --------------------------------------------------------

    @property
    def upstream_url(self):
        return f"http://127.0.0.1:{self.upstream.port}"

    def forwarder(self, *args, name=None):
        f = fw.Forwarder(self.redis.address, self.upstream_url, *args,
                         workdir=self.tmp,
                         name=name or f"fwd{len(self.forwarders)}")
        self.forwarders.append(f)
        return f

    def forward_once(self, *args, timeout=60):
        """forward --once ARGS to the end; returns (exit code, Forwarder)."""
        f = self.forwarder("--once", *args)
        f.start()
        return f.wait(timeout), f

    # -- what Redis holds -----------------------------------------------------

    def order(self, *rooms):
        """{room ID: event IDs in outbox order}, read before forwarding."""
        return {room.room_id: fw.outbox_ids(self.r, room.room_id)
                for room in rooms}

    def status(self):
        status, body = request(self.port, "GET", STATUS)
        assert status == 200, (status, body[:500])
        return json.loads(body)


@pytest.fixture
def fedge(nginx, redis_server, tmp_path):
    e = FwdEdge(nginx, redis_server, tmp_path)
    yield e
    e.stop()


@pytest.fixture
def aof_fedge(nginx, tmp_path):
    """An edge whose Redis has appendonly yes + appendfsync always."""
    from mxj_redis import RedisServer
    red = RedisServer(aof=True).start()
    e = FwdEdge(nginx, red, tmp_path)
    yield e
    e.stop()
    red.cleanup()


def crash_redis(edge, down=0.0):
    """kill -9 of the edge's redis-server, a restart on the same folder
    after `down` seconds (RedisServer waits for the AOF to be loaded),
    and a new client."""
    edge.redis.kill9()
    time.sleep(down)
    edge.redis.restart()
    edge.r = edge.redis.client()


def why(fs, *more):
    """The failure context: the forwarders' logs (fs: one Forwarder or a
    list) and anything else given."""
    text = ""
    for f in fs if isinstance(fs, (list, tuple)) else [fs]:
        text += f"\n--- log of {f.err_path.name} ---\n" + f.excerpt()
    for m in more:
        text += "\n" + str(m)
    return text


def assert_in_order(edge, order, f, skip=()):
    bad = order_violations(edge.upstream.requests(), order, skip)
    assert not bad, "\n".join(bad) + why(f, edge.upstream.requests())


def assert_all_delivered(edge, order, f, skip=()):
    """Every entry answered 2xx at least once, the outboxes empty (and
    nothing left pending in the group), the delivered record holding
    every event ID."""
    ok = set(edge.upstream.delivered())
    for room, ids in order.items():
        missing = [e for e in ids if e not in ok and e not in skip]
        assert not missing, f"room {room}: never answered 2xx: " \
                            f"{missing}" + why(f)
        left = fw.outbox_ids(edge.r, room)
        assert left == [], f"room {room}: still in the outbox: {left}" \
            + why(f)
        assert fw.pending_count(edge.r, room) == 0, why(f)
        rec = fw.delivered_record(edge.r, room)
        want = {e for e in ids if e not in skip}
        assert want <= set(rec), f"room {room}: {room}:delivered lacks " \
            f"{sorted(want - set(rec))}" + why(f)


# -- what is sent -------------------------------------------------------------

@pytest.mark.parametrize("version", ["1", "10"])
def test_replay_is_byte_identical(fedge, version):
    """Two chained joins, one with a pretty-printed body (valid JSON, not
    canonical) on the v2 path with lower-case escapes and a query, one
    canonical on the v1 path: the homeserver receives each as PUT to the
    raw URI with its query, the one Authorization header as sent, the
    exact body bytes and Content-Type application/json, in outbox order;
    the X-Matrix signature verifies with the joining server's key for
    destination = the edge's name. The group `forwarder` exists, the
    outbox is empty afterwards, P{R}:delivered has both IDs with the time
    of delivery."""
    room = new_room(version)
    fedge.load(room).start()
    a = fedge.join(room, v=2, query="?omit_members=false", style="pretty",
                   lower=True)
    b = fedge.join(room, v=1)
    assert "%3a" in a.target            # lower-case escapes, kept raw
    order = fedge.order(room)
    assert order[room.room_id] == [a.event_id, b.event_id]
    t0 = now_ms()
    rc, f = fedge.forward_once()
    assert rc == 0, why(f)
    got = fedge.upstream.requests()
    assert [s.event_id for s in got] == [a.event_id, b.event_id], \
        why(f, got)
    for sent, s in zip((a, b), got):
        assert s.method == "PUT"
        assert s.target == sent.target, (s.target, sent.target)
        assert s.header("Authorization") == [sent.auth], s.headers
        assert s.body == sent.body, "the body is not byte-identical:\n" \
            f"{s.body[:300]!r}\n{sent.body[:300]!r}"
        assert s.header("Content-Type") == ["application/json"], s.headers
        # nothing else of the original request: only what the HTTP
        # client adds (docs/forwarder.md "What is sent")
        names = {k.lower() for k, _ in s.headers}
        assert names <= {"host", "content-length", "user-agent",
                         "authorization", "content-type"}, s.headers
        assert s.header("Host") == [f"127.0.0.1:{fedge.upstream.port}"], \
            s.headers
        assert s.header("User-Agent")[0].startswith("matrix-join-ctl/")
        assert s.xmatrix == "ok", s.xmatrix
        # and with the judge's own check, on what came
        assert mxj_joiner.xmatrix_verifies(
            s.header("Authorization")[0], "PUT", s.target, s.body, EDGE,
            {r.name: mxj_room.get_verify_key(r.signing_key())
             for r in fedge.remotes}) in ORIGINS
        assert s.status == 200
    assert fw.outbox_ids(fedge.r, room.room_id) == []
    groups = fedge.r.xinfo_groups(fw.key(room.room_id, "outbox"))
    assert [g["name"].decode() if isinstance(g["name"], bytes)
            else g["name"] for g in groups] == ["forwarder"], groups
    # the consumer left the group at exit: nothing was pending at it
    assert fedge.r.xinfo_consumers(fw.key(room.room_id, "outbox"),
                                   fw.GROUP) == [], why(f)
    rec = fw.delivered_record(fedge.r, room.room_id)
    assert set(rec) == {a.event_id, b.event_id}, rec
    for sent, s in zip((a, b), got):
        assert s.answered_ms - 50 <= rec[sent.event_id] <= now_ms(), \
            (rec, s.answered_ms)
        assert rec[sent.event_id] >= t0


def test_every_authorization_header_replayed(fedge):
    """nginx itself refuses a second Authorization header, so a real
    entry holds one; the outbox format keeps every one (joined by \\n).
    A real entry is re-added with a second X-Matrix line (the same
    request signed by the joining server's second key): both reach the
    homeserver as two Authorization headers, in order, each verifying."""
    room = new_room("10")
    fedge.load(room).start()
    s = fedge.join(room)
    ((sid, fields),) = fw.outbox_entries(fedge.r, room.room_id)
    rs = next(r for r in fedge.remotes if r.name == s.auth.split(
        'origin="', 1)[1].split('"', 1)[0])
    kid2 = rs.add_key("k2")
    fedge.upstream.verify_keys = fedge.verify_keys()
    auth2 = rs.auth_header("PUT", s.target, EDGE,
                           content=json.loads(s.body), key_id=kid2)
    okey = fw.key(room.room_id, "outbox")
    fields = dict(fields)
    fields[b"authorization"] = (s.auth + "\n" + auth2).encode()
    fedge.r.xdel(okey, sid)
    fedge.r.xadd(okey, fields)
    rc, f = fedge.forward_once()
    assert rc == 0, why(f)
    (got,) = fedge.upstream.requests()
    assert got.header("Authorization") == [s.auth, auth2], got.headers
    assert got.xmatrix == "ok", got.xmatrix
    assert got.body == s.body and got.target == s.target


# -- order and delivery -------------------------------------------------------

def test_upstream_down_then_up(fedge):
    """The homeserver refuses connections for a while (3 rooms, 4 chained
    joins each): the forwarder retries (each wait logged), nothing is
    lost; once it listens again every join is delivered in order per
    room, --once exits 0, the outboxes are empty and P{R}:delivered has
    every event ID."""
    rooms = [new_room("10") for _ in range(3)]
    fedge.load(*rooms).start()
    for room in rooms:
        fedge.joins(room, 4)
    order = fedge.order(*rooms)
    fedge.upstream.down()
    f = fedge.forwarder("--once")
    f.start()
    time.sleep(2.5)
    assert f.running(), why(f)
    assert fedge.upstream.requests() == []
    assert f.retrying(), "no retry logged while the upstream was " \
                         "down" + why(f)
    for room in rooms:
        assert fw.outbox_ids(fedge.r, room.room_id) == \
            order[room.room_id], why(f)
    fedge.upstream.up()
    rc = f.wait(60)
    assert rc == 0, why(f)
    assert_in_order(fedge, order, f)
    assert_all_delivered(fedge, order, f)


def test_kill9_mid_delivery_redelivered(fedge):
    """The homeserver hangs on the first request; the forwarder is killed
    (-9) while it waits: the entry stays pending in the group. A new
    forwarder with a small --claim-idle takes it over once idle and
    delivers it again, then the rest, in order: at-least-once, none
    lost."""
    room = new_room("10")
    fedge.load(room).start()
    sent = fedge.joins(room, 3)
    order = fedge.order(room)
    first = sent[0].event_id
    fedge.upstream.on(Hang(), event_id=first, times=1)
    f1 = fedge.forwarder("--claim-idle", "1500", name="first")
    f1.start()
    fedge.upstream.wait_requests(1, 20, first)
    f1.kill9()
    pend = fedge.r.xpending_range(fw.key(room.room_id, "outbox"),
                                  fw.GROUP, "-", "+", 10)
    # pending at the default consumer name, <hostname>-<pid>
    assert [p["consumer"].decode() for p in pend] == \
        [f"{socket.gethostname()}-{f1.pid}"], pend
    assert fw.outbox_ids(fedge.r, room.room_id) == order[room.room_id]
    rc, f2 = fedge.forward_once("--claim-idle", "1000")
    assert rc == 0, why(f2)
    reqs = fedge.upstream.requests(first)
    assert len(reqs) >= 2 and reqs[-1].ok, why(f2, reqs)
    for e in order[room.room_id]:
        assert fedge.upstream.delivered().count(e) >= 1, why(f2)
    assert_in_order(fedge, order, f2)
    assert_all_delivered(fedge, order, f2)


@pytest.mark.parametrize("failure", ["hang", "drop"])
def test_timeout_and_dropped_connection_retried(fedge, failure):
    """The first attempt never gets an answer (the homeserver hangs past
    --timeout, or closes the connection): the attempt fails, the entry
    is retried and delivered, the next join only after it."""
    room = new_room("10")
    fedge.load(room).start()
    sent = fedge.joins(room, 2)
    order = fedge.order(room)
    action = Hang(limit=30) if failure == "hang" else Drop()
    fedge.upstream.on(action, event_id=sent[0].event_id, times=1)
    rc, f = fedge.forward_once("--timeout", "1000", timeout=60)
    assert rc == 0, why(f)
    a, b = fedge.upstream.requests(sent[0].event_id)[:2]
    if failure == "hang":
        # the second attempt: after the 1 s timeout and a backoff
        assert b.arrived_mono - a.arrived_mono >= 1.0, (a, b)
    assert_in_order(fedge, order, f)
    assert_all_delivered(fedge, order, f)


def test_chained_joins_first_attempt_fails(fedge):
    """Three chained joins; the homeserver answers the first attempt of
    the first one 500: it is retried after the backoff (>= 0.4 s: 0.5 s
    less the jitter, the wait logged with status=500), and the second
    and third are sent only after it was answered 200: requests e1 (500),
    e1, e2, e3."""
    room = new_room("10")
    fedge.load(room).start()
    sent = fedge.joins(room, 3)
    order = fedge.order(room)
    e1 = sent[0].event_id
    fedge.upstream.on(Answer(500, {"errcode": "M_UNKNOWN",
                                   "error": "busy"}), event_id=e1, times=1)
    rc, f = fedge.forward_once()
    assert rc == 0, why(f)
    got = fedge.upstream.requests()
    assert [(s.event_id, s.status) for s in got] == \
        [(e1, 500), (e1, 200), (sent[1].event_id, 200),
         (sent[2].event_id, 200)], why(f, got)
    assert got[1].arrived_mono - got[0].answered_mono >= 0.4 - 0.02, got
    retry = [x for x in f.retrying() if x.get("event") == e1]
    assert len(retry) == 1 and retry[0].get("status") == "500" and \
        retry[0].get("attempt") == "1", why(f)
    assert_in_order(fedge, order, f)
    assert_all_delivered(fedge, order, f)


def test_refused_join_dead_letter(fedge):
    """The homeserver refuses a room's first join (403) every time:
    after --max-attempts 3 attempts it is a dead letter in P{R}:dead
    (the entry's fields, status, the response body, attempts,
    failed_ts), the room's meta says stale = 1, so the next make_join of
    the room goes to the fallback; the room's later joins are still
    delivered, in order, after it; --once exits 1; a line of the log
    names the dead letter."""
    room = new_room("10")
    other = new_room("10")
    fedge.load(room, other).start()
    sent = fedge.joins(room, 3)
    fedge.joins(other, 2)
    order = fedge.order(room, other)
    bad = sent[0].event_id
    refusal = {"errcode": "M_FORBIDDEN", "error": "refused on purpose"}
    fedge.upstream.on(Answer(403, refusal), event_id=bad)
    entry = dict(fw.outbox_entries(fedge.r, room.room_id)[0][1])
    t0 = now_ms()
    rc, f = fedge.forward_once("--max-attempts", "3", timeout=90)
    assert rc == 1, why(f)
    tries = fedge.upstream.requests(bad)
    assert len(tries) == 3 and all(s.status == 403 for s in tries), \
        why(f, tries)
    dead = fw.dead_entries(fedge.r, room.room_id)
    assert len(dead) == 1, dead
    d = dead[0][1]
    for k, v in entry.items():
        assert d.get(k.decode()) == v, (k, d.get(k.decode()), v)
    assert d["status"] == b"403", d
    assert json.loads(d["response"]) == refusal, d["response"]
    assert d["attempts"] == b"3", d
    assert t0 <= int(d["failed_ts"]) <= now_ms(), d
    assert fw.dead_entries(fedge.r, other.room_id) == []
    meta = fedge.r.hget(fw.key(room.room_id, "meta"), "stale")
    assert meta == b"1", meta
    assert fedge.r.hget(fw.key(other.room_id, "meta"), "stale") in \
        (None, b"0")
    (line,) = [x for x in f.lines("dead letter")
               if x.get("event") == bad] or [None]
    assert line and line.get("status") == "403" and \
        line.get("attempts") == "3" and line.get("room") == room.room_id, \
        why(f)
    assert_in_order(fedge, order, f, skip={bad})
    assert_all_delivered(fedge, order, f, skip={bad})
    assert bad not in fw.delivered_record(fedge.r, room.room_id)

    # the room is now the homeserver's: make_join goes to the fallback
    n = len(fedge.fallback.requests)
    j = fedge.joiner()
    status, body = fedge.make_join(room, j.user, j.remote)
    assert status == 200 and json.loads(body) == {"from": "fallback"}, \
        (status, body[:300])
    (req,) = fedge.fallback.requests[n:]
    assert req.method == "GET" and req.target.startswith(MJ), req
    # the other room is still answered by the edge
    status, body = fedge.make_join(other, j.user, j.remote)
    assert status == 200 and "event" in json.loads(body)
    assert len(fedge.fallback.requests) == n + 1


@pytest.mark.timeout(150)
def test_refused_join_retried_while_previous_is_recent(fedge):
    """A 4xx right after the room's previous join was delivered is
    retried (the homeserver may still be processing it) until that
    delivery is 30 s old; only then does --max-attempts 2 make it a dead
    letter; the join after it is delivered afterwards."""
    room = new_room("10")
    fedge.load(room).start()
    e1, e2, e3 = (s.event_id for s in fedge.joins(room, 3))
    order = fedge.order(room)
    fedge.upstream.on(Answer(403, {"errcode": "M_FORBIDDEN",
                                   "error": "not yet"}), event_id=e2)
    rc, f = fedge.forward_once("--max-attempts", "2", timeout=120)
    assert rc == 1, why(f)
    (ok1,) = [s for s in fedge.upstream.requests(e1) if s.ok]
    tries = fedge.upstream.requests(e2)
    assert all(s.status == 403 for s in tries)
    assert len(tries) > 2, f"only {len(tries)} attempts: the 30 s after " \
        f"the previous delivery were not waited" + why(f, tries)
    assert tries[-1].answered_mono - ok1.answered_mono >= 30 - 0.1, \
        why(f, tries)
    # not given up before the 30 s: every attempt but the last was < 30 s
    assert tries[-2].answered_mono - ok1.answered_mono < 30, why(f, tries)
    (dead,) = fw.dead_entries(fedge.r, room.room_id)
    assert dead[1]["event_id"] == e2.encode()
    assert int(dead[1]["failed_ts"]) - \
        fw.delivered_record(fedge.r, room.room_id)[e1] >= 30000 - 100
    assert_in_order(fedge, order, f, skip={e2})
    assert_all_delivered(fedge, order, f, skip={e2})
    assert e3 in fedge.upstream.delivered()


def test_429_retry_after_honoured(fedge):
    """A 429 with retry_after_ms 2500: the next attempt comes no sooner
    than 2.5 s after it (the backoff alone would be 0.5 s)."""
    room = new_room("10")
    fedge.load(room).start()
    (s,) = fedge.joins(room, 1)
    fedge.upstream.on(Answer(429, {"errcode": "M_LIMIT_EXCEEDED",
                                   "error": "slow down",
                                   "retry_after_ms": 2500}),
                      event_id=s.event_id, times=1)
    rc, f = fedge.forward_once(timeout=60)
    assert rc == 0, why(f)
    a, b = fedge.upstream.requests(s.event_id)
    assert a.status == 429 and b.status == 200
    gap = b.arrived_mono - a.answered_mono
    assert gap >= 2.5 - 0.01, f"retried {gap:.3f} s after a 429 with " \
                              f"retry_after_ms 2500" + why(f)
    retry = [x for x in f.retrying() if x.get("event") == s.event_id]
    assert retry and retry[0].get("status") == "429", why(f)


def test_two_forwarders_one_redis(fedge):
    """Two forwarders (--concurrency 4 each) on one Redis, 4 rooms of 5
    chained joins, a homeserver that takes 20 ms an answer and fails one
    request in five with 503: per room never two requests at once and
    never out of order; every join delivered at least once; both exit 0;
    the delivered lines of both logs add up to the 2xx answers."""
    rooms = [new_room("10") for _ in range(4)]
    fedge.load(*rooms).start()
    for room in rooms:
        fedge.joins(room, 5)
    order = fedge.order(*rooms)
    fedge.upstream.default = Answer(200, {}, delay=0.02)
    k = 0
    for ids in order.values():
        for e in ids:
            k += 1
            if k % 5 == 0:
                fedge.upstream.on(Answer(503, {"errcode": "M_UNKNOWN"}),
                                  event_id=e, times=1)
    a = fedge.forwarder("--once", "--claim-idle", "5000", name="a")
    b = fedge.forwarder("--once", "--claim-idle", "5000", name="b")
    a.start()
    b.start()
    ra, rb = a.wait(90), b.wait(90)
    assert (ra, rb) == (0, 0), why([a, b])
    assert fedge.upstream.max_room_in_flight == 1, \
        "two requests of one room at once" + why([a, b])
    assert_in_order(fedge, order, [a, b])
    assert_all_delivered(fedge, order, [a, b])
    oks = len(fedge.upstream.delivered())
    logged = len(a.delivered()) + len(b.delivered())
    assert logged == oks, (logged, oks, why([a, b]))
    dup = [e for e in set(fedge.upstream.delivered())
           if fedge.upstream.delivered().count(e) > 1]
    assert not dup, f"delivered twice without a crash: {dup}"


def test_concurrency_rooms_in_parallel(fedge):
    """--concurrency 4: four rooms delivered at once (the homeserver sees
    up to four requests in flight, never two of one room); --concurrency
    1: one at a time."""
    rooms = [new_room("10") for _ in range(4)]
    fedge.load(*rooms).start()
    for room in rooms:
        fedge.joins(room, 2)
    order = fedge.order(*rooms)
    fedge.upstream.default = Answer(200, {}, delay=0.3)
    rc, f = fedge.forward_once("--concurrency", "4")
    assert rc == 0, why(f)
    assert fedge.upstream.max_room_in_flight == 1, why(f)
    assert fedge.upstream.max_in_flight >= 3, \
        f"at most {fedge.upstream.max_in_flight} in flight" + why(f)
    assert fedge.upstream.max_in_flight <= 4
    assert_in_order(fedge, order, f)
    assert_all_delivered(fedge, order, f)

    for room in rooms:
        fedge.joins(room, 1)
    order = fedge.order(*rooms)
    fedge.upstream.max_in_flight = 0
    rc, f = fedge.forward_once("--concurrency", "1")
    assert rc == 0, why(f)
    assert fedge.upstream.max_in_flight == 1, why(f)
    assert_all_delivered(fedge, order, f)


def test_redis_restarted_with_aof_before_forward(aof_fedge):
    """Redis (appendonly yes, appendfsync always) killed -9 and restarted
    between the 200s and the forwarder: every join the edge answered 200
    is delivered afterwards, in order."""
    edge = aof_fedge
    rooms = [new_room("10") for _ in range(2)]
    edge.load(*rooms).start()
    sent = [s for room in rooms for s in edge.joins(room, 3)]
    order = {room.room_id: [s.event_id for s in sent if s.room is room]
             for room in rooms}
    crash_redis(edge)
    assert edge.order(*rooms) == order
    rc, f = edge.forward_once()
    assert rc == 0, why(f)
    assert_in_order(edge, order, f)
    assert_all_delivered(edge, order, f)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_delivery_finish(fedge, sig):
    """SIGTERM (or SIGINT) while a delivery is in flight (the homeserver
    answers after 2 s): the delivery completes (answered 200, the entry
    acknowledged and recorded), then the process exits 0."""
    room = new_room("10")
    fedge.load(room).start()
    sent = fedge.joins(room, 2)
    e1 = sent[0].event_id
    sid1 = fw.outbox_entries(fedge.r, room.room_id)[0][0]
    fedge.upstream.on(Answer(200, {}, delay=2.0), event_id=e1, times=1)
    f = fedge.forwarder()
    f.start()
    fedge.upstream.wait_requests(1, 20, e1)
    f.signal(sig)
    rc = f.wait(20)
    assert rc == 0, why(f)
    (s1,) = fedge.upstream.requests(e1)
    assert s1.ok
    assert f.ended_ms >= s1.answered_ms - 5, (f.ended_ms, s1.answered_ms)
    assert e1 not in fw.outbox_ids(fedge.r, room.room_id), why(f)
    assert e1 in fw.delivered_record(fedge.r, room.room_id), why(f)
    pend = fedge.r.xpending_range(fw.key(room.room_id, "outbox"),
                                  fw.GROUP, "-", "+", 10)
    assert sid1 not in {p["message_id"].decode() for p in pend}, pend
    assert [x["event"] for x in f.delivered()][:1] == [e1], why(f)


def test_signal_during_backoff_then_same_consumer_resumes(fedge):
    """SIGTERM while an entry waits for its next attempt (a 429 asking
    for 5 s): the forwarder exits 0 at once, the entry stays pending at
    its consumer (--consumer fixed), which stays in the group; a new
    forwarder with the same name takes it again at once (no
    --claim-idle wait: the default 60 s) and delivers it, then the next
    join; at its exit no consumer is left."""
    room = new_room("10")
    fedge.load(room).start()
    sent = fedge.joins(room, 2)
    order = fedge.order(room)
    e1 = sent[0].event_id
    fedge.upstream.on(Answer(429, {"errcode": "M_LIMIT_EXCEEDED",
                                   "retry_after_ms": 5000}),
                      event_id=e1, times=1)
    f = fedge.forwarder("--consumer", "fixed", name="first")
    f.start()
    fedge.upstream.wait_for(lambda u: any(x.status == 429
                                          for x in u.seen), 20, "the 429")
    time.sleep(0.3)
    t0 = time.monotonic()
    f.signal(signal.SIGTERM)
    assert f.wait(10) == 0, why(f)
    assert time.monotonic() - t0 < 3, "the backoff wait was not cut " \
                                      "short by SIGTERM" + why(f)
    okey = fw.key(room.room_id, "outbox")
    pend = fedge.r.xpending_range(okey, fw.GROUP, "-", "+", 10)
    assert [p["consumer"] for p in pend] == [b"fixed"], pend
    assert fedge.upstream.delivered() == []
    t0 = time.monotonic()
    rc, f2 = fedge.forward_once("--consumer", "fixed", timeout=30)
    assert rc == 0, why(f2)
    assert time.monotonic() - t0 < 10, "the same consumer waited to " \
                                       "take its own entry" + why(f2)
    assert fedge.upstream.delivered() == [e1, sent[1].event_id]
    assert_in_order(fedge, order, [f, f2])
    assert_all_delivered(fedge, order, f2)
    assert fedge.r.xinfo_consumers(okey, fw.GROUP) == [], why(f2)


@pytest.mark.parametrize("broken", ["authorization", "uri", "no-body"])
def test_malformed_entry_dead_at_once(fedge, broken):
    """An entry that cannot be sent as it is (a control character in
    an authorization line, which would inject a header; a uri that is
    not a path; no body) is a dead letter at once (status 0, attempts
    0, the reason as response), nothing of it reaches the homeserver,
    the room's other joins are delivered, --once exits 1."""
    room = new_room("10")
    fedge.load(room).start()
    a, b = fedge.joins(room, 2)
    okey = fw.key(room.room_id, "outbox")
    sid, fields = fw.outbox_entries(fedge.r, room.room_id)[0]
    fields = dict(fields)
    if broken == "authorization":
        fields[b"authorization"] += b"\r\nX-Injected: 1"
    elif broken == "uri":
        fields[b"uri"] = b"http://127.0.0.1:1" + fields[b"uri"]
    else:
        del fields[b"body"]
    fedge.r.xdel(okey, sid)
    fedge.r.xadd(okey, fields)
    rc, f = fedge.forward_once()
    assert rc == 1, why(f)
    assert fedge.upstream.requests(a.event_id) == [], why(f)
    assert fedge.upstream.delivered() == [b.event_id], why(f)
    (dead,) = fw.dead_entries(fedge.r, room.room_id)
    d = dead[1]
    assert d["event_id"] == a.event_id.encode()
    assert (d["status"], d["attempts"]) == (b"0", b"0"), d
    assert d["response"], d
    assert fw.outbox_ids(fedge.r, room.room_id) == []
    assert fedge.r.hget(fw.key(room.room_id, "meta"), "stale") == b"1"


def test_running_forwarder_picks_up_new_joins(fedge):
    """A forwarder started before any join (no --once): a room whose
    outbox appears later is found (the room lists are read every
    second) and each join reaches the homeserver with sub-second lag
    once the room is known."""
    room = new_room("10")
    fedge.load(room).start()
    f = fedge.forwarder("--concurrency", "2")
    f.start()
    time.sleep(1.0)
    first = fedge.join(room)
    fedge.upstream.wait_delivered([first.event_id], 10)
    lags = []
    for _ in range(5):
        s = fedge.join(room)
        fedge.upstream.wait_delivered([s.event_id], 10)
        (got,) = [x for x in fedge.upstream.requests(s.event_id) if x.ok]
        lags.append(got.arrived_ms - s.t1)
        time.sleep(0.2)
    lags.sort()
    assert lags[len(lags) // 2] < 1000 and lags[-1] < 2000, \
        f"lag from the 200 to the homeserver: {lags} ms" + why(f)
    f.signal(signal.SIGTERM)
    assert f.wait(20) == 0, why(f)


def test_room_only_in_the_rooms_index(fedge):
    """The index P outbox:rooms is not the only record (the module adds
    to it with a separate command): a room missing from it is still
    forwarded, found through P rooms."""
    room, quiet = new_room("10"), new_room("10")
    fedge.load(room, quiet).start()
    sent = fedge.joins(room, 2)
    fedge.r.srem(PREFIX + "outbox:rooms", room.room_id)
    order = fedge.order(room)
    rc, f = fedge.forward_once()
    assert rc == 0, why(f)
    assert fedge.upstream.delivered() == [s.event_id for s in sent]
    assert_all_delivered(fedge, order, f)
    # every listed room has its outbox stream and group, joins or not
    groups = fedge.r.xinfo_groups(fw.key(quiet.room_id, "outbox"))
    assert [g["name"] for g in groups] == [b"forwarder"], groups


def test_busy_room_gives_others_a_turn(fedge):
    """--concurrency 1, one room with 70 joins and one with a single
    join: the busy room gives its worker up after 64 deliveries in a
    row, so the other room's join is not left behind all 70."""
    busy, other = new_room("10"), new_room("10")
    fedge.load(busy, other).start()
    fedge.joins(busy, 70)
    (lone,) = fedge.joins(other, 1)
    order = fedge.order(busy, other)
    rc, f = fedge.forward_once("--concurrency", "1")
    assert rc == 0, why(f)
    got = fedge.upstream.delivered()
    assert got.index(lone.event_id) <= 64, \
        f"the lone join came after {got.index(lone.event_id)} of the busy " \
        f"room's" + why(f)
    assert_in_order(fedge, order, f)
    assert_all_delivered(fedge, order, f)


def wait_answering(edge, room, timeout=20):
    """Until the edge answers make_join from Redis again (not the
    fallback) after a Redis restart."""
    deadline = time.monotonic() + timeout
    while True:
        j = edge.joiner()
        status, body = edge.make_join(room, j.user, j.remote)
        if status == 200 and "event" in json.loads(body):
            return
        assert time.monotonic() < deadline, (status, body[:300])
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_redis_restart_under_a_running_forwarder(aof_fedge):
    """Redis (AOF, fsync always) killed -9 and restarted while a
    forwarder runs: the forwarder waits for it (logged), connects again,
    and delivers the joins accepted before the crash and after the
    restart, in order; SIGTERM then exits 0."""
    edge = aof_fedge
    room = new_room("10")
    edge.load(room).start()
    f = edge.forwarder("--concurrency", "2")
    f.start()
    before = edge.joins(room, 2)
    edge.upstream.wait_delivered([s.event_id for s in before], 15)
    crash_redis(edge, down=1.5)
    wait_answering(edge, room)
    after = edge.joins(room, 3)
    edge.upstream.wait_delivered([s.event_id for s in after], 30)
    order = {room.room_id: [s.event_id for s in before + after]}
    assert "unavailable" in f.log(), why(f)
    f.signal(signal.SIGTERM)
    assert f.wait(20) == 0, why(f)
    assert_in_order(edge, order, f)
    assert_all_delivered(edge, order, f)


def test_upstream_url_with_a_path(fedge):
    """--upstream with a path: the entry's raw URI goes after the path
    (its trailing / left out), byte for byte; a URL with a query is
    refused before anything is sent."""
    room = new_room("10")
    fedge.load(room).start()
    (s,) = fedge.joins(room, 1)
    f = fw.Forwarder(fedge.redis.address, fedge.upstream_url + "/?a=1",
                     "--once", workdir=fedge.tmp, name="query")
    fedge.forwarders.append(f)
    f.start()
    assert f.wait(20) != 0, why(f)
    assert fedge.upstream.requests() == []
    # the signature covers the URI alone: a homeserver behind a path
    # prefix strips it (a proxy's job); the stand-in does not check here
    fedge.upstream.verify_keys = None
    f = fw.Forwarder(fedge.redis.address, fedge.upstream_url + "/hs/",
                     "--once", workdir=fedge.tmp, name="path")
    fedge.forwarders.append(f)
    f.start()
    assert f.wait(30) == 0, why(f)
    (got,) = fedge.upstream.requests()
    assert got.target == "/hs" + s.target, (got.target, s.target)
    assert got.body == s.body
    assert fw.outbox_ids(fedge.r, room.room_id) == []


def test_unknown_schema_stops_the_forwarder(fedge):
    """A `P schema` other than this build's: forward exits 1 at once,
    sends nothing and leaves the outbox as it is."""
    room = new_room("10")
    fedge.load(room).start()
    (s,) = fedge.joins(room, 1)
    fedge.r.set(PREFIX + "schema", "2")
    rc, f = fedge.forward_once(timeout=20)
    assert rc == 1, why(f)
    assert fedge.upstream.requests() == []
    assert fw.outbox_ids(fedge.r, room.room_id) == [s.event_id]


# -- outbox and matrix_status -------------------------------------------------

def test_outbox_numbers(fedge):
    """Room A: 3 joins, the first in flight (its forwarder killed -9
    while the homeserver hung); room C: its one join a dead letter
    (403, --max-attempts 1); room B: 2 joins accepted afterwards.
    `matrix-join-ctl outbox` says A pending 3 in_flight 1, B pending 2,
    C pending 0 dead 1, in all pending 5, in_flight 1, dead 1,
    oldest_age_ms the age of A's first entry; matrix_status reports the
    same totals."""
    a, b, c = (new_room("10") for _ in range(3))
    fedge.load(a, b, c).start()
    sa = fedge.joins(a, 3)
    (sc,) = fedge.joins(c, 1)
    fedge.upstream.on(Hang(), event_id=sa[0].event_id, times=1)
    fedge.upstream.on(Answer(403, {"errcode": "M_FORBIDDEN"}),
                      event_id=sc.event_id)
    f = fedge.forwarder("--max-attempts", "1", "--claim-idle", "60000")
    f.start()
    fedge.upstream.wait_requests(1, 20, sa[0].event_id)
    deadline = time.monotonic() + 20
    while not fw.dead_entries(fedge.r, c.room_id):
        assert time.monotonic() < deadline, "no dead letter" + why(f)
        time.sleep(0.05)
    f.kill9()
    fedge.joins(b, 2)
    oldest = fw.stream_id_ms(fw.outbox_entries(fedge.r, a.room_id)[0][0])

    t0 = now_ms()
    rc, rooms, total, out = fw.run_outbox(fedge.redis.address)
    t1 = now_ms()
    assert rc == 0, out
    want = {a.room_id: (3, 1, 0), b.room_id: (2, 0, 0),
            c.room_id: (0, 0, 1)}
    for room, (p, i, d) in want.items():
        assert room in rooms, f"no line for {room}:\n{out}"
        got = rooms[room]
        assert (got.get("pending"), got.get("in_flight"), got.get("dead")) \
            == (p, i, d), f"{room}: {got}\n{out}"
    assert total is not None, f"no total line:\n{out}"
    assert (total.get("pending"), total.get("in_flight"),
            total.get("dead")) == (5, 1, 1), out
    assert t0 - oldest - 5 <= total.get("oldest_age_ms", -1) <= \
        t1 - oldest + 5, (oldest, t0, t1, out)
    age_a = rooms[a.room_id].get("oldest_age_ms")
    assert age_a is not None and t0 - oldest - 5 <= age_a <= \
        t1 - oldest + 5, out

    t0 = now_ms()
    st = fedge.status()
    t1 = now_ms()
    assert "outbox" in st, f"matrix_status has no outbox: {sorted(st)}"
    ob = st["outbox"]
    assert (ob.get("pending"), ob.get("in_flight"), ob.get("dead")) == \
        (5, 1, 1), ob
    assert t0 - oldest - 5 <= ob.get("oldest_age_ms", -1) <= \
        t1 - oldest + 5, (ob, oldest, t0, t1)
    for room, (p, i, d) in want.items():
        got = st["rooms"].get(room, {}).get("outbox", {})
        assert (got.get("pending"), got.get("in_flight"),
                got.get("dead")) == (p, i, d), (room, got)
    assert st["rooms"][c.room_id]["outbox"]["oldest_age_ms"] == 0
    # ?room_id=: that room's numbers are the totals
    status, body = request(fedge.port, "GET", STATUS + "?room_id="
                           + urllib.parse.quote(b.room_id, safe=""))
    assert status == 200, body
    one = json.loads(body)
    assert list(one["rooms"]) == [b.room_id]
    assert (one["outbox"]["pending"], one["outbox"]["in_flight"],
            one["outbox"]["dead"]) == (2, 0, 0), one["outbox"]


def test_outbox_before_any_load(redis_server):
    """Nothing loaded yet (no P schema): `outbox` prints the total alone,
    all 0, and exits 0."""
    rc, rooms, total, out = fw.run_outbox(redis_server.address)
    assert rc == 0, out
    assert rooms == {} and total == {"pending": 0, "in_flight": 0,
                                     "dead": 0, "oldest_age_ms": 0}, out


# -- the log ------------------------------------------------------------------

def test_delivered_log_lines(fedge):
    """One `forward: delivered room=... event=... status=...
    attempts=... latency_ms=... lag_ms=...` line per delivery (2 rooms,
    5 joins, one delivered at the second attempt): the room and event
    IDs, status 200, the attempts made, lag_ms from the entry's
    received_ts to the 2xx (no less than the time the homeserver
    answered, no more than the forwarder's end), latency_ms one
    attempt's time (<= lag_ms)."""
    r1, r2 = new_room("10"), new_room("10")
    fedge.load(r1, r2).start()
    sent = fedge.joins(r1, 3) + fedge.joins(r2, 2)
    retried = sent[1].event_id
    fedge.upstream.on(Answer(502, {}), event_id=retried, times=1)
    fedge.upstream.default = Answer(200, {}, delay=0.05)
    received = {}
    for room in (r1, r2):
        for _, fl in fw.outbox_entries(fedge.r, room.room_id):
            received[fl[b"event_id"].decode()] = int(fl[b"received_ts"])
    rc, f = fedge.forward_once()
    assert rc == 0, why(f)
    lines = f.delivered()
    assert sorted(x.get("event") for x in lines) == \
        sorted(s.event_id for s in sent), why(f)
    for s in sent:
        (x,) = [x for x in lines if x.get("event") == s.event_id]
        assert x.get("room") == s.room.room_id, x
        assert x.get("status") == "200", x
        assert x.get("attempts") == ("2" if s.event_id == retried
                                     else "1"), x
        lat, lag = int(x["latency_ms"]), int(x["lag_ms"])
        (ok,) = [q for q in fedge.upstream.requests(s.event_id) if q.ok]
        assert 0 <= lat <= lag, x
        assert lat >= 50 - 2, f"latency {lat} ms below the homeserver's " \
                              f"50 ms: {x}"
        assert ok.answered_ms - received[s.event_id] - 5 <= lag <= \
            f.ended_ms - received[s.event_id] + 5, (x, ok.answered_ms,
                                                    received[s.event_id])
