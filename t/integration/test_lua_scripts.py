"""Every Redis script of src/lua compiles on a real redis-server, and the
header the module and the CLI are built with holds exactly its bytes and
the SHA-1 Redis gives them (EVALSHA finds what EVAL would run)."""

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
