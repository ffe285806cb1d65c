"""The module's Redis scripts (src/lua/*.lua), one by one, on a real
redis-server: each gets a small room written here by hand (no loader, no
code of ours) and must give the exact reply its header comment promises,
for the happy case and for an unhappy one (the room absent, stale, another
generation, an unknown prev_event, a conflicting event ID, ...)."""

import json
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "t" / "lib"))

import mxj_lua  # noqa: E402

pytestmark = pytest.mark.timeout(60)

ROOM = "!r:x"
P = "mxj:{" + ROOM + "}:"
# send_join's 16 keys, in the order of lib/send_join.lua
SJ_KEYS = [P + k for k in (
    "meta", "state", "member", "pdu", "extrem", "edge", "edge_pdu",
    "edge_m", "edge_old", "edge_orig", "mchunk", "state_m", "servers",
    "server_user", "outbox", "partial")]

CREATE = '{"type":"m.room.create","sender":"@creator:x","content":{}}'
PL = ('{"type":"m.room.power_levels","content":'
      '{"users":{"@admin:x":100,"@far:y":50}}}')
JR_INVITE = ('{"type":"m.room.join_rules","content":{"join_rule":"invite",'
             '"note":"restricted"}}')
JR_RESTRICTED = ('{"type":"m.room.join_rules","content":'
                 '{"join_rule":"restricted","allow":[]}}')
M_ADMIN = '{"type":"m.room.member","content":{"membership":"join"}}'
M_CREATOR = '{"type":"m.room.member","content":{"membership":"leave"}}'
M_U = '{"type":"m.room.member","content":{"membership":"join"},"u":1}'


@pytest.fixture
def r(redis_server):
    c = redis_server.client()
    yield c
    c.flushall()


def ms_now(r):
    sec, usec = r.time()
    return sec * 1000 + usec // 1000


# -- room_status --------------------------------------------------------------

STATUS_KEYS = [P + "meta", P + "extrem", P + "outbox", P + "dead"]


def test_room_status_absent_room_is_nil(r):
    assert mxj_lua.run(r, "room_status", STATUS_KEYS, ["g", ROOM]) is None


def test_room_status_cached_room(r):
    r.hset(P + "meta", "room_version", "10")
    r.hset(P + "meta", "loaded_at", "123")
    r.hset(P + "extrem", "$e", '{"depth":3,"sha256":"h"}')
    assert mxj_lua.run(r, "room_status", STATUS_KEYS, ["g", ROOM]) == [
        [b"room_version", b"10", b"loaded_at", b"123"],
        [b"$e", b'{"depth":3,"sha256":"h"}'],
        [0, 0, 0, 0], ROOM.encode()]


def test_room_status_outbox_of_a_room_no_longer_cached(r):
    r.xadd(P + "outbox", {"a": "1"}, id="1000-0")
    r.xadd(P + "outbox", {"a": "2"}, id="2000-0")
    r.xgroup_create(P + "outbox", "g", id="0")
    r.xreadgroup("g", "c", {P + "outbox": ">"}, count=1)
    r.xadd(P + "dead", {"a": "3"}, id="1-0")
    before = ms_now(r)
    meta, extrem, counts, room = mxj_lua.run(r, "room_status", STATUS_KEYS,
                                             ["g", ROOM])
    after = ms_now(r)
    assert (meta, extrem, counts[:3], room) == ([], [], [2, 1, 1],
                                                ROOM.encode())
    # the oldest entry was written at 1000 ms after the epoch
    assert before - 1000 <= counts[3] <= after - 1000


# -- make_join ----------------------------------------------------------------

MJ_KEYS = [P + k for k in ("meta", "state", "member", "pdu", "extrem",
                           "servers", "server_user")]
USER = "@j:y"
USER_FIELD = '["m.room.member","@j:y"]'


def mj_room(r, join_rules):
    r.hset(P + "meta", mapping={"room_version": "10", "loaded_at": "123",
                                "create_event_id": "$c"})
    r.hset(P + "state", mapping={
        '["m.room.create",""]': "$c",
        '["m.room.power_levels",""]': "$pl",
        '["m.room.join_rules",""]': "$jr",
        '["m.room.member","@admin:x"]': "$ma",
        '["m.room.member","@creator:x"]': "$mc",
        '["m.room.member","@u:x"]': "$mu"})
    r.hset(P + "pdu", mapping={"$c": CREATE, "$pl": PL, "$jr": join_rules,
                               "$ma": M_ADMIN, "$mc": M_CREATOR,
                               "$mu": M_U})
    r.hset(P + "member", mapping={"@admin:x": "join", "@creator:x": "leave",
                                  "@u:x": "join"})
    r.hset(P + "extrem", "$e", '{"depth":3,"sha256":"h"}')
    r.zadd(P + "servers", {"x": -2, "y": 0})
    r.hset(P + "server_user", "x", "@u:x")


def test_make_join_absent_room_is_nil(r):
    assert mxj_lua.run(r, "make_join", MJ_KEYS, [USER, "x", USER_FIELD]) \
        is None


def test_make_join_invite_room_has_no_candidates(r):
    # "restricted" appears in the event, but the rule is invite
    mj_room(r, JR_INVITE)
    assert mxj_lua.run(r, "make_join", MJ_KEYS, [USER, "x", USER_FIELD]) == [
        [b"10", b"123", None, b"$c"],
        [b"$c", b"$pl", b"$jr", None, None],
        [CREATE.encode(), PL.encode(), JR_INVITE.encode(), None, None],
        None, b"-2", [b"$e", b'{"depth":3,"sha256":"h"}'], []]


def test_make_join_restricted_room_lists_local_authorisers(r):
    mj_room(r, JR_RESTRICTED)
    r.hset(P + "member", USER, "leave")
    reply = mxj_lua.run(r, "make_join", MJ_KEYS, [USER, "x", USER_FIELD])
    assert reply[3] == b"leave"
    # the creator, our users of the power levels (not @far:y), the
    # server's listed user; each with membership, member event ID and PDU
    assert reply[6] == [
        [b"@creator:x", b"leave", b"$mc", M_CREATOR.encode()],
        [b"@admin:x", b"join", b"$ma", M_ADMIN.encode()],
        [b"@u:x", b"join", b"$mu", M_U.encode()]]


# -- join_rate ----------------------------------------------------------------

FUTURE = "99999999999999"   # a bucket time ahead of now refills nothing


def test_join_rate_takes_a_token(r):
    assert mxj_lua.run(r, "join_rate", [P + "rate"], ["0.001", "3"]) == 0
    assert r.hget(P + "rate", "tokens") == b"2"
    assert 0 < r.pttl(P + "rate") <= 1000 + 1000


def test_join_rate_empty_bucket_says_when(r):
    r.hset(P + "rate", mapping={"tokens": "0.5", "ts": FUTURE})
    # (1 - 0.5) tokens at 0.001 a ms
    assert mxj_lua.run(r, "join_rate", [P + "rate"], ["0.001", "3"]) == 500
    assert r.hget(P + "rate", "tokens") == b"0.5"


def test_join_rate_last_token(r):
    r.hset(P + "rate", mapping={"tokens": "1.5", "ts": FUTURE})
    assert mxj_lua.run(r, "join_rate", [P + "rate"], ["0.001", "3"]) == 0
    assert r.hget(P + "rate", "tokens") == b"0.5"


# -- room_membership ----------------------------------------------------------

RM_KEYS = [P + "meta", P + "member"]


def test_room_membership_absent_room(r):
    assert mxj_lua.run(r, "room_membership", RM_KEYS, [USER]) == \
        [0, None, None, None]


def test_room_membership_cached(r):
    r.hset(P + "meta", "loaded_at", "123")
    r.hset(P + "member", USER, "join")
    assert mxj_lua.run(r, "room_membership", RM_KEYS, [USER]) == \
        [1, b"join", b"123", None]
    assert mxj_lua.run(r, "room_membership", RM_KEYS, ["@no:y"]) == \
        [1, None, b"123", None]


def test_room_membership_stale(r):
    r.hset(P + "meta", mapping={"loaded_at": "123", "stale": "1"})
    r.hset(P + "member", USER, "join")
    assert mxj_lua.run(r, "room_membership", RM_KEYS, [USER]) == \
        [1, b"join", b"123", b"1"]


# -- send_join_meta -----------------------------------------------------------

META_KEYS = [P + "meta", P + "state", P + "pdu"]
ACL = '{"type":"m.room.server_acl","content":{"allow":["*"]}}'


def test_send_join_meta_absent_room(r):
    assert mxj_lua.run(r, "send_join_meta", META_KEYS) is None


def test_send_join_meta(r):
    r.hset(P + "meta", mapping={"room_version": "10", "loaded_at": "123",
                                "stale": "1", "generation": "7"})
    assert mxj_lua.run(r, "send_join_meta", META_KEYS) == \
        [[b"10", b"123", b"1", b"7"], None]
    r.hset(P + "state", '["m.room.server_acl",""]', "$acl")
    r.hset(P + "pdu", "$acl", ACL)
    assert mxj_lua.run(r, "send_join_meta", META_KEYS) == \
        [[b"10", b"123", b"1", b"7"], ACL.encode()]


# -- send_join_state ----------------------------------------------------------

def sj_room(r):
    r.hset(P + "meta", mapping={"room_version": "10", "generation": "7",
                                "create_event_id": "$c", "room_id": ROOM,
                                "max_depth": "5", "members": "1",
                                "member_events": "1", "state_events": "4",
                                "extremities": "1"})
    r.hset(P + "state", mapping={
        '["m.room.create",""]': "$c",
        '["m.room.power_levels",""]': "$pl",
        '["m.room.join_rules",""]': "$jr",
        '["m.room.member","@admin:x"]': "$ma"})
    r.hset(P + "pdu", mapping={"$c": CREATE, "$pl": PL, "$jr": JR_INVITE,
                               "$ma": M_ADMIN})
    r.hset(P + "member", "@admin:x", "join")
    r.hset(P + "extrem", "$e", '{"depth":5,"sha256":"h"}')
    r.zadd(P + "servers", {"x": -1})


def test_send_join_state_at_the_extremities(r):
    sj_room(r)
    assert mxj_lua.run(r, "send_join_state", SJ_KEYS,
                       ["7", USER, "@admin:x", '["$e"]']) == [
        b"ok", b"$c", b"$pl", b"$jr",
        CREATE.encode(), PL.encode(), JR_INVITE.encode(),
        None, None, b"$ma", M_ADMIN.encode()]


def test_send_join_state_member_event_from_the_chunk(r):
    """A member event the snapshot keeps in a chunk (mchunk position
    "chunk:offset:length:...") rather than in pdu."""
    sj_room(r)
    r.hdel(P + "pdu", "$ma")
    r.hset(P + "mchunk", "@admin:x", f"1:3:{len(M_ADMIN)}:1")
    r.rpush(P + "state_m", "first chunk", "abc" + M_ADMIN + "tail")
    reply = mxj_lua.run(r, "send_join_state", SJ_KEYS,
                        ["7", "@admin:x", "", '["$e"]'])
    assert reply[7:] == [b"$ma", M_ADMIN.encode(), None, None]


def test_send_join_state_unhappy(r):
    args = ["7", USER, "", '["$e"]']
    assert mxj_lua.run(r, "send_join_state", SJ_KEYS, args) == [b"gone"]
    sj_room(r)
    assert mxj_lua.run(r, "send_join_state", SJ_KEYS,
                       ["6", USER, "", '["$e"]']) == [b"generation"]
    assert mxj_lua.run(r, "send_join_state", SJ_KEYS,
                       ["7", USER, "", '["$e","$nope"]']) == \
        [b"unknown", b"$nope"]


# -- send_join_accept ---------------------------------------------------------

JOIN = ('{"type":"m.room.member","sender":"@j:y",'
        '"content":{"membership":"join"}}')


def accept_args(event_id="$j", generation="7", omit="0"):
    return [generation, event_id, USER, "y", "6", "hh", "0", JOIN,
            '["$e"]', omit, '["$c","$pl","$jr"]',
            "PUT", "/send_join/x", "X-Matrix k", JOIN, "y", "x", "1234", ""]


def test_send_join_accept_stores_the_join_once(r):
    sj_room(r)
    assert mxj_lua.run(r, "send_join_accept", SJ_KEYS, accept_args()) == \
        [b"ok", 1, [], [], [], None, [], []]
    # the edge record, the join, the room's new extremity and state
    assert json.loads(r.hget(P + "edge", "$j")) == \
        {"s": 1, "u": USER, "p": ["$e"]}
    assert r.hget(P + "edge", "$e") == b'{"b":1}'
    assert r.hget(P + "edge_pdu", "$j") == JOIN.encode()
    assert r.hgetall(P + "edge_m") == {USER.encode(): b"$j"}
    assert r.hgetall(P + "extrem") == {b"$j": b'{"depth":6,"sha256":"hh"}'}
    assert r.hget(P + "state", '["m.room.member","@j:y"]') == b"$j"
    assert r.hget(P + "member", USER) == b"join"
    assert r.zrange(P + "servers", 0, -1, withscores=True) == \
        [(b"x", -1.0), (b"y", -1.0)]
    assert r.hget(P + "server_user", "y") == USER.encode()
    assert r.hmget(P + "meta", "members", "member_events", "state_events",
                   "extremities", "max_depth", "edge_seq", "servers",
                   "edge_joins") == \
        [b"2", b"2", b"5", b"1", b"6", b"1", b'["x","y"]', b"1"]
    (entry,) = r.xrange(P + "outbox")
    assert entry[1] == {
        b"method": b"PUT", b"uri": b"/send_join/x",
        b"authorization": b"X-Matrix k", b"body": JOIN.encode(),
        b"origin": b"y", b"destination": b"x", b"room_id": ROOM.encode(),
        b"event_id": b"$j", b"received_ts": b"1234"}
    # the same join again: a duplicate, nothing more stored
    assert mxj_lua.run(r, "send_join_accept", SJ_KEYS, accept_args()) == \
        [b"dup", 1, [], [], [], None, [], []]
    assert r.xlen(P + "outbox") == 1
    assert r.hget(P + "meta", "members") == b"2"
    assert r.hget(P + "meta", "edge_joins") == b"1"


def test_send_join_accept_omit_members_names_the_servers(r):
    sj_room(r)
    reply = mxj_lua.run(r, "send_join_accept", SJ_KEYS,
                        accept_args(omit="1"))
    # the sender's member event at prev_events: none; the auth events
    # the join names, from pdu
    assert reply == [b"ok", 1, [], [], [], b'["x"]', [],
                     [JR_INVITE.encode(), PL.encode(), CREATE.encode()]]


def test_send_join_accept_unhappy(r):
    assert mxj_lua.run(r, "send_join_accept", SJ_KEYS, accept_args()) == \
        [b"gone"]
    sj_room(r)
    assert mxj_lua.run(r, "send_join_accept", SJ_KEYS,
                       accept_args(generation="6")) == [b"generation"]
    # an ID the snapshot holds already
    assert mxj_lua.run(r, "send_join_accept", SJ_KEYS,
                       accept_args(event_id="$pl")) == [b"conflict"]
    args = accept_args()
    args[8] = '["$nope"]'
    assert mxj_lua.run(r, "send_join_accept", SJ_KEYS, args) == \
        [b"unknown", b"$nope"]
    assert r.xlen(P + "outbox") == 0
    assert r.hlen(P + "edge") == 0


# -- state_at (matrix_state) --------------------------------------------------

def state_at_room(r):
    """A snapshot of @a:x (in the auth chain) and the create event; @j:y
    joined at the edge twice ($j1 on the snapshot's extremity $x, then $j2
    on $j1); one more server z with no member."""
    r.hset(P + "meta", mapping={"generation": "g", "room_version": "10",
                                "nm_unreferenced": "[]"})
    r.hset(P + "state", mapping={
        '["m.room.create",""]': "$c", '["m.room.member","@a:x"]': "$a",
        '["m.room.member","@j:y"]': "$j2"})
    r.hset(P + "pdu", mapping={"$c": '{"auth_events":[]}',
                               "$a": '{"auth_events":["$c"]}'})
    r.hset(P + "edge", mapping={
        "$x": '{"b":1}', "$j1": '{"s":1,"u":"@j:y","p":["$x"]}',
        "$j2": '{"s":2,"u":"@j:y","p":["$j1"]}'})
    r.hset(P + "edge_pdu", mapping={
        "$j1": '{"auth_events":["$c","$a"],"n":1}',
        "$j2": '{"auth_events":["$c","$a","$j1"],"n":2}'})
    r.hset(P + "edge_m", "@j:y", "$j2")
    r.hset(P + "extrem", "$j2", '{"depth":5,"sha256":"h"}')
    r.zadd(P + "servers", {"x": -1, "y": -1})


def state_at(r, eid, mode, origin="y", gen="g"):
    return mxj_lua.run(r, "state_at", SJ_KEYS, [gen, eid, mode, origin])


def test_state_at_ids_before_each_edge_join(r):
    state_at_room(r)
    ok, ids, auth = state_at(r, "$j2", "ids")
    assert ok == b"ok"
    assert sorted(ids) == [b"$a", b"$c", b"$j1"]     # $j1, not $j2
    assert sorted(auth) == [b"$a", b"$c"]
    ok, ids, auth = state_at(r, "$j1", "ids")
    assert sorted(ids) == [b"$a", b"$c"]             # @j:y not there yet
    assert sorted(auth) == [b"$a", b"$c"]


def test_state_at_pdus_and_a_superseded_join_in_the_auth_chain(r):
    state_at_room(r)
    assert state_at(r, "$j2", "pdus") == [
        b"ok", [b'{"auth_events":["$c","$a"],"n":1}'], [], []]
    # a later join of another user on $j2: $j2 is in its state, and the
    # superseded $j1, reached from $j2, in its auth chain
    r.hset(P + "edge", "$k", '{"s":3,"u":"@k:y","p":["$j2"]}')
    r.hset(P + "edge_pdu", "$k", '{"auth_events":["$c"],"n":3}')
    r.hset(P + "edge_m", "@k:y", "$k")
    r.hset(P + "state", '["m.room.member","@k:y"]', "$k")
    r.delete(P + "extrem")
    r.hset(P + "extrem", "$k", '{"depth":6,"sha256":"h"}')
    ok, ids, auth = state_at(r, "$k", "ids")
    assert sorted(ids) == [b"$a", b"$c", b"$j2"]
    assert sorted(auth) == [b"$a", b"$c", b"$j1"]
    ok, sx, cuts, extra = state_at(r, "$k", "pdus")
    assert sx == [b'{"auth_events":["$c","$a","$j1"],"n":2}']
    assert extra == [b'{"auth_events":["$c","$a"],"n":1}']


def test_state_at_homeserver_event_sync_applied(r):
    """A message of the homeserver on $j2, which sync applied ({"h":1}):
    the state at it (before it, the same for a non-state event) has $j2."""
    state_at_room(r)
    r.hset(P + "edge", "$m", '{"h":1,"p":["$j2"]}')
    r.delete(P + "extrem")
    r.hset(P + "extrem", "$m", '{"depth":6,"sha256":"h"}')
    ok, ids, auth = state_at(r, "$m", "ids")
    assert (ok, sorted(ids)) == (b"ok", [b"$a", b"$c", b"$j2"])
    assert sorted(auth) == [b"$a", b"$c", b"$j1"]
    assert state_at(r, "$x", "ids")[0] == b"unknown"    # {"b":1}


def test_state_at_unhappy(r):
    assert state_at(r, "$j2", "ids") == [b"gone"]
    state_at_room(r)
    assert state_at(r, "$j2", "ids", gen="other") == [b"generation"]
    assert state_at(r, "$j2", "ids", origin="z") == [b"not_in_room"]
    assert state_at(r, "$c", "ids")[0] == b"unknown"     # not an edge join
    r.hdel(P + "pdu", "$a")     # an auth event of $j1 the edge lacks
    assert state_at(r, "$j1", "ids")[0] == b"ok"    # $j1 not in its state
    assert state_at(r, "$j2", "ids")[0] == b"unknown"
    r.hset(P + "meta", "room_version", "2")
    assert state_at(r, "$j2", "ids")[0] == b"unknown"


# -- event_find (matrix_event) ------------------------------------------------

EF_KEYS = [P + "meta", P + "pdu", P + "edge_pdu", P + "state",
           P + "mevent", P + "mchunk", P + "state_m"]


def test_event_find(r):
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$e"]) is None
    r.hset(P + "meta", mapping={"loaded_at": "5", "generation": "g"})
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$e"]) is None
    e = '{"depth":3,"type":"m.room.name","content":{}}'
    r.hset(P + "pdu", "$e", e)
    # no history_visibility ever: shared
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$e"]) == \
        [e.encode(), b"5", None, b"open", None]
    j = '{"depth":9,"type":"m.room.member","state_key":"@j:y",' \
        '"content":{"membership":"join"}}'
    r.hset(P + "edge_pdu", "$j", j)
    h = '{"depth":6,"content":{"history_visibility":"joined"},' \
        '"unsigned":{"replaces_state":"$h0"}}'
    r.hset(P + "pdu", "$h", h)
    r.hset(P + "state", '["m.room.history_visibility",""]', "$h")
    # older than a history_visibility event that replaced another
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$e"])[3] == b"unknown"
    # under "joined": a user's own join, for its server only
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$j"])[3:] == \
        [b"member", b"@j:y"]
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$h"])[3] == b"unknown"
    # the room's first history_visibility event: none before it
    r.hset(P + "pdu", "$h", '{"depth":6,"content":'
                            '{"history_visibility":"joined"}}')
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$e"])[3] == b"open"
    r.hset(P + "meta", "stale", "1")
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$e"])[2] == b"1"


def test_event_find_member_event_in_the_chunks(r):
    """A member event of the snapshot's state that only the chunks hold:
    mevent names its user, mchunk where it lies in state_m."""
    r.hset(P + "meta", mapping={"loaded_at": "5", "generation": "g"})
    m1 = '{"depth":2,"type":"m.room.member","state_key":"@a:x",' \
         '"content":{"membership":"join"}}'
    m2 = '{"depth":3,"type":"m.room.member","state_key":"@b:x",' \
         '"content":{"membership":"join"}}'
    r.rpush(P + "state_m", "{}," + m1, m2)
    r.hset(P + "mchunk", mapping={"@a:x": f"0:3:{len(m1)}:0",
                                  "@b:x": f"1:0:{len(m2)}:1"})
    r.hset(P + "mevent", mapping={"$m1": "@a:x", "$m2": "@b:x",
                                  "$gone": "@c:x"})
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$m1"]) == \
        [m1.encode(), b"5", None, b"open", None]
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$m2"])[0] == m2.encode()
    # a user without an mchunk entry, an event mevent does not name
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$gone"]) is None
    assert mxj_lua.run(r, "event_find", EF_KEYS, ["$m3"]) is None
