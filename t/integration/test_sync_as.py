"""matrix-join-ctl sync's Application Service listener (docs/sync.md,
"Pushed changes"), the unhappy paths: the requests are sent here byte for
byte as each homeserver sends them (Synapse 1.67: the legacy path and the
access_token parameter; Synapse 1.90 and later, Dendrite: the v1 path and
the Bearer header; conduwuit: both token places), with wrong and missing
tokens, a transaction sent twice, a body over the limit, garbage, a slow
client, a burst of 1,000 transactions while Redis is paused, a push for a
room sync does not manage, the queries, and the registration read back by
python3-yaml.

What the listener did is observed outside it: the room's P{R}:meta in the
real redis-server (stale, or a new generation from the pass a push
started), the requests the stand-in homeserver (t/lib/mxj_homeserver.py)
received, and the lines sync logs for each transaction acted on. The
expected values come from the requests sent here."""

import http.client
import json
import re
import socket
import time
import urllib.parse

import pytest
import yaml

from mxj_nginx import free_port
from mxj_redis import RedisServer
from test_sync import (REMOTE, daemons, hs_factory, key,  # noqa: F401
                       meta_of, wait_for)

pytestmark = pytest.mark.timeout(240)

TXN_V1 = "/_matrix/app/v1/transactions/"
TXN_LEGACY = "/transactions/"
BODY_MAX = 8 * 1024 * 1024


class Listener:
    """sync --every 1h with the Application Service, its first pass done."""

    def __init__(self, redis_server, hs, daemons, tmp_path, *rooms,
                 reg_text=None):
        self.hs = hs
        self.client = redis_server.client()
        self.port = free_port()
        self.reg_path = tmp_path / "registration.yaml"
        if reg_text is not None:
            self.reg_path.write_text(reg_text)
        self.rooms = [r.room_id for r in rooms] or [hs.room.room_id]
        self.d = daemons(redis_server, hs, tmp_path, "--every", "1h",
                         "--appservice-listen", f"127.0.0.1:{self.port}",
                         "--registration", self.reg_path,
                         *self.rooms).start()
        for rid in self.rooms:
            wait_for("the first pass", lambda: meta_of(self.client, rid)
                     .get("generation") or not self.d.running(), 60)
        assert self.d.running(), self.d.log()
        self.reg = yaml.safe_load(self.reg_path.read_text())
        self.token = self.reg["hs_token"]

    def request(self, method, path, body=None, headers=None, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.port,
                                       timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def push(self, events, txn, path=TXN_V1, where="header", token=None,
             extra=None):
        token = self.token if token is None else token
        target = path + urllib.parse.quote(str(txn), safe="")
        headers = {"Content-Type": "application/json"}
        if where in ("header", "both"):
            headers["Authorization"] = f"Bearer {token}"
        if where in ("query", "both"):
            target += "?access_token=" + urllib.parse.quote(token, safe="")
        body = {"events": events}
        body.update(extra or {})
        return self.request("PUT", target, json.dumps(body).encode(),
                            headers)

    def meta(self, rid=None):
        return meta_of(self.client, rid or self.rooms[0])

    def log(self):
        return self.d.err_path.read_text(errors="replace")

    def marked(self, txn):
        """The log lines of txn's events marked stale."""
        return [ln for ln in self.log().splitlines()
                if f"txn={txn} " in ln and "marked stale" in ln]

    def wait_marked(self, rid, gen, timeout=10):
        """The room stale, or already reloaded by the pass a push started."""
        wait_for("stale or reloaded", lambda: self.meta(rid).get("stale")
                 == "1" or self.meta(rid).get("generation") != gen, timeout,
                 step=0.005)


def rules(room_id, sender, tag, eid):
    """A join rules event (a state event that takes a pass: member events
    go to the per-event advance, test_live.py); tag only tells them
    apart."""
    return {"event_id": eid, "type": "m.room.join_rules", "state_key": "",
            "sender": sender,
            "content": {"join_rule": "public", "tag": tag},
            "room_id": room_id, "origin_server_ts": 1}


def ban(room_id, sender, user, eid):
    return {"event_id": eid, "type": "m.room.member", "state_key": user,
            "sender": sender, "content": {"membership": "ban"},
            "room_id": room_id, "origin_server_ts": 1}


def message(room_id, sender, eid):
    return {"event_id": eid, "type": "m.room.message", "sender": sender,
            "content": {"msgtype": "m.text", "body": "hi"},
            "room_id": room_id, "origin_server_ts": 1}


def errcode(body):
    return json.loads(body).get("errcode")


@pytest.fixture
def listener(redis_server, hs_factory, daemons, tmp_path):  # noqa: F811
    hs = hs_factory(members=20, servers=3)
    return Listener(redis_server, hs, daemons, tmp_path)


# -- the registration ---------------------------------------------------------

def test_registration_claims_the_rooms(redis_server, hs_factory, daemons,
                                       tmp_path):
    """Written by libyaml, read back by python3-yaml: every field Synapse
    requires, and each managed room claimed through a non-exclusive regex
    that matches that room ID alone (its '.' escaped)."""
    hs = hs_factory(members=10, servers=2)
    other = hs.new_room(members=5, servers=2, seed=7)
    ls = Listener(redis_server, hs, daemons, tmp_path, hs.room, other)
    reg = ls.reg
    assert set(reg) == {"id", "url", "as_token", "hs_token",
                        "sender_localpart", "rate_limited", "namespaces"}
    assert reg["id"] == "matrix-join-sync"
    assert reg["url"] == f"http://127.0.0.1:{ls.port}"
    assert reg["sender_localpart"] == "matrix-join-sync"
    assert reg["rate_limited"] is False
    for t in ("as_token", "hs_token"):
        assert re.fullmatch(r"[0-9a-f]{64}", reg[t]), reg
    assert reg["as_token"] != reg["hs_token"]
    ns = reg["namespaces"]
    assert ns["users"] == [] and ns["aliases"] == []
    assert len(ns["rooms"]) == 2
    rooms = [hs.room.room_id, other.room_id]
    for rid, n in zip(rooms, ns["rooms"]):
        assert n["exclusive"] is False, n
        assert re.fullmatch(n["regex"], rid), (n, rid)
        assert "." in rid
        assert not re.fullmatch(n["regex"], rid.replace(".", "x")), n
        assert not re.fullmatch(n["regex"], rid + "x"), n
        assert not re.fullmatch(n["regex"], "x" + rid), n
        others = [r for r in rooms if r != rid]
        assert not any(re.fullmatch(n["regex"], r) for r in others)
    assert ls.reg_path.stat().st_mode & 0o777 == 0o600


def test_registration_tokens_kept_from_a_hand_written_file(
        redis_server, hs_factory, daemons, tmp_path):
    """A registration already there, written by hand (double-quoted and
    plain scalars, comments, keys in another order): its tokens are kept."""
    hs = hs_factory(members=10, servers=2)
    text = ("# the operator's\n"
            "namespaces:\n  users: []\n"
            "hs_token: \"hs-Token.1\"   # secret\n"
            "id: matrix-join-sync\n"
            "as_token: as-token-2\n")
    ls = Listener(redis_server, hs, daemons, tmp_path, reg_text=text)
    assert ls.reg["as_token"] == "as-token-2"
    assert ls.reg["hs_token"] == "hs-Token.1"
    room = hs.room
    gen = ls.meta()["generation"]
    st, body = ls.push([rules(room.room_id, room.creator, "@a:" + REMOTE,
                            "$a")], "t1")
    assert (st, json.loads(body)) == (200, {})
    ls.wait_marked(room.room_id, gen)


# -- as each homeserver sends it ----------------------------------------------

@pytest.mark.parametrize("path,where", [
    (TXN_LEGACY, "query"),          # Synapse 1.67
    (TXN_LEGACY, "both"),           # Synapse 1.71 to 1.80
    (TXN_V1, "header"),             # Synapse 1.90+, Dendrite
    (TXN_V1, "both"),               # conduwuit, Dendrite legacy_auth
])
def test_a_state_event_marks_the_room_stale(listener, path, where):
    room = listener.hs.room
    gen = listener.meta()["generation"]
    st, body = listener.push([rules(room.room_id, room.creator,
                                  "@b:" + REMOTE, "$b1")], "7", path=path,
                             where=where,
                             extra={"de.sorunome.msc2409.ephemeral": [],
                                    "ephemeral": []})
    assert (st, json.loads(body)) == (200, {})
    listener.wait_marked(room.room_id, gen)
    wait_for("the log line", lambda: len(listener.marked("7")) == 1, 10)


def test_a_message_goes_to_the_advance(listener):
    """A message is not marked as a state event is: it is queued for the
    per-event advance (test_live.py), which asks /event for it; this one
    the homeserver does not have, so the room is stale and synced."""
    room = listener.hs.room
    st, body = listener.push([message(room.room_id, room.creator, "$m")],
                             "m1", path=TXN_LEGACY, where="query")
    assert (st, json.loads(body)) == (200, {})
    wait_for("the advance gave up", lambda: re.search(
        rf"room={re.escape(room.room_id)} stale: /event/\$m: 404",
        listener.log()), 10)
    assert listener.marked("m1") == []


def test_a_ban_goes_to_the_advance(listener):
    """A ban is not marked for a pass either: it is queued for the
    advance, which applies member events in place (test_live.py) and asks
    /event for it; this one the homeserver does not have, so the room is
    stale and synced."""
    room = listener.hs.room
    st, body = listener.push([ban(room.room_id, room.creator,
                                  "@banned:" + REMOTE, "$bx")],
                             "b1", path=TXN_LEGACY, where="query")
    assert (st, json.loads(body)) == (200, {})
    wait_for("the advance gave up", lambda: re.search(
        rf"room={re.escape(room.room_id)} stale: /event/\$bx: 404",
        listener.log()), 10)
    assert listener.marked("b1") == []


@pytest.mark.parametrize("where,token,status,code", [
    ("header", "wrong", 403, "M_FORBIDDEN"),
    ("query", "wrong", 403, "M_FORBIDDEN"),
    ("none", None, 401, "M_UNAUTHORIZED"),
])
def test_wrong_or_no_token_refused(listener, where, token, status, code):
    room = listener.hs.room
    for path in (TXN_V1, TXN_LEGACY):
        st, body = listener.push([rules(room.room_id, room.creator,
                                      "@c:" + REMOTE, "$c")], "w" + path[1],
                                 path=path, where=where, token=token)
        assert (st, errcode(body)) == (status, code), body
    time.sleep(0.5)
    assert "stale" not in listener.meta()
    assert listener.marked("w_") == [] and listener.marked("wt") == []


def test_both_tokens_must_match(listener):
    room = listener.hs.room
    ev = [rules(room.room_id, room.creator, "@d:" + REMOTE, "$d")]
    target = TXN_V1 + "both1?access_token=wrong"
    st, body = listener.request("PUT", target,
                                json.dumps({"events": ev}).encode(),
                                {"Authorization": f"Bearer {listener.token}"})
    assert (st, errcode(body)) == (403, "M_FORBIDDEN")
    target = TXN_V1 + "both1?access_token=" + listener.token
    st, body = listener.request("PUT", target,
                                json.dumps({"events": ev}).encode(),
                                {"Authorization": "Bearer wrong"})
    assert (st, errcode(body)) == (403, "M_FORBIDDEN")
    st, body = listener.request("PUT", TXN_V1 + "both1",
                                json.dumps({"events": ev}).encode(),
                                {"Authorization": "Basic "
                                 + listener.token})
    assert (st, errcode(body)) == (403, "M_FORBIDDEN")
    time.sleep(0.3)
    assert "stale" not in listener.meta()


def test_the_same_txn_twice_done_once(listener):
    room = listener.hs.room
    hs = listener.hs
    ev = [rules(room.room_id, room.creator, "@e:" + REMOTE, "$e")]
    gen = listener.meta()["generation"]
    st, body = listener.push(ev, "dup", path=TXN_LEGACY, where="query")
    assert (st, json.loads(body)) == (200, {})
    listener.wait_marked(room.room_id, gen)
    wait_for("its pass", lambda: "stale" not in listener.meta()
             and listener.meta()["generation"] != gen, 60)
    gen = listener.meta()["generation"]
    mark = hs.mark()
    # again, as a homeserver retries (the same txn, the same events), by
    # the other path and token place: the same transaction all the same
    for path, where in ((TXN_LEGACY, "query"), (TXN_V1, "header")):
        st, body = listener.push(ev, "dup", path=path, where=where)
        assert (st, json.loads(body)) == (200, {})
    time.sleep(1.0)
    assert len(listener.marked("dup")) == 1, listener.log()
    assert "stale" not in listener.meta()
    assert listener.meta()["generation"] == gen
    assert hs.hits_since(mark) == []
    assert listener.log().count("txn=dup again") == 2


def test_not_json_refused_and_not_remembered(listener):
    room = listener.hs.room
    h = {"Authorization": f"Bearer {listener.token}"}
    st, body = listener.request("PUT", TXN_V1 + "nj", b"{not json", h)
    assert (st, errcode(body)) == (400, "M_NOT_JSON")
    st, body = listener.request("PUT", TXN_V1 + "nj", b"[]", h)
    assert (st, errcode(body)) == (400, "M_BAD_JSON")
    st, body = listener.request("PUT", TXN_V1 + "nj", b'{"events": {}}', h)
    assert (st, errcode(body)) == (400, "M_BAD_JSON")
    # the homeserver's next try, well-formed, is acted on
    gen = listener.meta()["generation"]
    st, body = listener.push([rules(room.room_id, room.creator,
                                  "@f:" + REMOTE, "$f")], "nj")
    assert (st, json.loads(body)) == (200, {})
    listener.wait_marked(room.room_id, gen)


def test_a_room_not_managed_is_ignored(listener):
    room = listener.hs.room
    other = "!notmanaged:" + listener.hs.name
    st, body = listener.push([rules(other, room.creator, "@g:" + REMOTE,
                                  "$g")], "nm")
    assert (st, json.loads(body)) == (200, {})
    wait_for("the log line", lambda: "txn=nm: 1 event of rooms not managed "
             "here ignored" in listener.log(), 10)
    assert listener.client.exists(key(other, "meta")) == 0
    assert listener.client.keys("*notmanaged*") == []
    assert "stale" not in listener.meta()


def test_a_body_over_the_limit(listener):
    """Read to its end, not kept: answered {} (a 413 would have the
    homeserver send it again for ever), and every managed room marked
    stale and synced instead, as nothing it held can be looked at."""
    room = listener.hs.room
    gen = listener.meta()["generation"]
    pad = "x" * (BODY_MAX + 1024)
    st, body = listener.push([message(room.room_id, room.creator, "$p")],
                             "big", extra={"pad": pad})
    assert (st, json.loads(body)) == (200, {})
    listener.wait_marked(room.room_id, gen)
    assert "txn=big over the body limit" in listener.log()
    # refused at its head without the token: the body is never read (the
    # answer comes before any of it is sent)
    s = socket.create_connection(("127.0.0.1", listener.port), timeout=30)
    s.sendall(b"PUT /transactions/big2?access_token=wrong HTTP/1.1\r\n"
              b"Host: x\r\nContent-Length: %d\r\n\r\n" % len(pad))
    out = read_all(s)
    s.close()
    assert out.startswith(b"HTTP/1.1 403 "), out
    assert b'"M_FORBIDDEN"' in out


def test_queries_answered_as_claiming_nothing(listener):
    h = {"Authorization": f"Bearer {listener.token}"}
    q = "?access_token=" + listener.token
    for target, hh in (("/_matrix/app/v1/users/%40x%3Ahs", h),
                       ("/_matrix/app/v1/rooms/%23x%3Ahs", h),
                       ("/users/%40x%3Ahs" + q, {}),
                       ("/rooms/%23x%3Ahs" + q, {})):
        st, body = listener.request("GET", target, headers=hh)
        assert (st, errcode(body)) == (404, "M_NOT_FOUND"), target
    st, body = listener.request("GET", "/users/%40x%3Ahs")
    assert (st, errcode(body)) == (401, "M_UNAUTHORIZED")


def test_other_paths_and_methods(listener):
    h = {"Authorization": f"Bearer {listener.token}"}
    for target in ("/", "/_matrix/app/v1/transactions/", "/transactions/a/b",
                   "/_matrix/app/v1/thirdparty/protocol/irc",
                   "/_matrix/app/v2/transactions/1"):
        st, body = listener.request("PUT", target, b"{}", h)
        assert (st, errcode(body)) == (404, "M_UNRECOGNIZED"), target
    for method, target in (("GET", TXN_V1 + "1"), ("POST", TXN_LEGACY + "1"),
                           ("DELETE", TXN_V1 + "1"),
                           ("GET", "/_matrix/app/v1/ping")):
        st, body = listener.request(method, target, None, h)
        assert (st, errcode(body)) == (405, "M_UNRECOGNIZED"), target
    st, body = listener.request("POST", "/_matrix/app/v1/ping",
                                b'{"transaction_id": "p"}', h)
    assert (st, json.loads(body)) == (200, {})


# -- garbage and slow clients -------------------------------------------------

def read_all(s):
    out = b""
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            return out
        if not b:
            return out
        out += b


def still_serves(listener, txn):
    room = listener.hs.room
    st, body = listener.push([message(room.room_id, room.creator, "$s")],
                             txn)
    assert (st, json.loads(body)) == (200, {})


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
    b"\x00\xff\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"PUT /transactions/1 HTTP/9.9\r\n\r\n",
])
def test_garbage_is_closed(listener, garbage):
    """Bytes that are no HTTP/1.x request: the connection is closed (with
    a 400, or without an answer once the client falls silent), and the
    listener serves the homeserver as before."""
    s = socket.create_connection(("127.0.0.1", listener.port), timeout=30)
    t0 = time.monotonic()
    s.sendall(garbage)
    out = read_all(s)
    s.close()
    print(f"\n{garbage[:12]!r}...: {out[:40]!r}, closed after "
          f"{(time.monotonic() - t0) * 1000:.0f} ms")
    assert out == b"" or re.match(rb"HTTP/1\.[01] (400|505) ", out), out
    still_serves(listener, "after-garbage")


def test_slow_client_closed(listener):
    """A client that sends half a head and falls silent is closed by the
    listener (libmicrohttpd's idle timeout); meanwhile, and after, the
    homeserver's transactions are answered."""
    s = socket.create_connection(("127.0.0.1", listener.port), timeout=60)
    s.sendall(b"PUT /transactions/slow HTTP/1.1\r\nHost: x\r\n")
    still_serves(listener, "during-slow")
    assert read_all(s) == b""
    s.close()
    # a body that stops half way: closed as well, nothing acted on
    s = socket.create_connection(("127.0.0.1", listener.port), timeout=60)
    s.sendall(b"PUT /transactions/slow2?access_token=" +
              listener.token.encode() +
              b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"ev")
    assert read_all(s) == b""
    s.close()
    still_serves(listener, "after-slow")
    assert listener.marked("slow2") == []


# -- a burst ------------------------------------------------------------------

def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise AssertionError(field)


def test_a_burst_of_1000_while_redis_is_paused(listener):
    """1,000 transactions, each with a join rules event, sent while Redis is paused (the
    worker cannot mark anything, so the queue fills): every one answered
    {} at once, none silently dropped (each either acted on, or logged as
    not queued with its room marked stale instead), the memory bounded."""
    room = listener.hs.room
    pid = listener.d.proc.pid
    rss0 = rss_kib(pid)
    admin = listener.client
    admin.execute_command("CLIENT", "PAUSE", "4000", "ALL")
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", listener.port, timeout=30)
    answers = []
    for i in range(1000):
        ev = [rules(room.room_id, room.creator, f"@burst{i}:" + REMOTE,
                  f"$burst{i}")]
        c.request("PUT", TXN_V1 + f"burst-{i}",
                  json.dumps({"events": ev}).encode(),
                  {"Authorization": f"Bearer {listener.token}",
                   "Content-Type": "application/json"})
        r = c.getresponse()
        answers.append((r.status, r.read()))
    c.close()
    sent_s = time.monotonic() - t0
    assert all(a == (200, b"{}") for a in answers), \
        [a for a in answers if a != (200, b"{}")][:3]
    print(f"\n1000 transactions answered in {sent_s * 1000:.0f} ms "
          f"(Redis paused 4 s)")
    assert sent_s < 4.0, "the burst outlasted the pause: the queue was " \
        "never full, the test proves less than it says"

    def accounted():
        log = listener.log()
        done = set(re.findall(r"txn=(burst-\d+) room=\S+ m\.room\.join_rules"
                              r" : marked stale", log))
        skipped = set(re.findall(r"txn=(burst-\d+) not queued", log))
        return done, skipped
    wait_for("every transaction accounted for", lambda: len(
        set.union(*accounted())) == 1000, 120, step=0.1)
    done, skipped = accounted()
    assert done & skipped == set()
    assert len(skipped) > 0 and len(done) <= 128 + 1, (len(done),
                                                       len(skipped))
    wait_for("the room marked for what was not queued", lambda:
             f"room={room.room_id} marked stale, a pass started (for "
             f"pushes not looked at)" in listener.log(), 30)
    grown = rss_kib(pid, "VmHWM") - rss0
    print(f"peak RSS grew by {grown} KiB, {len(done)} transactions acted "
          f"on, {len(skipped)} not queued (their room synced instead)")
    assert grown < 64 * 1024, grown
    assert listener.d.running(), listener.log()[-2000:]


# -- Redis down ---------------------------------------------------------------

def test_redis_down_the_room_marked_once_it_is_back(hs_factory, daemons,
                                                   tmp_path):  # noqa: F811
    """A state event pushed while Redis is down: answered {} all the same (the
    answer never waits for Redis), and the room kept to be marked until
    Redis is back (its data kept by the AOF), then marked stale."""
    rs = RedisServer(aof=True).start()
    try:
        hs = hs_factory(members=10, servers=2)
        ls = Listener(rs, hs, daemons, tmp_path)
        room = hs.room
        gen = ls.meta()["generation"]
        rs.kill9()
        st, body = ls.push([rules(room.room_id, room.creator,
                                "@h:" + REMOTE, "$h")], "down1")
        assert (st, json.loads(body)) == (200, {})
        wait_for("the failed mark logged", lambda: f"txn=down1 room="
                 f"{room.room_id} m.room.join_rules: Redis failed"
                 in ls.log(), 30)
        assert ls.marked("down1") == []
        rs.restart()
        ls.wait_marked(room.room_id, gen, 30)
        wait_for("marked once Redis is back", lambda: f"room={room.room_id}"
                 f" marked stale, a pass started (for pushes not looked "
                 f"at)" in ls.log(), 30)
        assert ls.meta().get("generation") is not None
        assert ls.d.running(), ls.log()[-2000:]
    finally:
        rs.cleanup()
