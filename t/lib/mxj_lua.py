"""The Redis Lua scripts of src/lua, read the way src/lua/embed embeds them,
and the generated C header they end up in.

The tests use this to run each script on a real redis-server by its own
text, and to check that the header the module and the CLI compile holds
exactly those bytes with the SHA-1 Redis computes for them."""

import ast
import hashlib
import os
import re
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
LUA = TOP / "src" / "lua"
BUILD = Path(os.environ.get("MXJ_BUILD", TOP / "build")).resolve()


def names():
    """Every script's name (its file name without .lua), sorted."""
    return sorted(p.stem for p in LUA.glob("*.lua"))


def source(name):
    """The text Redis runs for script `name`: its file with each
    `--! use LIB` line replaced by src/lua/lib/LIB.lua."""
    out = []
    for line in (LUA / f"{name}.lua").read_text().splitlines(keepends=True):
        if line.startswith("--! use "):
            lib = line[len("--! use "):].strip()
            out.append((LUA / "lib" / f"{lib}.lua").read_text())
        else:
            out.append(line if line.endswith("\n") else line + "\n")
    return "".join(out)


def sha1(name):
    return hashlib.sha1(source(name).encode()).hexdigest()


def header(path=None):
    """{name: (sha1, length, text)} as the generated header holds them."""
    path = Path(path or BUILD / "gen" / "mx_lua_scripts.h")
    text = path.read_text()
    found = {}
    for m in re.finditer(r'\{ "([a-z0-9_]+)", "([0-9a-f]{40})", (\d+),\n'
                         r'((?:      ".*"\n)*)    \},', text):
        body = "".join(ast.literal_eval(line.strip())
                       for line in m.group(4).splitlines())
        found[m.group(1)] = (m.group(2), int(m.group(3)), body)
    return found


def run(client, name, keys=(), args=()):
    """EVAL script `name` with keys and args on a redis-py client."""
    return client.eval(source(name), len(keys), *keys, *args)
