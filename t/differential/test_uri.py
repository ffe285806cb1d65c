"""Request URI decoding (src/core/mx_uri.c) against the code Synapse runs:
Python's urllib.parse.unquote_to_bytes for path parameters, and
Twisted's own parse_qs (python3-twisted) for query arguments, which is
what a Synapse request's `args` are made of.

Inputs are random byte strings drawn towards the interesting bytes
('%', hex digits of both cases, '+', '/', '&', ';', '=', NUL, bytes
above 0x7f) from a fixed seed, plus the hand-picked cases first."""

import random
import re
import warnings
from urllib.parse import unquote_to_bytes

import pytest

with warnings.catch_warnings():
    # Twisted 22.4 imports the cgi module, deprecated in Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web.http import parse_qs

from mxj_tools import run_tool

N_RANDOM = 3000

ALPHABET = (b"%%%%%++//&&;;==" + b"0123456789abcdefABCDEFgGzZ"
            + b"ver_omit_members" + b"\x00\x7f\x80\xff !#:$")

HAND = [
    b"", b"%", b"%%", b"%2", b"%2f", b"%2F", b"%zz", b"%4g", b"%%41",
    b"%%%", b"a%", b"+", b"%2B", b"%2b+", b"%00", b"%C3%A9", b"\xff%ff",
    b"%41%42%43", b"%%2F2F", b"%a", b"%A%", b"%e2%82%ac",
]

QUERIES = [
    b"", b"ver=1", b"ver=", b"ver", b"ver=1&ver=9", b"ver=9;ver=1",
    b"v%65r=1", b"ver+=1", b"VER=1", b"ver=%31", b"ver=1+", b"&&ver=1&&",
    b"ver=1=2", b"=ver", b"ver==1", b"x=1&ver=org.matrix.msc3787",
    b"omit_members=true", b"omit_members=false", b"omit_members=True",
    b"omit_members=", b"omit_members", b"omit%5Fmembers=true",
    b"omit_members=tru%65", b"omit_members=true&omit_members=bogus",
    b"omit_members=bogus&omit_members=true", b"omit_members=true;x",
    b"omit+members=true", b"room_alias=%23a%3Ab", b"room_alias=#a:b",
    b"room_alias=%23a+b%3Ac", b"room_alias", b"room_alias=",
]

PATHS = [
    b"", b"/", b"a/b", b"a/b/", b"/b", b"a/", b"a//b", b"a%2Fb/c",
    b"%21r%3Ax/%40u%3Ax", b"!r:x/@u:x", b"a/b%00", b"%00/b", b"a+b/c+d",
    b"%zz/%4", b"a%2fb%2F/%2f",
]


def rand_bytes(rng, maxlen=24):
    n = rng.randrange(0, maxlen)
    return bytes(rng.choice(ALPHABET) for _ in range(n))


def rand_query(rng):
    names = [b"ver", b"v%65r", b"omit_members", b"omit%5fmembers",
             b"room_alias", b"x", b"", b"ver+", b"VER"]
    items = []
    for _ in range(rng.randrange(0, 6)):
        r = rng.random()
        if r < 0.15:
            items.append(rand_bytes(rng, 8))          # maybe without '='
        else:
            items.append(rng.choice(names) + b"=" + rand_bytes(rng, 12))
    seps = [rng.choice([b"&", b";", b"&&", b"&;"]) for _ in items]
    return b"".join(i + s for i, s in zip(items, seps))[:-1] \
        if items else b""


@pytest.fixture(scope="module")
def rng():
    return random.Random(20261127)


def tool(args, inputs):
    data = b"".join(x.hex().encode() + b"\n" for x in inputs)
    out = run_tool("mxj-uri-tool", *args, input_bytes=data).stdout
    lines = out.decode().split("\n")
    assert lines[-1] == ""
    assert len(lines) - 1 == len(inputs), "one output line per input line"
    return lines[:-1]


def test_unescape_matches_urllib(rng):
    inputs = HAND + [rand_bytes(rng) for _ in range(N_RANDOM)]
    got = tool(["unescape"], inputs)
    for x, line in zip(inputs, got):
        assert bytes.fromhex(line) == unquote_to_bytes(x), x


def test_unescape_plus_matches_twisted(rng):
    # Twisted: unquote(v.replace(b"+", b" "))
    inputs = HAND + [rand_bytes(rng) for _ in range(N_RANDOM)]
    got = tool(["unescape", "--plus"], inputs)
    for x, line in zip(inputs, got):
        assert bytes.fromhex(line) == unquote_to_bytes(x.replace(b"+", b" ")), x


def synapse_path_params(path):
    """Synapse's servlet patterns: "(?P<a>[^/]*)/(?P<b>[^/]*)$" over the raw
    path, each group then unquoted."""
    m = re.fullmatch(rb"([^/]*)/([^/]*)", path)
    if m is None:
        return "SHAPE"
    a, b = unquote_to_bytes(m.group(1)), unquote_to_bytes(m.group(2))
    if b"\x00" in a or b"\x00" in b:
        return "NUL"        # ours: refused before any identifier check
    return "OK %s %s" % (a.hex(), b.hex())


def test_path_params_match_synapse_routing(rng):
    inputs = PATHS + [rand_bytes(rng, 40) for _ in range(N_RANDOM)]
    got = tool(["path"], inputs)
    for x, line in zip(inputs, got):
        assert line == synapse_path_params(x), x


@pytest.mark.parametrize("name", ["ver", "omit_members", "room_alias", "x",
                                  ""])
def test_args_match_twisted_parse_qs(rng, name):
    inputs = QUERIES + [rand_query(rng) for _ in range(N_RANDOM)]
    got = tool(["args", name], inputs)
    for q, line in zip(inputs, got):
        want = parse_qs(q, 1).get(name.encode(), [])
        assert line == "N" + "".join(" v" + v.hex() for v in want), q


@pytest.mark.parametrize("version", ["1", "9", "org.matrix.msc3787", ""])
def test_ver_matches_synapse_make_join(rng, version):
    # Synapse's make_join servlet: parse_strings_from_args(args, "ver"),
    # None (no ver at all) meaning ["1"]; the room's version must be listed.
    inputs = QUERIES + [rand_query(rng) for _ in range(N_RANDOM)]
    got = tool(["ver", version], inputs)
    for q, line in zip(inputs, got):
        vers = parse_qs(q, 1).get(b"ver")
        supported = [b"1"] if vers is None else vers
        assert line == ("1" if version.encode() in supported else "0"), q


def test_bool_matches_synapse_parse_boolean(rng):
    # parse_boolean_from_args: the first value, b"true" or b"false", else
    # a 400.
    inputs = QUERIES + [rand_query(rng) for _ in range(N_RANDOM)]
    got = tool(["bool", "omit_members"], inputs)
    for q, line in zip(inputs, got):
        vals = parse_qs(q, 1).get(b"omit_members")
        if vals is None:
            want = "absent"
        else:
            want = {b"true": "1", b"false": "0"}.get(vals[0], "-1")
        assert line == want, q
