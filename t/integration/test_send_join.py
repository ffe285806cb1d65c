"""matrix_send_join against its contract: docs/directives.md
"matrix_send_join" (the order of checks, accepting, the answer),
"matrix_make_join" and "Federation requests"; docs/redis-schema.md (the
outbox); reference §2 (send_join, partial state, statuses, our
signature), §6 and §9 (the Complement and sytest cases)
(shared/reference/matrix-join.md).

Every answer is judged independently of our C code: rooms come from
t/lib/mxj_room.py, the joining servers (t/lib/mxj_joiner.py on
t/lib/mxj_remote.py) fill in and sign the templates with signedjson, the
templates are judged by t/lib/mxj_authcheck.py, and each send_join answer
is checked event by event (hashes, signatures, event IDs, the generated
room's events, the state at the join's prev_events, the auth chain) by
mxj_joiner.check_answer against what the room and the accepted joins
imply, never against values read back from the code under test.

The edge is s0.example.org, one of the room's servers; the joining
servers are remote.test, remote2.test and remote3.test. Every server is
on 127.0.0.1; every request has a timeout."""

import copy
import hashlib
import http.client
import itertools
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from mxj_nginx import CTL, TOP

sys.path.insert(0, str(TOP / "t" / "lib"))
import mxj_authcheck as judge  # noqa: E402
import mxj_http  # noqa: E402
import mxj_joiner  # noqa: E402
import mxj_room  # noqa: E402
from mxj_http import Reply  # noqa: E402
from mxj_joiner import Joiner, View, send_join_target  # noqa: E402
from mxj_remote import (KeyServer, Recorder, RemoteServer,  # noqa: E402
                        headers_named, now_ms)

pytestmark = pytest.mark.timeout(120)

EDGE = "s0.example.org"            # our matrix_server_name, a room server
ORIGIN = "remote.test"
ORIGIN2 = "remote2.test"
ORIGIN3 = "remote3.test"
PREFIX = "mxj:"
MJ = "/_matrix/federation/v1/make_join/"
VERSIONS = mxj_room.VERSIONS
EVERY_VER = ["org.example.v99"] + VERSIONS + ["abc"]
MAX_BODY = 65536

_seeds = itertools.count(7000)


def remote_server(name):
    """The joining servers have fixed keys, so that the rooms sign their
    users' past events (a leave, a ban) with the key the servers publish."""
    seed = hashlib.sha256(f"mxj-send-join:{name}".encode()).digest()
    return RemoteServer(name, seed=seed)


def adopt(room):
    """The room signs events of the joining servers with their keys."""
    for name in (ORIGIN, ORIGIN2, ORIGIN3):
        room.add_server(name, key=remote_server(name).signing_key())
    return room


def new_room(version="10", **kw):
    """A small room (8 members on s0, s1, s2.example.org; the edge's users
    are @admin, @u3 and @u6 of s0), a fresh room ID each time."""
    kw.setdefault("members", 8)
    kw.setdefault("servers", 3)
    return adopt(mxj_room.Room(str(version), seed=next(_seeds), **kw))


def restricted_rules(version, *allowed, rule=None):
    rule = rule or ("knock_restricted" if int(version) == 10
                    else "restricted")
    return {"join_rule": rule,
            "allow": [{"type": "m.room_membership", "room_id": r}
                      for r in allowed]}


# -- raw HTTP -----------------------------------------------------------------

def send(port, method, target, auth=(), body=None, headers=(), timeout=20):
    """One request: target byte for byte, each Authorization value its own
    header, the body as application/json with Content-Length."""
    return mxj_http.send(port, method, target, EDGE, auth=auth,
                         headers=headers, body=body,
                         content_type="application/json", timeout=timeout)


def raw_request(method, target, auth, body, chunks=None):
    """The request's bytes; chunks: the body sent chunked in these
    pieces instead of with Content-Length."""
    head = [f"{method} {target} HTTP/1.1", f"Host: {EDGE}",
            "Content-Type: application/json", "Connection: close"]
    if auth:
        head.append(f"Authorization: {auth}")
    if chunks is None:
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body
    head.append("Transfer-Encoding: chunked")
    out = ("\r\n".join(head) + "\r\n\r\n").encode()
    for c in chunks:
        out += f"{len(c):x}\r\n".encode() + c + b"\r\n"
    return out + b"0\r\n\r\n"


def raw_exchange(port, data, timeout=20):
    """Sends data, reads until the server closes: (status, headers, body)
    parsed by http.client."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return Reply(resp.status, resp.getheaders(), resp.read())
    finally:
        s.close()


def assert_error(rep, status, errcode=None):
    assert rep.status == status, rep
    doc = rep.json()
    assert isinstance(doc, dict), rep
    if errcode is not None:
        assert doc.get("errcode") == errcode, rep
    assert isinstance(doc.get("error", ""), str), rep
    return doc


def mj_target(room_id, user, ver=EVERY_VER):
    t = MJ + urllib.parse.quote(room_id, safe="") + "/" \
        + urllib.parse.quote(user, safe="")
    if ver:
        t += "?" + "&".join("ver=" + urllib.parse.quote(v, safe="")
                            for v in ver)
    return t


def answer_of(rep, v):
    """The send_join 200's object: v2 as is, v1 unwrapped from
    [200, {...}]; the body carries an exact Content-Length."""
    assert rep.status == 200, rep
    assert rep.header("Content-Length") is not None, rep.headers
    assert int(rep.header("Content-Length")) == len(rep.body), \
        (rep.header("Content-Length"), len(rep.body))
    assert rep.header("Transfer-Encoding") is None, rep.headers
    assert (rep.header("Content-Type") or "").startswith(
        "application/json"), rep.headers
    doc = rep.json()
    if v == 1:
        assert isinstance(doc, list) and len(doc) == 2 and doc[0] == 200 \
            and isinstance(doc[1], dict), rep
        return doc[1]
    assert isinstance(doc, dict), rep
    return doc


# -- the edge -----------------------------------------------------------------

class Sent:
    """One send_join as it went on the wire."""

    def __init__(self, target, body, auth, event, rep, t0, t1):
        self.target = target
        self.body = body
        self.auth = auth
        self.event = event
        self.rep = rep
        self.t0 = t0
        self.t1 = t1


class Edge:
    """nginx (make_join + send_join) + Redis + a key server for the
    joining servers + the homeserver's Recorder behind the fallback."""

    def __init__(self, nginx, redis_server, tmp_path):
        self.nginx = nginx
        self.redis = redis_server
        self.r = redis_server.client()
        self.tmp = tmp_path
        self.our = EDGE
        self.remotes = [remote_server(n) for n in (ORIGIN, ORIGIN2, ORIGIN3)]
        self.keys = KeyServer(*self.remotes, avoid=[nginx.port])
        self.rec = Recorder(body={"from": "homeserver"},
                            avoid=[nginx.port])
        self.joiner = Joiner(self.remotes[0])
        self.joiner2 = Joiner(self.remotes[1], "other")
        self.joiner3 = Joiner(self.remotes[2], "third")

    def stop(self):
        self.keys.stop()
        self.rec.stop()

    @property
    def port(self):
        return self.nginx.port

    def load(self, *rooms):
        for r in rooms:
            path = self.tmp / "snap.json"
            r.write(path)
            p = subprocess.run([str(CTL), "load", "--redis",
                                self.redis.address, str(path)],
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stderr
        return self

    def start(self, rate=None, fallback=True, listen="", http_extra="",
              key=None, locations=""):
        """key: the signing key file's text (another edge's, for two
        edges of one homeserver); else a new one. locations: more
        location blocks for the server."""
        if key is None:
            key = subprocess.run([str(CTL), "keygen", self.our],
                                 capture_output=True, text=True, timeout=30,
                                 check=True).stdout
        self.key_file = self.nginx.write_file("signing.key", key,
                                              mode=0o600)
        limit = f"matrix_join_rate {rate};" if rate else ""
        self.nginx.write_conf(f"""
            matrix_server_name {self.our};
            matrix_signing_key signing.key;
            matrix_redis {self.redis.address};
            matrix_key_fetch /_mxj_keys/;
            {"matrix_join_fallback @hs;" if fallback else ""}
            {http_extra}
            log_format mxj '$pid $status $request_uri';
            server {{
                listen 127.0.0.1:$PORT {listen};
                access_log $PREFIX/logs/mxj.log mxj;
                location {MJ} {{
                    matrix_make_join;
                    {limit}
                }}
                location ~ ^/_matrix/federation/v[12]/send_join/ {{
                    matrix_send_join;
                    {limit}
                }}
                location /_mxj_keys/ {{
                    internal;
                    proxy_pass http://127.0.0.1:{self.keys.port}/_matrix/key/v2/query/;
                    subrequest_output_buffer_size 64k;
                }}
                location @hs {{
                    proxy_pass http://127.0.0.1:{self.rec.port};
                }}
                {locations}
            }}
            """)
        self.nginx.start()
        return self

    def our_key(self):
        """Our signing key, read from the file with signedjson."""
        return mxj_joiner.our_signing_key(self.key_file)

    def judge_keys(self, room):
        keys = {s: room.verify_key(s) for s in room.server_keys}
        for rs in self.remotes:
            keys[rs.name] = mxj_room.get_verify_key(rs.signing_key())
        return keys

    # requests
    def make_join(self, room_id, user, remote, ver=EVERY_VER):
        target = mj_target(room_id, user, ver)
        return send(self.port, "GET", target,
                    auth=[remote.auth_header("GET", target, self.our)])

    def template(self, room, joiner):
        """make_join answers 200 with the room's version and a template
        for joiner; returns the template."""
        rep = self.make_join(room.room_id, joiner.user, joiner.remote)
        assert rep.status == 200, rep
        doc = rep.json()
        assert doc.get("room_version") == room.version, doc
        t = doc["event"]
        assert t["room_id"] == room.room_id and t["sender"] == joiner.user \
            and t["state_key"] == joiner.user, t
        return t

    def put(self, target, body, auth=None, joiner=None, origin=None):
        """PUT body; auth: the Authorization value, or signed by joiner
        (the request object names origin= when given)."""
        if auth is None and joiner is not None:
            auth = joiner.auth("PUT", target, body, self.our, origin=origin)
        return send(self.port, "PUT", target,
                    auth=[auth] if auth else [], body=body), auth

    def send_join(self, room, joiner, ev, v=2, query="", style="canonical",
                  lower=False, path_room=None, path_eid=None, body=None,
                  sender_remote=None):
        """PUT the join to /v{v}/send_join/{room}/{event ID} signed by
        joiner's server (or sender_remote's, a server replaying it)."""
        eid = path_eid or mxj_joiner.event_id(room.version, ev)
        target = send_join_target(path_room or room.room_id, eid, v, query,
                                  lower)
        if body is None:
            body = mxj_joiner.body_bytes(ev, style)
        remote = sender_remote or joiner.remote
        auth = remote.auth_header("PUT", target, self.our,
                                  content=json.loads(body))
        t0 = now_ms()
        rep = send(self.port, "PUT", target, auth=[auth], body=body)
        return Sent(target, body, auth, ev, rep, t0, now_ms())

    # what Redis holds
    def key(self, room, name):
        return f"{PREFIX}{{{room.room_id}}}:{name}"

    def outbox(self, room):
        return self.r.xrange(self.key(room, "outbox"))

    def membership(self, room, user):
        m = self.r.hget(self.key(room, "member"), user)
        return m.decode() if m is not None else None

    def digest(self, room):
        """Every key of the room and its content, the rate bucket aside:
        what a refused request must leave as it found."""
        pat = f"{PREFIX}{{{room.room_id}}}:*"
        for ch in "\\[]?":
            pat = pat.replace(ch, "\\" + ch)
        out = {}
        for k in self.r.scan_iter(match=pat, count=1000):
            name = k.decode()
            if name.endswith(":rate"):
                continue
            t = self.r.type(k).decode()
            if t == "string":
                out[name] = self.r.get(k)
            elif t == "hash":
                out[name] = self.r.hgetall(k)
            elif t == "list":
                out[name] = self.r.lrange(k, 0, -1)
            elif t == "set":
                out[name] = self.r.smembers(k)
            elif t == "zset":
                out[name] = self.r.zrange(k, 0, -1, withscores=True)
            elif t == "stream":
                out[name] = self.r.xrange(k)
            else:
                out[name] = t
        return out

    def untouched(self, room, before, what=""):
        after = self.digest(room)
        if after != before:
            changed = sorted(k for k in set(before) | set(after)
                             if before.get(k) != after.get(k))
            raise AssertionError(f"{what}: the refused request changed "
                                 f"{changed}")


@pytest.fixture
def edge(nginx, redis_server, tmp_path):
    e = Edge(nginx, redis_server, tmp_path)
    yield e
    e.stop()


@pytest.fixture
def aof_edge(nginx, tmp_path):
    """An edge whose Redis has appendonly yes + appendfsync always (the
    setting the outbox's durability assumes), for kill -9 tests."""
    from mxj_redis import RedisServer
    red = RedisServer(aof=True).start()
    e = Edge(nginx, red, tmp_path)
    yield e
    e.stop()
    red.cleanup()


# -- the judge's own tests: it must be able to say no -------------------------

def _correct_answer(room, ev, omit=False):
    """The answer the contract asks for, made here from the room."""
    full = dict(room.state)
    if omit:
        keep = {k: e for k, e in full.items() if k[0] != "m.room.member"}
        own = ("m.room.member", ev["state_key"])
        if own in full:
            keep[own] = full[own]
        state = list(keep.values())
    else:
        state = list(full.values())
    evs = [room.events[e] for e in state]
    chain = mxj_joiner.auth_closure(room, [ev] + evs)
    if omit:
        chain -= set(state)
    doc = {"state": evs, "auth_chain": [room.events[e] for e in chain],
           "event": ev}
    if omit:
        doc["members_omitted"] = True
        per = View(room).servers_joined(full)
        doc["servers_in_room"] = sorted(per, key=lambda x: (-per[x], x))
    return doc


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_judge_refuses_broken_answers(version):
    """check_answer passes the answer the contract describes and refuses
    each way of breaking it (a judge that cannot fail judges nothing)."""
    room = new_room(version)
    room.add_member("@gone:" + ORIGIN, "join")
    room.add_member("@gone:" + ORIGIN, "leave")
    j = Joiner(remote_server(ORIGIN), "gone")
    ev = judge.build_join(room, j.user, ts=now_ms())
    j.sign(version, ev)
    keys = {s: room.verify_key(s) for s in room.server_keys}
    keys[ORIGIN] = j.verify_key()

    def verdict(doc, omit=False, ev=ev):
        view = View(room)
        try:
            mxj_joiner.check_answer(room, view, ev, doc, keys, EDGE,
                                    omit_members=omit)
            return "ok"
        except AssertionError as e:
            return str(e).split("\n")[0][:60]

    good = _correct_answer(room, ev)
    assert verdict(good) == "ok"
    assert verdict(_correct_answer(room, ev, True), True) == "ok"
    leave = room.state[("m.room.member", j.user)]
    assert leave in {mxj_joiner.event_id(version, e)
                     for e in good["auth_chain"]}

    def broken(change, omit=False):
        doc = copy.deepcopy(_correct_answer(room, ev, omit))
        change(doc)
        assert verdict(doc, omit) != "ok", change

    name = room.events[room.state[("m.room.name", "")]]
    broken(lambda d: d["state"].pop())                       # missing
    broken(lambda d: d["state"].append(room.events[room.extremity_ids[0]]))
    broken(lambda d: d["auth_chain"].pop(0))                 # not closed
    broken(lambda d: d["auth_chain"].append(name))           # extra
    broken(lambda d: d["auth_chain"].append(d["auth_chain"][0]))  # twice
    broken(lambda d: d["state"][0]["content"].update(x=1))   # hash
    broken(lambda d: d["state"][1]["signatures"].clear())    # signature
    broken(lambda d: d["event"].update(depth=d["event"]["depth"] + 1))
    broken(lambda d: d["event"]["signatures"][EDGE].update(x="y")
           if EDGE in d["event"]["signatures"] else
           d["event"]["signatures"].update({EDGE: {"ed25519:x": "y"}}))
    broken(lambda d: d.update(members_omitted=True))
    broken(lambda d: d.pop("auth_chain"))
    broken(lambda d: d.update(members_omitted=False), omit=True)
    broken(lambda d: d["state"].append(room.events[room.state[
        ("m.room.member", room.creator)]]), omit=True)       # named: no hero
    broken(lambda d: d["auth_chain"].append(name), omit=True)
    broken(lambda d: d["servers_in_room"].pop(), omit=True)
    broken(lambda d: d["servers_in_room"].reverse(), omit=True)
    broken(lambda d: d["servers_in_room"].append(ORIGIN), omit=True)
    # a join that is in the answer itself
    broken(lambda d: d["state"].append(d["event"]))


def test_judge_xmatrix():
    rs = RemoteServer(ORIGIN)
    body = b'{"a": 1}'
    uri = "/_matrix/federation/v2/send_join/%21r%3ax/%24e"
    auth = rs.auth_header("PUT", uri, EDGE, content={"a": 1})
    keys = {ORIGIN: mxj_room.get_verify_key(rs.signing_key())}
    assert mxj_joiner.xmatrix_verifies(auth, "PUT", uri, body, EDGE,
                                       keys) == ORIGIN
    for args in (("PUT", uri.upper(), body, EDGE),
                 ("PUT", uri, b'{"a": 2}', EDGE),
                 ("PUT", uri, body, "other.test"),
                 ("POST", uri, body, EDGE)):
        with pytest.raises(AssertionError):
            mxj_joiner.xmatrix_verifies(auth, *args, keys)


# -- the handshake ------------------------------------------------------------

def judged_template(edge, room, joiner, tpl, ev):
    """The filled-in template passes the independent judge (restricted:
    with the resident's signature added to a copy, as the edge will)."""
    keys = edge.judge_keys(room)
    check = copy.deepcopy(ev)
    who = tpl["content"].get("join_authorised_via_users_server")
    if who:
        mxj_room.sign_event(room.version, check, judge.server_of(who),
                            room.server_keys[judge.server_of(who)])
    judge.check_join(room, check, keys)


def join(edge, room, view, joiner, v=2, query="", style="canonical",
         omit=False, keep_origin=False, lower=False, strict=False):
    """make_join, fill in, send_join; the answer judged. Returns
    (Sent, answer object, check_answer's summary)."""
    tpl = edge.template(room, joiner)
    ev = joiner.fill(room.version, tpl, keep_origin=keep_origin)
    judged_template(edge, room, joiner, tpl, ev)
    return send_and_check(edge, room, view, joiner, ev, v, query, style,
                          omit, lower, strict)


def send_and_check(edge, room, view, joiner, ev, v=2, query="",
                   style="canonical", omit=False, lower=False, strict=False):
    """strict: the auth_chain must also hold the join's own auth events
    that only it brings (test_auth_chain_has_the_joins_own_auth_events
    asks for them; elsewhere their absence would hide what else a test
    finds)."""
    s = edge.send_join(room, joiner, ev, v, query, style, lower)
    doc = answer_of(s.rep, v)
    got = mxj_joiner.check_answer(room, view, ev, doc, edge.judge_keys(room),
                                  EDGE, edge.our_key(), omit_members=omit,
                                  own_auth_in_chain=strict)
    view.accept(doc["event"])
    return s, doc, got


def check_outbox_entry(edge, room, fields, s, joiner):
    """One outbox entry against the request that was sent."""
    want = {b"method", b"uri", b"authorization", b"body", b"origin",
            b"destination", b"room_id", b"event_id", b"received_ts"}
    assert set(fields) == want, sorted(fields)
    assert fields[b"method"] == b"PUT"
    assert fields[b"uri"] == s.target.encode(), (fields[b"uri"], s.target)
    assert fields[b"authorization"] == s.auth.encode()
    assert fields[b"body"] == s.body, "the body is not byte-identical"
    assert fields[b"origin"] == joiner.server.encode()
    assert fields[b"destination"] == EDGE.encode()
    assert fields[b"room_id"] == room.room_id.encode()
    assert fields[b"event_id"] == \
        mxj_joiner.event_id(room.version, s.event).encode()
    ts = int(fields[b"received_ts"])
    assert s.t0 - 1000 <= ts <= s.t1 + 1000, (ts, s.t0, s.t1)
    # what the forwarder will replay still carries a valid X-Matrix
    # signature for the homeserver (destination: our server name)
    origin = mxj_joiner.xmatrix_verifies(
        fields[b"authorization"].decode(), "PUT", fields[b"uri"].decode(),
        fields[b"body"], EDGE,
        {joiner.server: joiner.verify_key()})
    assert origin == joiner.server


@pytest.mark.parametrize("version", VERSIONS)
def test_handshake_every_version(edge, version):
    """make_join then send_join v2 (remote.test), then another joiner
    through make_join and the removed v1 form (remote2.test, [200, {...}])
    whose state holds the first join: every returned event verified, the
    state the room's, the auth chain closed and exact, the event as sent;
    the outbox in acceptance order; the next template builds on both."""
    room = new_room(version)
    room.fork((1, 3))
    edge.load(room).start()
    view = View(room)
    a, _, got_a = join(edge, room, view, edge.joiner, v=2)
    assert ("m.room.member", edge.joiner.user) not in got_a["state"]
    b, _, got_b = join(edge, room, view, edge.joiner2, v=1)
    assert got_b["state"][("m.room.member", edge.joiner.user)] == \
        got_a["event"]
    if int(version) >= 12:
        assert ("m.room.create", "") in got_b["state"]
        assert room.room_id == "!" + room.create_id[1:]
    entries = edge.outbox(room)
    assert [f[b"event_id"].decode() for _, f in entries] == \
        [got_a["event"], got_b["event"]]
    check_outbox_entry(edge, room, entries[0][1], a, edge.joiner)
    check_outbox_entry(edge, room, entries[1][1], b, edge.joiner2)
    tpl = edge.template(room, edge.joiner3)
    assert mxj_joiner.ref_ids(tpl["prev_events"]) == [got_b["event"]]
    judged_template(edge, room, edge.joiner3, tpl,
                    edge.joiner3.fill(room.version, tpl))


# -- after an accepted join ---------------------------------------------------

@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_accepted_join_outbox_and_snapshot(edge, version):
    """One accepted join: a body that is valid but not canonical
    (indented, keys reversed) and a URI with lower-case escapes and a
    query are kept byte for byte in exactly one outbox entry whose
    X-Matrix signature verifies for our name; the snapshot has the join
    (member, state index, extremities, servers, counts); the next
    template builds on it; a retry answers the same and adds nothing."""
    room = new_room(version)
    room.fork((2, 1))
    edge.load(room).start()
    meta0 = {k.decode(): v.decode() for k, v in
             edge.r.hgetall(edge.key(room, "meta")).items()}
    view = View(room)
    s, doc, got = join(edge, room, view, edge.joiner, v=2,
                       query="?omit_members=false", style="pretty",
                       lower=True)
    eid = got["event"]
    entries = edge.outbox(room)
    assert len(entries) == 1, entries
    check_outbox_entry(edge, room, entries[0][1], s, edge.joiner)

    # the snapshot has the join (docs/redis-schema.md)
    u = edge.joiner.user
    assert edge.membership(room, u) == "join"
    idx = edge.r.hget(edge.key(room, "state"),
                      mxj_room.canonical(["m.room.member", u]))
    assert idx is not None and idx.decode() == eid
    ext = {k.decode(): json.loads(v) for k, v in
           edge.r.hgetall(edge.key(room, "extrem")).items()}
    assert set(ext) == {eid}, ext
    assert ext[eid]["depth"] == s.event["depth"]
    assert ext[eid]["sha256"] == mxj_room.b64_std(
        mxj_room.reference_hash(version, s.event))
    assert edge.r.zscore(edge.key(room, "servers"), ORIGIN) == -1
    meta = {k.decode(): v.decode() for k, v in
            edge.r.hgetall(edge.key(room, "meta")).items()}
    for k, d in (("members", 1), ("member_events", 1), ("state_events", 1)):
        assert int(meta[k]) == int(meta0[k]) + d, (k, meta0[k], meta[k])
    assert int(meta["extremities"]) == 1
    assert int(meta["max_depth"]) == s.event["depth"]

    # the next template builds on the join
    tpl = edge.template(room, edge.joiner2)
    assert mxj_joiner.ref_ids(tpl["prev_events"]) == [eid]
    assert tpl["depth"] == s.event["depth"] + 1
    judged_template(edge, room, edge.joiner2, tpl,
                    edge.joiner2.fill(version, tpl))

    # a retry of the very same request: 200, the same answer, nothing added
    before = edge.digest(room)
    rep = send(edge.port, "PUT", s.target, auth=[s.auth], body=s.body)
    again = answer_of(rep, 2)
    assert again["event"] == doc["event"]
    assert sorted(map(mxj_room.canonical, again["state"])) == \
        sorted(map(mxj_room.canonical, doc["state"]))
    assert sorted(map(mxj_room.canonical, again["auth_chain"])) == \
        sorted(map(mxj_room.canonical, doc["auth_chain"]))
    edge.untouched(room, before, "a retry")
    assert len(edge.outbox(room)) == 1


def test_retry_through_v1_after_v2(edge):
    """The same join sent again on the v1 path (a joining server falling
    back): 200 [200, {...}] with the same state, no second entry."""
    room = new_room("10")
    edge.load(room).start()
    view = View(room)
    s, doc, got = join(edge, room, view, edge.joiner, v=2)
    again = edge.send_join(room, edge.joiner, s.event, v=1)
    d1 = answer_of(again.rep, 1)
    assert {mxj_joiner.event_id("10", e) for e in d1["state"]} == \
        set(got["state"].values())
    assert len(edge.outbox(room)) == 1


def test_origin_left_as_the_template_had_it(edge):
    """The body's origin is neither required nor read: a join that keeps
    the resident's origin from the template (Synapse 1.134+ joiners) is
    accepted; one without origin too."""
    room = new_room("10")
    edge.load(room).start()
    view = View(room)
    s, _, _ = join(edge, room, view, edge.joiner, keep_origin=True)
    assert s.event["origin"] == EDGE
    tpl = edge.template(room, edge.joiner2)
    tpl.pop("origin")
    ev = edge.joiner2.fill("10", tpl)
    send_and_check(edge, room, view, edge.joiner2, ev)


# -- concurrent joiners, rejoins ----------------------------------------------
def at_once(n, fn, timeout=60):
    """fn(k) for k in 0..n-1, each in its own thread, released together;
    the results in order (None for one that did not finish in time)."""
    out = [None] * n
    go = threading.Event()

    def run(k):
        go.wait(10)
        out[k] = fn(k)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(timeout)
    return out



@pytest.mark.parametrize("version", ["1", "10"])
def test_two_joiners_same_template(edge, version):
    """Both make_join before either send_join: both 200; the second's
    state is the state at its own prev_events (without the first join);
    the third template lists both joins; a third joiner's state holds
    both."""
    room = new_room(version)
    edge.load(room).start()
    view = View(room)
    t1 = edge.template(room, edge.joiner)
    t2 = edge.template(room, edge.joiner2)
    assert t1["prev_events"] == t2["prev_events"]
    e1 = edge.joiner.fill(version, t1)
    e2 = edge.joiner2.fill(version, t2)
    judged_template(edge, room, edge.joiner, t1, e1)
    judged_template(edge, room, edge.joiner2, t2, e2)
    _, _, g1 = send_and_check(edge, room, view, edge.joiner, e1)
    _, _, g2 = send_and_check(edge, room, view, edge.joiner2, e2)
    assert ("m.room.member", edge.joiner.user) not in g2["state"]
    assert g1["event"] not in g2["auth"]
    t3 = edge.template(room, edge.joiner3)
    assert sorted(mxj_joiner.ref_ids(t3["prev_events"])) == \
        sorted([g1["event"], g2["event"]])
    assert t3["depth"] == max(e1["depth"], e2["depth"]) + 1
    e3 = edge.joiner3.fill(version, t3)
    judged_template(edge, room, edge.joiner3, t3, e3)
    _, _, g3 = send_and_check(edge, room, view, edge.joiner3, e3)
    assert g3["state"][("m.room.member", edge.joiner.user)] == g1["event"]
    assert g3["state"][("m.room.member", edge.joiner2.user)] == g2["event"]
    assert len(edge.outbox(room)) == 3
    ext = {k.decode() for k in edge.r.hkeys(edge.key(room, "extrem"))}
    assert ext == {g3["event"]}


@pytest.mark.no_valgrind(reason="two worker processes (reuseport)")
@pytest.mark.timeout(180)
def test_parallel_joiners_two_workers(edge):
    """Two workers (reuseport), eight joiners with one template each,
    their send_joins at the same moment: every one 200, eight outbox
    entries, the extremities exactly the eight joins (each replaced the
    same prev_events), each state without the others' joins."""
    edge.nginx.workers = 2
    room = new_room("10")
    edge.load(room).start(listen="reuseport")
    view = View(room)
    joiners = [Joiner(edge.remotes[k % 3], f"par{k}") for k in range(8)]
    evs = []
    for j in joiners:
        t = edge.template(room, j)
        evs.append(j.fill("10", t))
    results = at_once(len(joiners),
                      lambda k: edge.send_join(room, joiners[k], evs[k]))
    ids = []
    for k, s in enumerate(results):
        doc = answer_of(s.rep, 2)
        mxj_joiner.check_answer(room, view, evs[k], doc,
                                edge.judge_keys(room))
        ids.append(mxj_joiner.event_id("10", evs[k]))
    for k in range(len(joiners)):
        view.accept(evs[k])
    assert len(edge.outbox(room)) == len(joiners)
    ext = {k.decode() for k in edge.r.hkeys(edge.key(room, "extrem"))}
    assert ext == set(ids)
    t = edge.template(room, edge.joiner3)
    assert sorted(mxj_joiner.ref_ids(t["prev_events"])) == sorted(ids)


@pytest.mark.no_valgrind(reason="two worker processes (reuseport)")
def test_same_join_twice_at_once(edge):
    """Two workers, the same join sent twice at the same moment (a
    joining server retrying while the first try is in flight): both 200
    with the same state, one outbox entry."""
    edge.nginx.workers = 2
    room = new_room("10")
    edge.load(room).start(listen="reuseport")
    view = View(room)
    j = edge.joiner
    ev = j.fill("10", edge.template(room, j))
    for _ in range(4):          # the key, in both workers
        edge.template(room, edge.joiner2)
    out = at_once(6, lambda k: edge.send_join(room, j, ev))
    states = set()
    for s in out:
        doc = answer_of(s.rep, 2)
        got = mxj_joiner.check_answer(room, view, ev, doc,
                                      edge.judge_keys(room))
        states.add(tuple(sorted(got["state"].values())))
    assert len(states) == 1
    assert len(edge.outbox(room)) == 1


def test_extremities_beyond_twenty(edge):
    """25 forward extremities: the join replaces the 10 it lists (as
    Synapse); the other 15 stay beside it, in Redis, and the next
    template names the deepest 10 of the 16."""
    room = new_room("10")
    room.fork(range(1, 26))
    edge.load(room).start()
    view = View(room)
    _, _, got = join(edge, room, view, edge.joiner)
    ext = {k.decode() for k in edge.r.hkeys(edge.key(room, "extrem"))}
    assert ext == set(view.extremities()) and len(ext) == 16, ext
    tpl = edge.template(room, edge.joiner2)
    deepest = sorted(ext, key=lambda e: room.events[e]["depth"])[-10:]
    assert sorted(mxj_joiner.ref_ids(tpl["prev_events"])) == \
        sorted(deepest)
    judged_template(edge, room, edge.joiner2, tpl,
                    edge.joiner2.fill("10", tpl))
    join(edge, room, view, edge.joiner3)


def test_rejoin_after_leave(edge):
    """A user whose leave is in the snapshot joins again: its answer's
    state holds one member event for it, the leave; later joiners' states
    hold the new join, not the leave, which is in their auth chain (an
    auth event of a state event)."""
    room = new_room("10")
    room.add_member(edge.joiner.user, "join")
    leave = room.add_member(edge.joiner.user, "leave")
    edge.load(room).start()
    view = View(room)
    _, doc, got = join(edge, room, view, edge.joiner)
    members = [e for e in doc["state"] if e["type"] == "m.room.member"
               and e["state_key"] == edge.joiner.user]
    assert len(members) == 1
    assert mxj_joiner.event_id("10", members[0]) == leave
    _, _, got2 = join(edge, room, view, edge.joiner2)
    assert got2["state"][("m.room.member", edge.joiner.user)] == \
        got["event"]
    assert leave in got2["auth"]
    assert edge.membership(room, edge.joiner.user) == "join"


@pytest.mark.parametrize("version", ["1", "10"])
@pytest.mark.parametrize("in_auth_chain", [False, True])
def test_join_again_replaces_own_membership(edge, version, in_auth_chain):
    """A joined user joins again (join after join is allowed): the answer
    holds one member event for it (its previous join, the snapshot's);
    then again (now its edge join is the one replaced); a later joiner's
    state holds only the newest join, and the replaced ones are in its
    auth chain (each join lists the previous one). in_auth_chain: the
    snapshot's join is also in the snapshot's auth chain (the user
    invited someone, so the invite lists it)."""
    j = edge.joiner
    room = new_room(version)
    first = room.add_member(j.user, "join")
    if in_auth_chain:
        room.add_member("@guest:" + ORIGIN2, "invite", sender=j.user)
        assert first in room.auth_chain_ids()
    edge.load(room).start()
    view = View(room)
    _, _, g1 = join(edge, room, view, j)
    assert g1["state"][("m.room.member", j.user)] == first
    _, _, g2 = join(edge, room, view, j, v=1)
    assert g2["state"][("m.room.member", j.user)] == g1["event"]
    _, _, g3 = join(edge, room, view, edge.joiner2)
    assert g3["state"][("m.room.member", j.user)] == g2["event"]
    assert {first, g1["event"]} <= g3["auth"]    # g2 <- g1 <- first
    assert len(edge.outbox(room)) == 3


def test_load_resets_accepted_joins_keeps_outbox(edge):
    """docs/redis-schema.md "A load resets the edge keys": after a join
    and a load of the same snapshot, templates build on the snapshot's
    extremities again and answers hold the snapshot's state; the outbox
    keeps the join for the forwarder."""
    room = new_room("10")
    ext0 = list(room.extremity_ids)
    edge.load(room).start()
    snap = copy.deepcopy(room.snapshot)
    view = View(room)
    join(edge, room, view, edge.joiner)
    path = edge.tmp / "again.json"
    path.write_text(json.dumps(snap))
    p = subprocess.run([str(CTL), "load", "--redis", edge.redis.address,
                        str(path)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    tpl = edge.template(room, edge.joiner2)
    assert sorted(tpl["prev_events"]) == sorted(ext0)
    ev = edge.joiner2.fill("10", tpl)
    s = edge.send_join(room, edge.joiner2, ev)
    doc = answer_of(s.rep, 2)
    ids = {mxj_joiner.event_id("10", e) for e in doc["state"]}
    assert view.joins and not (set(view.joins) & ids)
    assert len(edge.outbox(room)) == 2


@pytest.mark.parametrize("version", ["2", "10"])
@pytest.mark.parametrize("before", ["leave", "invite"])
def test_auth_chain_has_the_joins_own_auth_events(edge, version, before):
    """"auth_chain: the auth chain of that state and of the join": the
    joiner's previous membership (a leave, an invite) is an auth event of
    the join, so it is in auth_chain even when no state event needs it
    (reference §2: "the full auth chain of the new join plus the auth
    chains of every event in state")."""
    room = new_room(version)
    if before == "leave":
        room.add_member(edge.joiner.user, "join")
        prev = room.add_member(edge.joiner.user, "leave")
    else:
        prev = room.add_member(edge.joiner.user, "invite",
                               sender=room.creator)
    assert prev not in room.auth_chain_ids()
    edge.load(room).start()
    view = View(room)
    _, _, got = join(edge, room, view, edge.joiner, strict=True)
    assert prev in got["auth"]


@pytest.mark.parametrize("version", ["2", "10"])
def test_invited_user_joins_invite_only_room(edge, version):
    """Invite-only room: the invite (in the snapshot) is the joiner's
    membership in state; a second invited joiner's state has the first
    join, and the first invite in its auth chain."""
    room = new_room(version, join_rules={"join_rule": "invite"})
    invite = room.add_member(edge.joiner.user, "invite",
                             sender=room.creator)
    room.add_member(edge.joiner3.user, "invite", sender=room.creator)
    edge.load(room).start()
    view = View(room)
    _, _, got = join(edge, room, view, edge.joiner)
    assert got["state"][("m.room.member", edge.joiner.user)] == invite
    assert_error(edge.make_join(room.room_id, edge.joiner2.user,
                                edge.joiner2.remote), 403, "M_FORBIDDEN")
    _, _, got3 = join(edge, room, view, edge.joiner3)
    assert got3["state"][("m.room.member", edge.joiner.user)] == \
        got["event"]
    assert invite in got3["auth"]


def test_many_members_answer_spans_chunks(edge):
    """A room whose state is several 64 KiB chunks (400 members): the
    answer is still exactly the room's state and auth chain."""
    room = new_room("10", members=400, servers=20)
    edge.load(room).start()
    assert room.expected["bytes"] > 4 * 65536
    view = View(room)
    _, doc, got = join(edge, room, view, edge.joiner)
    assert len(got["state"]) == room.expected["state_events"]
    _, doc2, _ = join(edge, room, view, edge.joiner2, v=1)


# -- omit_members (reference §2.1) --------------------------------------------

@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_partial_state_complement(edge, version):
    """Complement TestSendJoinPartialStateResponse: alice creates a public
    room, bob joins, both on the edge's server, no name: state is exactly
    create, power_levels, join_rules, history_visibility, alice, bob (by
    type|state_key); auth_chain empty; servers_in_room == [edge]."""
    room = adopt(mxj_joiner.PlainRoom(version, next(_seeds),
                                      joined=["@bob:" + EDGE]))
    edge.load(room).start()
    view = View(room)
    _, doc, got = join(edge, room, view, edge.joiner,
                       query="?omit_members=true", omit=True)
    keys = sorted(f"{e['type']}|{e['state_key']}" for e in doc["state"])
    assert keys == sorted([
        "m.room.create|", "m.room.power_levels|", "m.room.join_rules|",
        "m.room.history_visibility|", "m.room.member|@alice:" + EDGE,
        "m.room.member|@bob:" + EDGE])
    assert doc["auth_chain"] == []
    assert doc["members_omitted"] is True
    assert doc["servers_in_room"] == [EDGE]


def test_partial_state_heroes_own_membership_servers(edge):
    """No name: the heroes are every joined or invited member (five here,
    over three servers), the joiner's own previous membership (a leave)
    is in state too, the auth_chain is what the state's chains add;
    servers_in_room: most joined members first, then by name."""
    joined = ["@bob:s1.example.org", "@carol:s1.example.org",
              "@dan:s2.example.org"]
    room = adopt(mxj_joiner.PlainRoom("10", next(_seeds), joined=joined,
                                      invited=["@erin:s2.example.org"]))
    room.add_member(edge.joiner.user, "join")
    room.add_member(edge.joiner.user, "leave")
    edge.load(room).start()
    view = View(room)
    _, doc, got = join(edge, room, view, edge.joiner,
                       query="?omit_members=true", omit=True)
    assert ("m.room.member", edge.joiner.user) in got["state"]
    assert doc["servers_in_room"] == ["s1.example.org", EDGE,
                                      "s2.example.org"]


@pytest.mark.parametrize("joiner_invited", [False, True])
def test_partial_state_first_five_heroes(edge, joiner_invited):
    """No name, seven joined or invited members besides the joiner: the
    heroes are the first five of them (the room's order), never six, the
    joiner (when it was invited early) not among them."""
    j = edge.joiner
    early = ["@bob:s1.example.org", "@carol:s2.example.org"]
    room = adopt(mxj_joiner.PlainRoom(
        "10", next(_seeds), joined=early,
        invited=[j.user] if joiner_invited else ["@ivy:s1.example.org"]))
    for u in ("@dan:s1.example.org", "@erin:s2.example.org",
              "@fay:s1.example.org", "@gus:s2.example.org"):
        room.add_member(u, "join")
    edge.load(room).start()
    view = View(room)
    _, doc, got = join(edge, room, view, j, query="?omit_members=true",
                       omit=True)
    members = [k[1] for k in got["state"] if k[0] == "m.room.member"]
    assert len(members) == 5 + joiner_invited, members


def test_partial_state_after_edge_joins(edge):
    """No name, alice and bob: joins accepted here count as what they are
    at the prev_events: a later joiner's heroes include the earlier edge
    joiners (five at most, the first ones), and a user joining again gets
    its own edge join as its membership."""
    room = adopt(mxj_joiner.PlainRoom("10", next(_seeds),
                                      joined=["@bob:" + EDGE]))
    edge.load(room).start()
    view = View(room)
    omit = dict(query="?omit_members=true", omit=True)
    _, _, g1 = join(edge, room, view, edge.joiner, **omit)
    _, _, g2 = join(edge, room, view, edge.joiner2, **omit)
    assert g2["state"][("m.room.member", edge.joiner.user)] == g1["event"]
    _, doc3, g3 = join(edge, room, view, edge.joiner, **omit)
    assert g3["state"][("m.room.member", edge.joiner.user)] == g1["event"]
    extra = [Joiner(edge.remotes[k % 3], f"late{k}") for k in range(3)]
    for x in extra:
        join(edge, room, view, x, **omit)
    # alice, bob, joiner, other, late0, late1, late2: the first five
    _, doc, got = join(edge, room, view, edge.joiner3, **omit)
    members = sorted(k[1] for k in got["state"] if k[0] == "m.room.member")
    assert len(members) == 5, members


def test_partial_state_named_room(edge):
    """A named room with an alias: no heroes; state is the non-member
    state (and the joiner's membership when it has one); servers_in_room
    the servers with joined members before the join, most first
    (check_answer), the first joiner's server among them for the
    second."""
    room = new_room("10", members=30, servers=4)
    edge.load(room).start()
    view = View(room)
    _, doc, got = join(edge, room, view, edge.joiner,
                       query="?omit_members=true", omit=True)
    assert all(k[0] != "m.room.member" for k in got["state"])
    per = view.servers_joined(view.base_state)
    assert sorted(doc["servers_in_room"]) == sorted(per)
    # the second joiner: the first's server is now in the room
    _, doc2, _ = join(edge, room, view, edge.joiner2,
                      query="?omit_members=true", omit=True)
    assert ORIGIN in doc2["servers_in_room"]
    assert ORIGIN2 not in doc2["servers_in_room"]


def test_partial_state_restricted_join_chain_closed(edge):
    """omit_members with a restricted join: the auth chain holds what the
    join's own auth events need (the authoriser's membership) when the
    state does not (reference §2.1 caveat; the answer must be closed)."""
    a = new_room("10")
    a.add_member(edge.joiner.user, "join")
    room = new_room("10", members=12,
                    join_rules=restricted_rules("10", a.room_id))
    edge.load(a, room).start()
    view = View(room)
    join(edge, room, view, edge.joiner, query="?omit_members=true",
         omit=True)


@pytest.mark.parametrize("value", ["maybe", "1", "True", "", "true,false"])
def test_omit_members_invalid(edge, value):
    """omit_members other than true/false: 400 M_INVALID_PARAM, before
    anything else (never the fallback), nothing stored."""
    room = new_room("10")
    edge.load(room).start()
    tpl = edge.template(room, edge.joiner)
    ev = edge.joiner.fill("10", tpl)
    before = edge.digest(room)
    s = edge.send_join(room, edge.joiner, ev, query="?omit_members="
                       + value)
    assert_error(s.rep, 400, "M_INVALID_PARAM")
    edge.untouched(room, before)
    assert edge.rec.requests == []


@pytest.mark.parametrize("query,omit", [
    ("?omit_members=tru%65", True),         # decoded before compared
    ("?omit%5Fmembers=true", True),         # the name too
    ("?x=1;omit_members=true", True),       # ';' separates
    ("?OMIT_MEMBERS=true", False),          # another name: absent
    ("?omit_members", False),               # no '=': ignored
], ids=["encoded-value", "encoded-name", "semicolon", "upper-case-name",
        "bare-name"])
def test_omit_members_read_as_synapse_reads_it(edge, query, omit):
    """omit_members is read with Twisted's query rules (Synapse's
    parse_boolean over request.args), not nginx's ngx_http_arg (which
    matches names case-insensitively and does not decode)."""
    room = new_room("10")
    edge.load(room).start()
    view = View(room)
    _, doc, _ = join(edge, room, view, edge.joiner, query=query, omit=omit)
    assert doc.get("members_omitted", False) is omit


def test_omit_members_false_full_state(edge):
    room = new_room("10")
    edge.load(room).start()
    view = View(room)
    _, doc, got = join(edge, room, view, edge.joiner,
                       query="?omit_members=false")
    assert len(got["state"]) == room.expected["state_events"]


# -- refusals (reference §2.2, §9) --------------------------------------------

def build_event(room, joiner, etype, content, state_key=None, sender=None,
                prev=None):
    """An event as Complement's MustCreateEvent makes it: on the current
    forward extremities, with the auth events selection for its type,
    hashed and signed by the joiner's server."""
    v = int(room.version)
    sender = sender or joiner.user
    prev = list(prev or room.extremity_ids)
    membership = content.get("membership") \
        if etype == "m.room.member" else None
    auth = [a for a in room.auth_for(etype, sender, state_key, membership)
            if v < 12 or a != room.create_id]
    ev = {"type": etype, "sender": sender, "content": content,
          "room_id": room.room_id,
          "depth": max(room.events[p]["depth"] for p in prev) + 1,
          "origin_server_ts": now_ms(),
          "prev_events": [room.ref(p) for p in prev],
          "auth_events": [room.ref(a) for a in auth]}
    if state_key is not None:
        ev["state_key"] = state_key
    if v <= 10:
        ev["origin"] = joiner.server
    if v <= 2:
        ev["event_id"] = joiner.new_event_id()
    return joiner.sign(room.version, ev)


def refused(edge, room, s, status, errcode, before, what=""):
    assert_error(s.rep, status, errcode)
    edge.untouched(room, before, what or s.target)


NON_JOINS = ["message", "member-without-state_key", "leave", "knock",
             "invite", "state_key-not-sender"]


@pytest.mark.parametrize("version,v", [("10", 2), ("10", 1), ("1", 1),
                                       ("1", 2)])
def test_non_joins_refused(edge, version, v):
    """Complement TestCannotSendNonJoinViaSendJoinV1/V2: charlie joined
    (accepted here), then sends a message, a member event without
    state_key, a leave, a knock, an invite, a join for doris: each 400
    (M_BAD_JSON), nothing stored."""
    room = new_room(version)
    edge.load(room).start()
    view = View(room)
    charlie = edge.joiner
    join(edge, room, view, charlie)
    doris = "@doris:" + ORIGIN
    for case in NON_JOINS:
        if case == "message":
            ev = build_event(room, charlie, "m.room.message",
                             {"body": "bzz"})
        elif case == "member-without-state_key":
            ev = build_event(room, charlie, "m.room.member",
                             {"body": "bzz"})
        elif case == "state_key-not-sender":
            ev = build_event(room, charlie, "m.room.member",
                             {"membership": "join"}, state_key=doris)
        else:
            ev = build_event(room, charlie, "m.room.member",
                             {"membership": case}, state_key=charlie.user)
        before = edge.digest(room)
        s = edge.send_join(room, charlie, ev, v)
        refused(edge, room, s, 400, "M_BAD_JSON", before, case)
    assert len(edge.outbox(room)) == 1


@pytest.mark.parametrize("v", [2, 1])
@pytest.mark.parametrize("fix_auth", [False, True],
                         ids=["complement", "auth-events-fixed"])
def test_banned_user_cannot_send_join(edge, v, fix_auth):
    """Complement TestBannedUserCannotSendJoin: a template for charlie2
    rewritten to the banned charlie and signed: 403 M_FORBIDDEN, charlie
    still banned, nothing stored. Complement leaves the auth events of
    charlie2's template (no membership); the second case lists charlie's
    ban as the selection asks."""
    charlie = edge.joiner
    room = new_room("10")
    room.add_member(charlie.user, "join")
    room.add_member(charlie.user, "ban", sender=room.creator)
    edge.load(room).start()
    charlie2 = Joiner(edge.remotes[0], "charlie2")
    tpl = edge.template(room, charlie2)
    tpl["sender"] = tpl["state_key"] = charlie.user
    if fix_auth:
        sel = judge.auth_selection(room, charlie.user)
        tpl["auth_events"] = [room.ref(e) for e in sel.values()]
    ev = charlie.fill("10", tpl)
    before = edge.digest(room)
    s = edge.send_join(room, charlie, ev, v)
    refused(edge, room, s, 403, "M_FORBIDDEN", before)
    assert edge.membership(room, charlie.user) == "ban"
    assert edge.outbox(room) == []


@pytest.mark.parametrize("version", ["1", "10"])
def test_sytest_incorrectly_signed_joins(edge, version):
    """sytest "Inbound /v1/send_join rejects incorrectly-signed joins":
    the template with origin_server_ts, "hashes": {} and no signatures:
    403 M_FORBIDDEN; a fake signature ("a" x 86): 403 M_FORBIDDEN; then
    hashed and signed properly: 200 [200, {auth_chain, state}]."""
    room = new_room(version)
    edge.load(room).start()
    view = View(room)
    j = edge.joiner
    tpl = edge.template(room, j)
    ev = copy.deepcopy(tpl)
    ev["origin_server_ts"] = now_ms()
    ev["hashes"] = {}
    if int(version) <= 2:
        ev["event_id"] = j.new_event_id()
    before = edge.digest(room)
    refused(edge, room, edge.send_join(room, j, ev, 1), 403, "M_FORBIDDEN",
            before, "unsigned")
    ev["signatures"] = {ORIGIN: {j.remote.key_id: "a" * 86}}
    refused(edge, room, edge.send_join(room, j, ev, 1), 403, "M_FORBIDDEN",
            before, "fake signature")
    j.sign(version, ev)
    send_and_check(edge, room, view, j, ev, v=1)


SIGNATURE_CASES = ["no-signatures", "empty-signatures", "fake-signature",
                   "unknown-key", "other-server-signed", "signed-then-changed",
                   "v1-template-event-id"]


@pytest.mark.parametrize("case", SIGNATURE_CASES)
def test_bad_signatures_refused(edge, case):
    """A join with the right content hash whose required signature is
    missing, not base64 of a valid signature, of a key the server does not
    publish, of another server only, or made before a change: 403
    M_FORBIDDEN. v1: a join that keeps the template's event ID ($...:our
    server) needs our server's signature too (the event ID's server):
    403."""
    version = "1" if case == "v1-template-event-id" else "10"
    room = new_room(version)
    edge.load(room).start()
    j = edge.joiner
    tpl = edge.template(room, j)
    ev = j.fill(version, tpl)
    if case == "no-signatures":
        ev.pop("signatures")
    elif case == "empty-signatures":
        ev["signatures"] = {}
    elif case == "fake-signature":
        ev["signatures"] = {ORIGIN: {j.remote.key_id: "a" * 86}}
    elif case == "unknown-key":
        j.sign(version, ev, key=j.remote.signing_key("ed25519:nokey"))
    elif case == "other-server-signed":
        j.sign(version, ev, server=ORIGIN2,
               key=edge.remotes[1].signing_key())
    elif case == "signed-then-changed":
        ev["content"]["displayname"] = "changed after signing"
        ev["hashes"] = {"sha256": mxj_room.encode_base64(
            mxj_room.content_hash(ev))}
    elif case == "v1-template-event-id":
        ev["event_id"] = tpl["event_id"]
        j.sign(version, ev)
        assert judge.server_of(ev["event_id"]) == EDGE
    before = edge.digest(room)
    for v in (2, 1):
        refused(edge, room, edge.send_join(room, j, ev, v), 403,
                "M_FORBIDDEN", before, f"{case} v{v}")


@pytest.mark.parametrize("version,status", [("4", 200), ("5", 403),
                                            ("10", 403)])
def test_signing_key_valid_at_origin_server_ts(edge, version, status):
    """v5+: the sender's key must be valid at the event's origin_server_ts
    (reference §4.6): a key valid for two more hours, an event stamped
    three hours ahead: 403 M_FORBIDDEN from v5; v1-v4 ignore
    valid_until_ts: accepted."""
    room = new_room(version)
    edge.keys.valid_until_ts = now_ms() + 2 * 3600 * 1000
    edge.load(room).start()
    view = View(room)
    tpl = edge.template(room, edge.joiner)
    ev = edge.joiner.fill(version, tpl)
    ev["origin_server_ts"] = now_ms() + 3 * 3600 * 1000
    edge.joiner.sign(version, ev)
    before = edge.digest(room)
    if status == 200:
        send_and_check(edge, room, view, edge.joiner, ev)
    else:
        refused(edge, room, edge.send_join(room, edge.joiner, ev), 403,
                "M_FORBIDDEN", before)


def test_sender_over_255_bytes(edge):
    """A sender (and state_key) of 256 bytes, of the origin: 413
    M_TOO_LARGE (a field over 255 bytes)."""
    room = new_room("10")
    edge.load(room).start()
    edge.template(room, edge.joiner)            # the key, fetched
    user = "@" + "u" * 243 + ":" + ORIGIN
    assert len(user) == 256
    ev = judge.build_join(room, user, ts=now_ms())
    ev["origin"] = ORIGIN
    edge.joiner.sign("10", ev)
    before = edge.digest(room)
    refused(edge, room, edge.send_join(room, edge.joiner, ev), 413,
            "M_TOO_LARGE", before)


def test_join_of_another_servers_user(edge):
    """sytest "rejects joins from other servers": a join of a remote.test
    user, signed by remote.test, sent (and X-Matrix signed) by
    remote2.test: 403 M_FORBIDDEN."""
    room = new_room("10")
    edge.load(room).start()
    tpl = edge.template(room, edge.joiner)
    ev = edge.joiner.fill("10", tpl)
    before = edge.digest(room)
    for v in (2, 1):
        s = edge.send_join(room, edge.joiner, ev, v,
                           sender_remote=edge.remotes[1])
        refused(edge, room, s, 403, "M_FORBIDDEN", before, f"v{v}")


@pytest.mark.parametrize("version,extra", [
    ("6", {"bad_val": 1.1}),                 # sytest
    ("10", {"big": 2 ** 53}),
    ("12", {"neg": -(2 ** 53)}),
    ("6", {"nested": {"x": [1, 2.5]}}),
], ids=["v6-float", "v10-int-too-big", "v12-int-too-small",
        "v6-nested-float"])
def test_not_canonical_json_refused(edge, version, extra):
    """sytest "Inbound: send_join rejects invalid JSON for room version
    6": a float (or an integer out of range) in content: 400 M_BAD_JSON."""
    room = new_room(version)
    edge.load(room).start()
    tpl = edge.template(room, edge.joiner)
    tpl["content"].update(extra)
    ev = edge.joiner.fill(version, tpl)
    before = edge.digest(room)
    for v in (2, 1):
        refused(edge, room, edge.send_join(room, edge.joiner, ev, v), 400,
                "M_BAD_JSON", before, f"v{v}")


def test_body_not_json(edge):
    room = new_room("10")
    edge.load(room).start()
    before = edge.digest(room)
    target = send_join_target(room.room_id, "$" + "A" * 43)
    body = b'{"type": "m.room.member", '
    rep, _ = edge.put(target, body, auth=edge.remotes[0].auth_header(
        "PUT", target, EDGE))
    # X-Matrix signs the body as JSON: it is parsed first (the contract's
    # row before authentication)
    assert_error(rep, 400, "M_NOT_JSON")
    edge.untouched(room, before)


def test_path_room_and_event_mismatch(edge):
    """room_id of the body not the path's (both rooms cached), or the
    event's ID not the path's: 400 M_BAD_JSON."""
    room, other = new_room("10"), new_room("10")
    edge.load(room, other).start()
    tpl = edge.template(room, edge.joiner)
    ev = edge.joiner.fill("10", tpl)
    b1, b2 = edge.digest(room), edge.digest(other)
    for v in (2, 1):
        s = edge.send_join(room, edge.joiner, ev, v,
                           path_room=other.room_id)
        assert_error(s.rep, 400, "M_BAD_JSON")
        s = edge.send_join(room, edge.joiner, ev, v,
                           path_eid=room.extremity_ids[0])
        assert_error(s.rep, 400, "M_BAD_JSON")
    edge.untouched(room, b1)
    edge.untouched(other, b2)
    # v1: the carried event ID is the one that counts
    room1 = new_room("1")
    edge.load(room1)
    ev1 = edge.joiner.fill("1", edge.template(room1, edge.joiner))
    b = edge.digest(room1)
    s = edge.send_join(room1, edge.joiner, ev1, 2,
                       path_eid="$other:" + ORIGIN)
    refused(edge, room1, s, 400, "M_BAD_JSON", b)


def test_body_size_limit(edge):
    """65537 bytes: 413 M_TOO_LARGE, by Content-Length and when sent
    chunked; a valid join padded with JSON whitespace to exactly 65536
    bytes is accepted and kept byte for byte."""
    room = new_room("10")
    edge.load(room).start()
    view = View(room)
    j = edge.joiner
    ev = j.fill("10", edge.template(room, j))
    canon = mxj_room.canonical(ev)
    eid = mxj_joiner.event_id("10", ev)
    target = send_join_target(room.room_id, eid)
    before = edge.digest(room)
    big = b"\n" + canon + b" " * (MAX_BODY + 1 - len(canon) - 1)
    assert len(big) == MAX_BODY + 1
    rep, auth = edge.put(target, big, joiner=j)
    refused(edge, room, Sent(target, big, auth, ev, rep, 0, 0), 413,
            "M_TOO_LARGE", before, "Content-Length")
    half = len(big) // 2
    rep = raw_exchange(edge.port, raw_request("PUT", target, auth, big,
                                              chunks=[big[:half],
                                                      big[half:]]))
    refused(edge, room, Sent(target, big, auth, ev, rep, 0, 0), 413,
            "M_TOO_LARGE", before, "chunked")
    exact = big[:-1]
    assert len(exact) == MAX_BODY
    t0 = now_ms()
    rep, auth = edge.put(target, exact, joiner=j)
    s = Sent(target, exact, auth, ev, rep, t0, now_ms())
    doc = answer_of(rep, 2)
    mxj_joiner.check_answer(room, view, ev, doc, edge.judge_keys(room))
    view.accept(doc["event"])
    (entry,) = edge.outbox(room)
    check_outbox_entry(edge, room, entry[1], s, j)


def test_chunked_join_accepted(edge):
    """A join sent with Transfer-Encoding: chunked is read whole."""
    room = new_room("10")
    edge.load(room).start()
    view = View(room)
    j = edge.joiner
    ev = j.fill("10", edge.template(room, j))
    body = mxj_joiner.body_bytes(ev)
    target = send_join_target(room.room_id, mxj_joiner.event_id("10", ev))
    auth = j.auth("PUT", target, body, EDGE)
    chunks = [body[k:k + 100] for k in range(0, len(body), 100)]
    rep = raw_exchange(edge.port, raw_request("PUT", target, auth, body,
                                              chunks=chunks))
    doc = answer_of(rep, 2)
    mxj_joiner.check_answer(room, view, ev, doc, edge.judge_keys(room))
    (entry,) = edge.outbox(room)
    assert entry[1][b"body"] == body


AUTH_CASES = ["drop-join_rules", "drop-power_levels", "drop-create",
              "add-name", "add-history_visibility", "add-other-member",
              "power_levels-twice"]


@pytest.mark.parametrize("case", AUTH_CASES)
def test_wrong_auth_events(edge, case):
    """auth_events not exactly the selection (one dropped, one added, one
    twice), signed as such: 400 M_BAD_JSON, nothing stored."""
    room = new_room("10")
    edge.load(room).start()
    j = edge.joiner
    tpl = edge.template(room, j)
    by_key = {(room.events[e]["type"], room.events[e].get("state_key")): e
              for e in tpl["auth_events"]}
    what, _, name = case.partition("-")
    if what == "drop":
        tpl["auth_events"].remove(by_key[("m.room." + name, "")])
    elif case == "power_levels-twice":
        tpl["auth_events"].append(by_key[("m.room.power_levels", "")])
    elif case == "add-other-member":
        tpl["auth_events"].append(room.state[("m.room.member",
                                              room.creator)])
    else:
        tpl["auth_events"].append(room.state[("m.room." + name, "")])
    ev = j.fill("10", tpl)
    before = edge.digest(room)
    for v in (2, 1):
        refused(edge, room, edge.send_join(room, j, ev, v), 400,
                "M_BAD_JSON", before, f"{case} v{v}")


def test_v12_create_event(edge):
    """Complement TestMSC4291RoomIDAsHashOfCreateEvent_AuthEvents...: the
    create event is in state, the room ID is "!" + its ID without "$", no
    event lists it in auth_events; a join that lists it: 400 M_BAD_JSON."""
    room = new_room("12")
    edge.load(room).start()
    view = View(room)
    assert room.room_id == "!" + room.create_id[1:]
    tpl = edge.template(room, edge.joiner2)
    bad = copy.deepcopy(tpl)
    bad["auth_events"].append(room.create_id)
    ev = edge.joiner2.fill("12", bad)
    before = edge.digest(room)
    refused(edge, room, edge.send_join(room, edge.joiner2, ev), 400,
            "M_BAD_JSON", before, "create listed")
    _, doc, got = join(edge, room, view, edge.joiner)
    assert got["state"][("m.room.create", "")] == room.create_id
    for e in [doc["event"]] + doc["state"] + doc["auth_chain"]:
        assert room.create_id not in e["auth_events"]
        if e["type"] != "m.room.create":
            assert e["room_id"] == room.room_id


def test_unauthenticated_and_acl(edge):
    """No X-Matrix: 401; a destination not ours: 401; a server the ACL
    denies: 403 M_FORBIDDEN; nothing stored, the fallback not asked."""
    room = new_room("10")
    room.add_state("m.room.server_acl", "", {"allow": ["*"],
                                             "deny": [ORIGIN2]})
    edge.load(room).start()
    ev = edge.joiner.fill("10", edge.template(room, edge.joiner))
    body = mxj_joiner.body_bytes(ev)
    target = send_join_target(room.room_id, mxj_joiner.event_id("10", ev))
    before = edge.digest(room)
    rep, _ = edge.put(target, body, auth="")
    assert_error(rep, 401, "M_UNAUTHORIZED")
    rep, _ = edge.put(target, body, auth=edge.remotes[0].auth_header(
        "PUT", target, "other.test", content=ev))
    assert_error(rep, 401, "M_UNAUTHORIZED")
    denied = Joiner(edge.remotes[1], "denied")
    tpl = copy.deepcopy(ev)
    tpl["sender"] = tpl["state_key"] = denied.user
    tpl["auth_events"] = [room.ref(e) for e in
                          judge.auth_selection(room, denied.user).values()]
    dev = denied.fill("10", tpl)
    s = edge.send_join(room, denied, dev)
    assert_error(s.rep, 403, "M_FORBIDDEN")
    edge.untouched(room, before)
    assert edge.rec.requests == []


def test_join_rate(edge):
    """matrix_join_rate 1r/m burst=2: make_join and send_join take a token
    each; the retry finds none: 429 M_LIMIT_EXCEEDED, nothing added."""
    warm = new_room("10")
    room = new_room("10")
    edge.load(warm, room).start(rate="1r/m burst=2")
    edge.template(warm, edge.joiner)        # the key, fetched once
    view = View(room)
    s, _, _ = join(edge, room, view, edge.joiner)
    before = edge.digest(room)
    rep = send(edge.port, "PUT", s.target, auth=[s.auth], body=s.body)
    assert_error(rep, 429, "M_LIMIT_EXCEEDED")
    edge.untouched(room, before)
    assert len(edge.outbox(room)) == 1


@pytest.mark.parametrize("room_seg,eid_seg", [
    ("{room}", "notanevent"),
    ("{room}", "%21notanevent%3As0.example.org"),
    ("{room}", ""),
    ("{room}", urllib.parse.quote("$" + "e" * 255, safe="")),
    (urllib.parse.quote("!" + "r" * 240 + ":s0.example.org", safe=""),
     "%24abc"),
    ("notaroom", "%24abc"),
], ids=["eid-no-sigil", "eid-room-sigil", "eid-empty", "eid-256-bytes",
        "room-256-bytes", "room-no-sigil"])
def test_invalid_path_parameter(edge, room_seg, eid_seg):
    """400 M_INVALID_PARAM before the cache decision: never the fallback,
    signed or not."""
    room = new_room("10")
    edge.load(room).start()
    target = "/_matrix/federation/v2/send_join/" + room_seg.replace(
        "{room}", urllib.parse.quote(room.room_id, safe="")) + "/" + eid_seg
    body = b'{"type":"m.room.member"}'
    for auth in ("", edge.remotes[0].auth_header("PUT", target, EDGE,
                                                 content=json.loads(body))):
        rep, _ = edge.put(target, body, auth=auth)
        assert_error(rep, 400, "M_INVALID_PARAM")
    assert edge.rec.requests == []


# -- restricted rooms (reference §2.3, §6.4) ----------------------------------

@pytest.mark.parametrize("version,rule", [("8", "restricted"),
                                          ("10", "knock_restricted"),
                                          ("12", "restricted")])
def test_restricted_join_signed_by_us(edge, version, rule):
    """The template names our authoriser; the answer's event is the join
    with our signature added (verified with signedjson against the key
    file), otherwise as sent; the outbox keeps the body as received; a
    later joiner's state holds the join as we signed it."""
    a = new_room("10")
    a.add_member(edge.joiner.user, "join")
    room = new_room(version, join_rules=restricted_rules(version,
                                                         a.room_id,
                                                         rule=rule))
    room.add_member(edge.joiner3.user, "invite", sender=room.creator)
    edge.load(a, room).start()
    view = View(room)
    s, doc, got = join(edge, room, view, edge.joiner)
    who = s.event["content"]["join_authorised_via_users_server"]
    assert judge.server_of(who) == EDGE
    assert EDGE in doc["event"]["signatures"]
    assert EDGE not in s.event.get("signatures", {})
    (entry,) = edge.outbox(room)
    check_outbox_entry(edge, room, entry[1], s, edge.joiner)
    # the invited user needs no authoriser; its state has our signed join
    _, doc3, got3 = join(edge, room, view, edge.joiner3)
    assert "join_authorised_via_users_server" not in doc3["event"]["content"]
    signed = [e for e in doc3["state"]
              if e.get("state_key") == edge.joiner.user]
    assert signed == [doc["event"]]


def _restricted_room(edge, version="10", **kw):
    a = new_room("10")
    a.add_member(edge.joiner.user, "join")
    room = new_room(version, join_rules=restricted_rules(version, a.room_id),
                    **kw)
    return a, room


def _with_authoriser(room, tpl, who):
    """The template's authoriser replaced by who, the auth events made
    the selection for it."""
    tpl = copy.deepcopy(tpl)
    tpl["content"]["join_authorised_via_users_server"] = who
    sel = judge.auth_selection(room, tpl["sender"], who)
    tpl["auth_events"] = [room.ref(e) for e in sel.values()]
    return tpl


@pytest.mark.parametrize("case", ["never-joined", "left", "no-invite-power"])
def test_restricted_authoriser_refused(edge, case):
    """The named authoriser, one of our users, is not joined (never, or
    left) or lacks the invite level: 403 M_FORBIDDEN, nothing stored."""
    pl = {"users": {"@admin:" + EDGE: 100}, "users_default": 0,
          "invite": 50}
    a, room = _restricted_room(edge, power_levels=pl)
    room.add_member("@left:" + EDGE, "join")
    room.add_member("@left:" + EDGE, "leave")
    edge.load(a, room).start()
    tpl = edge.template(room, edge.joiner)
    assert tpl["content"]["join_authorised_via_users_server"] == \
        "@admin:" + EDGE
    who = {"never-joined": "@nobody:" + EDGE, "left": "@left:" + EDGE,
           "no-invite-power": "@u3:" + EDGE}[case]
    ev = edge.joiner.fill("10", _with_authoriser(room, tpl, who))
    before = edge.digest(room)
    refused(edge, room, edge.send_join(room, edge.joiner, ev), 403,
            "M_FORBIDDEN", before)


def test_restricted_forged_by_user_in_no_allowed_room(edge):
    """A user in none of the allowed rooms (make_join: 403) builds the
    join itself, naming our authoriser: 403 M_FORBIDDEN."""
    a, room = _restricted_room(edge)
    edge.load(a, room).start()
    j2 = edge.joiner2
    assert_error(edge.make_join(room.room_id, j2.user, j2.remote), 403,
                 "M_FORBIDDEN")
    ev = judge.build_join(room, j2.user, authoriser="@admin:" + EDGE,
                          ts=now_ms())
    ev["origin"] = j2.server
    j2.sign("10", ev)
    before = edge.digest(room)
    refused(edge, room, edge.send_join(room, j2, ev), 403, "M_FORBIDDEN",
            before)


def test_restricted_allowed_room_not_cached(edge):
    """The allowed room is not in our cache and the user is not invited:
    without a fallback, a join naming our authoriser is answered as
    make_join would, 400 M_UNABLE_TO_AUTHORISE_JOIN (we cannot check the
    condition; with one, the homeserver decides: test_undecidable.py)."""
    room = new_room("10", join_rules=restricted_rules(
        "10", "!notcached:elsewhere.test"))
    edge.load(room).start(fallback=False)
    j = edge.joiner
    assert_error(edge.make_join(room.room_id, j.user, j.remote), 400,
                 "M_UNABLE_TO_AUTHORISE_JOIN")
    ev = judge.build_join(room, j.user, authoriser="@admin:" + EDGE,
                          ts=now_ms())
    ev["origin"] = j.server
    j.sign("10", ev)
    before = edge.digest(room)
    refused(edge, room, edge.send_join(room, j, ev), 400,
            "M_UNABLE_TO_AUTHORISE_JOIN", before)


def test_restricted_authoriser_not_ours(edge):
    """join_authorised_via_users_server naming another server's user (one
    who could invite): 400 M_BAD_JSON (contract; reference §2.3)."""
    pl = {"users": {"@u1:s1.example.org": 100, "@admin:" + EDGE: 100},
          "invite": 50}
    a, room = _restricted_room(edge, power_levels=pl)
    edge.load(a, room).start()
    tpl = edge.template(room, edge.joiner)
    ev = edge.joiner.fill("10", _with_authoriser(room, tpl,
                                                 "@u1:s1.example.org"))
    before = edge.digest(room)
    refused(edge, room, edge.send_join(room, edge.joiner, ev), 400,
            "M_BAD_JSON", before)


# -- faults -------------------------------------------------------------------

def _state_of_join(edge, room, user, eid):
    """"accepted" when every trace of the join is there, "absent" when
    none is, else a description of the half."""
    traces = {
        "outbox": [f[b"event_id"].decode() for _, f in edge.outbox(room)]
        == [eid],
        "member": edge.membership(room, user) == "join",
        "state": (edge.r.hget(edge.key(room, "state"), mxj_room.canonical(
            ["m.room.member", user])) or b"").decode() == eid,
        "extremity": edge.r.hexists(edge.key(room, "extrem"), eid),
    }
    if all(traces.values()):
        return "accepted"
    if not any(traces.values()):
        return "absent"
    return f"half: {traces}"


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_client_gone_after_body(edge, reset):
    """The whole request sent, the connection closed at once (FIN, or
    RST): afterwards the join is accepted completely (outbox, member,
    state, extremity) or not at all, never half; nginx logs no alert;
    the joiner's retry gets its 200 and one outbox entry in all."""
    room = new_room("10")
    edge.load(room).start()
    view = View(room)
    j = edge.joiner
    ev = j.fill("10", edge.template(room, j))
    eid = mxj_joiner.event_id("10", ev)
    body = mxj_joiner.body_bytes(ev)
    target = send_join_target(room.room_id, eid)
    auth = j.auth("PUT", target, body, EDGE)
    before = edge.digest(room)
    s = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
    s.sendall(raw_request("PUT", target, auth, body))
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
    s.close()
    seen, deadline = None, time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = _state_of_join(edge, room, j.user, eid)
        if seen == "accepted":
            break
        time.sleep(0.1)
    assert seen in ("accepted", "absent"), seen
    if seen == "absent":
        edge.untouched(room, before, "an abandoned request")
    rep = send(edge.port, "PUT", target, auth=[auth], body=body)
    doc = answer_of(rep, 2)
    mxj_joiner.check_answer(room, view, ev, doc, edge.judge_keys(room))
    assert _state_of_join(edge, room, j.user, eid) == "accepted"


@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.timeout(180)
def test_redis_killed_between_make_join_and_send_join(aof_edge, fallback):
    """Redis (AOF, fsync always) killed after make_join: the send_join is
    answered at once by a JSON 503 M_UNKNOWN, or with a fallback reaches
    it byte for byte; after Redis restarts nothing of the join is there,
    and the joiner's retry is accepted."""
    edge = aof_edge
    room = new_room("10")
    edge.load(room).start(fallback=fallback)
    view = View(room)
    j = edge.joiner
    ev = j.fill("10", edge.template(room, j))
    before = edge.digest(room)
    edge.redis.kill9()
    s = edge.send_join(room, j, ev)
    if fallback:
        assert s.rep.status == 200 and s.rep.json() == edge.rec.body, s.rep
        (req,) = edge.rec.requests
        assert (req.method, req.target, req.body) == ("PUT", s.target,
                                                      s.body)
        assert headers_named(req, "Authorization") == [s.auth]
    else:
        assert_error(s.rep, 503, "M_UNKNOWN")
    edge.redis.restart()
    edge.r = edge.redis.client()
    edge.untouched(room, before, "after the restart")
    deadline = time.monotonic() + 20
    while True:
        rep = send(edge.port, "PUT", s.target, auth=[s.auth], body=s.body)
        if rep.status == 200 and rep.json() != edge.rec.body:
            break
        assert rep.status in (200, 503), rep
        assert time.monotonic() < deadline, f"no 200 after restart: {rep}"
        time.sleep(0.3)
    doc = answer_of(rep, 2)
    mxj_joiner.check_answer(room, view, ev, doc, edge.judge_keys(room))
    assert _state_of_join(edge, room, j.user,
                          mxj_joiner.event_id("10", ev)) == "accepted"


def test_answered_join_survives_redis_crash(aof_edge):
    """docs/redis-schema.md "Durability": with appendfsync always, a join
    answered 200 is in the outbox after kill -9 and restart."""
    edge = aof_edge
    room = new_room("10")
    edge.load(room).start()
    view = View(room)
    s, _, got = join(edge, room, view, edge.joiner)
    edge.redis.kill9()
    edge.redis.restart()
    edge.r = edge.redis.client()
    assert _state_of_join(edge, room, edge.joiner.user,
                          got["event"]) == "accepted"
    (entry,) = edge.outbox(room)
    check_outbox_entry(edge, room, entry[1], s, edge.joiner)


# -- the fallback -------------------------------------------------------------

def _assert_forwarded(edge, s):
    assert s.rep.status == 200 and s.rep.json() == edge.rec.body, s.rep
    reqs = [r for r in edge.rec.requests if r.target == s.target]
    assert len(reqs) == 1, edge.rec.requests
    req = reqs[0]
    assert req.method == "PUT"
    assert req.body == s.body, "the body did not reach the fallback " \
                               "byte for byte"
    assert headers_named(req, "Authorization") == ([s.auth] if s.auth
                                                   else [])


@pytest.mark.parametrize("version", ["1", "10"])
@pytest.mark.parametrize("kind", ["unknown", "older-event", "one-unknown"])
def test_unknown_prev_event_goes_to_fallback(edge, version, kind):
    """A prev_event that is neither a forward extremity of the snapshot
    nor a join accepted here (an event the snapshot never saw, or an
    older one): the homeserver knows more, the request reaches the
    fallback unchanged, nothing is stored."""
    room = new_room(version)
    edge.load(room).start()
    j = edge.joiner
    tpl = edge.template(room, j)
    v1 = int(version) <= 2
    unknown = ["$unknownevent:s1.example.org", {"sha256": "A" * 43}] \
        if v1 else "$" + "U" * 43
    if kind == "unknown":
        tpl["prev_events"] = [unknown]
    elif kind == "one-unknown":
        tpl["prev_events"].append(unknown)
    else:
        older = room.state[("m.room.topic", "")]
        tpl["prev_events"] = [room.ref(older)]
        tpl["depth"] = room.events[older]["depth"] + 1
    ev = j.fill(version, tpl)
    before = edge.digest(room)
    s = edge.send_join(room, j, ev, query="?omit_members=false",
                       lower=True)
    _assert_forwarded(edge, s)
    edge.untouched(room, before)


def test_template_of_a_replaced_snapshot_goes_to_fallback(edge):
    """make_join, then a new snapshot is loaded (the room moved on), then
    the send_join built on the old extremities: they are no longer the
    snapshot's, so the homeserver decides (the fallback), nothing is
    stored."""
    room = new_room("10")
    edge.load(room).start()
    ev = edge.joiner.fill("10", edge.template(room, edge.joiner))
    room.fork((1, 2))
    edge.load(room)
    before = edge.digest(room)
    _assert_forwarded(edge, edge.send_join(room, edge.joiner, ev))
    edge.untouched(room, before)


def test_unknown_prev_event_without_fallback(edge):
    room = new_room("10")
    edge.load(room).start(fallback=False)
    tpl = edge.template(room, edge.joiner)
    tpl["prev_events"] = ["$" + "U" * 43]
    ev = edge.joiner.fill("10", tpl)
    before = edge.digest(room)
    refused(edge, room, edge.send_join(room, edge.joiner, ev), 400,
            "M_BAD_JSON", before)


def test_uncached_room_goes_to_fallback(edge):
    """A room the cache does not hold: the fallback, before any
    authentication, signed or not, v1 or v2."""
    cached = new_room("10")
    other = new_room("10")          # never loaded
    edge.load(cached).start()
    tpl = edge.template(cached, edge.joiner)
    tpl["room_id"] = other.room_id
    ev = edge.joiner.fill("10", tpl)
    for v in (2, 1):
        s = edge.send_join(other, edge.joiner, ev, v)
        _assert_forwarded(edge, s)
    body = mxj_joiner.body_bytes(ev)
    target = send_join_target(other.room_id, "$" + "Z" * 43)
    rep, _ = edge.put(target, body, auth="")
    _assert_forwarded(edge, Sent(target, body, "", ev, rep, 0, 0))
    assert edge.keys.count() == 1           # the make_join's key fetch


@pytest.mark.parametrize("how", ["stale", "old", "no-generation"])
def test_snapshot_not_answerable_goes_to_fallback(edge, how):
    """A snapshot marked stale, older than matrix_join_max_age, or
    loaded without send_join support (no generation): the fallback."""
    room = new_room("10")
    edge.load(room)
    meta = edge.key(room, "meta")
    http_extra = ""
    if how == "stale":
        edge.r.hset(meta, "stale", "1")
    elif how == "old":
        edge.r.hset(meta, "loaded_at", str(now_ms() - 120_000))
        http_extra = "matrix_join_max_age 60s;"
    else:
        # the generation is a field of meta (mx_schema.h), nothing else
        assert edge.r.hexists(meta, "generation"), "the load wrote none"
        edge.r.hdel(meta, "generation")
    edge.start(http_extra=http_extra)
    j = edge.joiner
    # the template as the homeserver would have made it (make_join of a
    # stale room goes to the fallback too)
    ev = judge.build_join(room, j.user, ts=now_ms())
    ev["origin"] = j.server
    j.sign("10", ev)
    before = edge.digest(room)
    s = edge.send_join(room, j, ev)
    _assert_forwarded(edge, s)
    edge.untouched(room, before)


def test_redis_down_goes_to_fallback(edge):
    room = new_room("10")
    edge.load(room).start()
    ev = edge.joiner.fill("10", edge.template(room, edge.joiner))
    edge.redis.kill9()
    for v in (2, 1):
        _assert_forwarded(edge, edge.send_join(room, edge.joiner, ev, v))
