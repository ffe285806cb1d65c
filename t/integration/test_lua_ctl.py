"""The Redis scripts matrix-join-ctl runs (src/lua), one by one on a real
redis-server, by their own text: the exact replies and what each leaves
in Redis, with one unhappy case each."""

import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_py

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "t" / "lib"))

import mxj_lua  # noqa: E402
from mxj_nginx import CTL  # noqa: E402


@pytest.fixture
def r(redis_server):
    return redis_py.Redis(host="127.0.0.1", port=redis_server.port)


# -- lock_take, lock_release: forward's room lease, load's lock ---------------

def test_lock_take_takes_renews_and_refuses(r):
    assert mxj_lua.run(r, "lock_take", ["L"], ["me", "60000"]) == 1
    assert r.get("L") == b"me"
    assert 59000 < r.pttl("L") <= 60000
    r.pexpire("L", 5000)
    assert mxj_lua.run(r, "lock_take", ["L"], ["me", "60000"]) == 1
    assert r.pttl("L") > 5000                      # renewed
    # unhappy: another holder's lease is left alone
    assert mxj_lua.run(r, "lock_take", ["L"], ["you", "60000"]) == 0
    assert r.get("L") == b"me"


def test_lock_release_drops_only_ours(r):
    r.set("L", "me")
    # unhappy: another token does not drop it
    assert mxj_lua.run(r, "lock_release", ["L"], ["you"]) == 0
    assert r.get("L") == b"me"
    assert mxj_lua.run(r, "lock_release", ["L"], ["me"]) == 1
    assert r.exists("L") == 0
    assert mxj_lua.run(r, "lock_release", ["L"], ["me"]) == 0


# -- forward_leave, forward_dead ----------------------------------------------

def test_forward_leave_drops_an_idle_consumer_only(r):
    r.xadd("o", {"a": "1"})
    r.xgroup_create("o", "g", id="0")
    r.xreadgroup("g", "busy", {"o": ">"}, count=1)
    r.xgroup_createconsumer("o", "g", "idle")
    # unhappy: a consumer with a pending entry stays
    assert mxj_lua.run(r, "forward_leave", ["o"], ["g", "busy"]) == 0
    assert mxj_lua.run(r, "forward_leave", ["o"], ["g", "idle"]) == 0
    names = sorted(c["name"] for c in r.xinfo_consumers("o", "g"))
    assert names == [b"busy"]


def test_forward_dead_moves_the_entry_and_marks_the_room_stale(r):
    r.xgroup_create("o", "g", id="0", mkstream=True)
    eid = r.xadd("o", {"event_id": "$e", "body": "{}"})
    r.xreadgroup("g", "c", {"o": ">"}, count=1)
    r.hset("m", "generation", "x")
    assert mxj_lua.run(r, "forward_dead", ["o", "d", "m"],
                       ["g", eid, "event_id", "$e", "status", "403"]) == 1
    assert r.xlen("o") == 0
    assert r.xpending("o", "g")["pending"] == 0
    dead = r.xrange("d")
    assert [f for _, f in dead] == [{b"event_id": b"$e", b"status": b"403"}]
    assert r.hgetall("m") == {b"generation": b"x", b"stale": b"1"}


def test_forward_dead_creates_no_meta_for_an_unknown_room(r):
    r.xgroup_create("o", "g", id="0", mkstream=True)
    eid = r.xadd("o", {"event_id": "$e"})
    assert mxj_lua.run(r, "forward_dead", ["o", "d", "m"],
                       ["g", eid, "event_id", "$e"]) == 1
    assert r.exists("m") == 0
    assert r.xlen("d") == 1


# -- meta_stale, sync_fresh, sync_read ---------------------------------------

def test_meta_stale_marks_only_a_known_room(r):
    # unhappy: no meta, no room: nothing is created
    assert mxj_lua.run(r, "meta_stale", ["m"]) == 0
    assert r.exists("m") == 0
    r.hset("m", "generation", "x")
    assert mxj_lua.run(r, "meta_stale", ["m"]) == 1
    assert r.hgetall("m") == {b"generation": b"x", b"stale": b"1",
                              b"stale_reason": b"marked"}
    # the reason given is kept (matrix_status and show print it)
    assert mxj_lua.run(r, "meta_stale", ["m"], ["pushed m.room.member ban"]) \
        == 1
    assert r.hget("m", "stale_reason") == b"pushed m.room.member ban"


def test_sync_fresh_touches_only_the_generation_read(r):
    r.hset("m", mapping={"generation": "g1", "loaded_at": "5"})
    # unhappy: another load replaced the generation
    assert mxj_lua.run(r, "sync_fresh", ["m"], ["g0"]) == 0
    assert r.hget("m", "loaded_at") == b"5"
    sec, usec = r.time()
    assert mxj_lua.run(r, "sync_fresh", ["m"], ["g1"]) == 1
    at = int(r.hget("m", "loaded_at"))
    assert sec * 1000 + usec // 1000 <= at <= (sec + 5) * 1000


def test_sync_read_copies_the_edge_and_reads_one_generation(r):
    r.hset("m", mapping={"generation": "g1"})
    r.hset("su", mapping={"hs.example": "@u:hs.example"})
    r.hset("ep", mapping={"$a": '{"x":1}', "$b": '{"x":2}'})
    r.hset("un", mapping={"$b": '{"passes":3,"pdu":{"x":2}}'})
    r.hset("dl", mapping={"$c": "7"})
    r.xadd("ob", {"room_id": "!r", "event_id": "$a"})
    r.xadd("ob", {"event_id": "$d", "body": "{}"})
    meta, user, unconfirmed, delivered, ids = mxj_lua.run(
        r, "sync_read", ["m", "su", "ep", "un", "dl", "ob"], ["hs.example"])
    assert meta == [b"generation", b"g1"]
    assert user == b"@u:hs.example"
    assert dict(zip(unconfirmed[::2], unconfirmed[1::2])) == {
        b"$a": b'{"passes":0,"pdu":{"x":1}}',
        b"$b": b'{"passes":3,"pdu":{"x":2}}'}       # HSETNX: kept
    assert delivered == [b"$c", b"7"]
    assert ids == [b"$a", b"$d"]


def test_sync_read_of_an_unknown_server(r):
    # unhappy: nothing stored, no user for the name: empty, not nil
    assert mxj_lua.run(r, "sync_read", ["m", "su", "ep", "un", "dl", "ob"],
                       ["hs.example"]) == [[], b"", [], [], []]
    assert r.keys("*") == []


# -- load_switch --------------------------------------------------------------

def _staged(r, n):
    for i in range(n):
        r.set(f"cur{i}", f"old{i}")
        r.set(f"load{i}", f"new{i}")
        r.set(f"old{i}", "older")
    r.set("lock", "tok")


def _keys(n, edge=False):
    return ([f"cur{i}" for i in range(n)] + [f"load{i}" for i in range(n)]
            + [f"old{i}" for i in range(n)] + ["lock"]
            + (["un"] if edge else []))


def test_load_switch_renames_every_generation(r):
    _staged(r, 2)
    r.delete("cur0", "load0", "load1")  # load1: an empty staged list
    r.hset("cur0", "schema", "1")       # the meta comes first
    r.hset("load0", mapping={"schema": "1", "generation": "g2"})
    sec, _ = r.time()
    assert mxj_lua.run(r, "load_switch", _keys(2), ["tok"]) == 1
    assert r.hget("cur0", "generation") == b"g2"
    assert sec * 1000 <= int(r.hget("cur0", "loaded_at"))
    assert r.hgetall("old0") == {b"schema": b"1"}
    assert r.exists("cur1") == 0        # absent staging: absent current
    assert r.get("old1") == b"old1"
    assert r.exists("load0", "load1") == 0


def test_load_switch_copies_the_edge_joins(r):
    _staged(r, 2)
    r.delete("cur0", "load0")
    r.hset("load0", "generation", "g2")
    r.delete("cur1")
    r.hset("cur1", mapping={"$a": '{"x":1}'})   # the current edge_pdu
    r.hset("un", mapping={"$b": "kept"})
    assert mxj_lua.run(r, "load_switch", _keys(2, edge=True),
                       ["tok", "2", "<", ">"]) == 1
    assert r.hgetall("un") == {b"$a": b'<{"x":1}>', b"$b": b"kept"}


def test_load_switch_refuses_a_lock_no_longer_ours(r):
    _staged(r, 2)
    r.set("lock", "other")
    with pytest.raises(redis_py.ResponseError,
                       match="the load lock is no longer ours"):
        mxj_lua.run(r, "load_switch", _keys(2), ["tok"])
    assert r.get("cur0") == b"old0"     # nothing moved
    assert r.get("load0") == b"new0"


def test_load_switch_refuses_a_missing_staging_meta(r):
    _staged(r, 2)
    r.delete("load0")
    with pytest.raises(redis_py.ResponseError,
                       match="the staging meta key is missing"):
        mxj_lua.run(r, "load_switch", _keys(2), ["tok"])
    assert r.get("cur1") == b"old1"


# -- outbox_count (matrix-join-ctl outbox) ------------------------------------

def test_outbox_count_of_a_dead_letter_stream_only(r):
    r.xadd("d", {"a": "1"})
    assert mxj_lua.run(r, "outbox_count", ["o", "d"], ["g"]) == [1, 0, 0, 1, 0]


def test_outbox_count_without_the_group(r):
    # unhappy: an outbox the forwarder never read: XPENDING fails, 0 in flight
    r.xadd("o", {"a": "1"})
    exists, pending, inflight, dead, age = \
        mxj_lua.run(r, "outbox_count", ["o", "d"], ["g"])
    assert (exists, pending, inflight, dead) == (1, 1, 0, 0)
    assert age >= 0


# -- how the CLI runs them: EVALSHA, EVAL after NOSCRIPT ----------------------

def _calls(r, command):
    return r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


def test_the_cli_runs_scripts_by_sha1_and_sends_the_text_once(redis_server, r):
    r.set("mxj:schema", "1")
    r.sadd("mxj:outbox:rooms", "!a:x")
    r.xadd("mxj:{!a:x}:outbox", {"event_id": "$e"})
    r.script_flush()
    r.config_resetstat()

    def outbox():
        p = subprocess.run([str(CTL), "outbox", "--redis",
                            redis_server.address], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines()[0].startswith(
            "!a:x pending=1 in_flight=0 dead=0 oldest_age_ms=")

    # an empty cache: the pipelined EVALSHA answers NOSCRIPT; the room is
    # asked again alone (EVALSHA, NOSCRIPT), then with the text (EVAL)
    outbox()
    assert (_calls(r, "evalsha"), _calls(r, "eval")) == (2, 1)
    outbox()        # cached now: the SHA-1 alone
    assert (_calls(r, "evalsha"), _calls(r, "eval")) == (3, 1)
