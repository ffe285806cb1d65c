"""Every Redis script of src/lua compiles on a real redis-server, and the
header the module and the CLI are built with holds exactly its bytes and
the SHA-1 Redis gives them (EVALSHA finds what EVAL would run)."""

import json
import sys
from pathlib import Path

import pytest
import redis as redis_py

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "t" / "lib"))

import mxj_lua  # noqa: E402


def test_there_are_scripts():
    assert mxj_lua.names(), "src/lua holds no script"


@pytest.mark.parametrize("name", mxj_lua.names())
def test_script_compiles_and_is_embedded_as_is(redis_server, name):
    r = redis_py.Redis(host="127.0.0.1", port=redis_server.port)
    src = mxj_lua.source(name)
    sha = r.script_load(src)
    assert sha == mxj_lua.sha1(name)
    embedded = mxj_lua.header()
    assert name in embedded, f"{name} is not in the generated header"
    assert embedded[name] == (sha, len(src.encode()), src)


def test_header_holds_no_other_script():
    assert sorted(mxj_lua.header()) == mxj_lua.names()


def test_a_script_with_an_unknown_library_is_refused(tmp_path):
    import subprocess
    lua = tmp_path / "lua"
    (lua / "lib").mkdir(parents=True)
    embed = lua / "embed"
    embed.write_bytes((mxj_lua.LUA / "embed").read_bytes())
    (lua / "bad.lua").write_text("--! use nosuch\nreturn 1\n")
    p = subprocess.run(["sh", str(embed), str(tmp_path / "out.h"),
                        str(lua / "bad.lua")], capture_output=True, text=True)
    assert p.returncode != 0
    assert "no library nosuch" in p.stderr
    assert not (tmp_path / "out.h").exists()


def test_outbox_count_counts(redis_server):
    r = redis_py.Redis(host="127.0.0.1", port=redis_server.port)
    assert mxj_lua.run(r, "outbox_count", ["o", "d"], ["g"]) == [0, 0, 0, 0, 0]
    r.xadd("o", {"a": "1"})
    r.xadd("o", {"a": "2"})
    r.xgroup_create("o", "g", id="0")
    r.xreadgroup("g", "c", {"o": ">"}, count=1)
    r.xadd("d", {"a": "3"})
    exists, pending, inflight, dead, age = \
        mxj_lua.run(r, "outbox_count", ["o", "d"], ["g"])
    assert (exists, pending, inflight, dead) == (2, 2, 1, 1)
    assert age >= 0


# -- the per-event advance's member events (src/lua/live_member.lua) ---------

ROOM_KEYS = ["meta", "state", "member", "pdu", "extrem", "edge", "edge_pdu",
             "edge_m", "edge_old", "edge_orig", "mchunk", "state_m",
             "servers", "server_user", "outbox", "partial"]


def _room(r):
    """A minimal loaded room: @v:a joined (its member event $old), one
    forward extremity $e1, a pushed event pending with the room stale
    "pushed" (as live_push.lua leaves a gated push)."""
    k = {n: "{r}:" + n for n in ROOM_KEYS}
    r.hset(k["meta"], mapping={"room_id": "!r:h", "max_depth": "5",
                               "members": "1", "member_events": "1",
                               "state_events": "4", "servers": '["a"]',
                               "live_pending": "1", "stale": "1",
                               "stale_reason": "pushed"})
    r.hset(k["state"], '["m.room.member","@v:a"]', "$old")
    r.hset(k["member"], "@v:a", "join")
    r.hset(k["extrem"], "$e1", '{"depth":5,"sha256":"x"}')
    r.zadd(k["servers"], {"a": -1})
    r.hset(k["server_user"], "a", "@v:a")
    return k


def _member(r, k, eid, user, ms, prevs, depth=6):
    return mxj_lua.run(r, "live_member", [k[n] for n in ROOM_KEYS],
                       [eid, user, ms, user.split(":", 1)[1], str(depth),
                        "sha", json.dumps(prevs), '{"pdu":"' + eid + '"}',
                        "1"])


def test_live_member_applies_a_leave_in_place(redis_server):
    r = redis_py.Redis(host="127.0.0.1", port=redis_server.port,
                       decode_responses=True)
    k = _room(r)
    assert _member(r, k, "$m", "@v:a", "leave", ["$e1"]) == ["ok", 1]
    assert r.hgetall(k["extrem"]) == {"$m": '{"depth":6,"sha256":"sha"}'}
    assert r.hget(k["edge"], "$e1") == '{"b":1}'
    rec = json.loads(r.hget(k["edge"], "$m"))
    assert rec == {"s": 1, "u": "@v:a", "p": ["$e1"], "h": 1,
                   "m": "leave"}
    assert r.hget(k["state"], '["m.room.member","@v:a"]') == "$m"
    assert r.hget(k["member"], "@v:a") == "leave"
    assert r.hget(k["edge_m"], "@v:a") == "$m"
    assert r.hget(k["edge_orig"], "@v:a") == "$old"
    assert r.hget(k["pdu"], "$m") == '{"pdu":"$m"}'
    assert r.hgetall(k["edge_pdu"]) == {}     # not a join to confirm
    assert r.xlen(k["outbox"]) == 0           # nor to forward
    assert r.zrange(k["servers"], 0, -1) == []
    assert r.hget(k["server_user"], "a") is None
    meta = r.hgetall(k["meta"])
    assert (meta["members"], meta["member_events"], meta["servers"],
            meta["max_depth"], meta["live_events"]) == \
        ("0", "1", "[]", "6", "1")
    # the pending push taken: the "pushed" mark gone
    assert "stale" not in meta and "live_pending" not in meta

    # the same event again: nothing changes
    before = {n: r.dump(k[n]) for n in ROOM_KEYS}
    assert _member(r, k, "$m", "@v:a", "leave", ["$e1"])[0] == "dup"
    after = {n: r.dump(k[n]) for n in ROOM_KEYS}
    assert {n for n in ROOM_KEYS if before[n] != after[n]} <= {"meta"}

    # a rejoin: the leave superseded (kept for the auth chain)
    assert _member(r, k, "$j", "@v:a", "join", ["$m"], 7)[0] == "ok"
    assert r.smembers(k["edge_old"]) == {"$m"}
    assert r.zscore(k["servers"], "a") == -1
    assert r.hget(k["server_user"], "a") == "@v:a"
    assert r.hget(k["meta"], "members") == "1"


def test_live_member_with_an_unknown_prev_event_writes_nothing(redis_server):
    r = redis_py.Redis(host="127.0.0.1", port=redis_server.port,
                       decode_responses=True)
    k = _room(r)
    before = {n: r.dump(k[n]) for n in ROOM_KEYS}
    assert _member(r, k, "$m", "@n:b", "join", ["$e1", "$gap"]) == \
        ["unknown", "$gap"]
    assert {n: r.dump(k[n]) for n in ROOM_KEYS} == before
    r.delete(k["meta"])
    assert _member(r, k, "$m", "@n:b", "join", ["$e1"]) == ["gone"]


def test_live_push_gates_a_member_event_in_a_busy_room(redis_server):
    """In a flow of pushes a message leaves the room answerable; a member
    event that may refuse a user (ARGV 3) makes it stale until applied."""
    r = redis_py.Redis(host="127.0.0.1", port=redis_server.port,
                       decode_responses=True)
    keys = ["{p}:meta", "{p}:extrem", "{p}:edge"]
    now_ms = int(r.time()[0]) * 1000
    r.hset(keys[0], mapping={"room_id": "!p:h", "live_push_at": now_ms,
                             "live_pending": "1"})
    assert mxj_lua.run(r, "live_push", keys, ["$msg", "", ""]) == 1
    assert r.hget(keys[0], "stale") is None
    assert mxj_lua.run(r, "live_push", keys, ["$ban", "", "1"]) == 1
    assert r.hmget(keys[0], "stale", "stale_reason", "live_pending") == \
        ["1", "pushed", "3"]
