"""Our canonical JSON encoder against matrix-org's python3-canonicaljson.

Values go to the tool as json.dumps(v, ensure_ascii=True), pure ASCII, so
the transport does not depend on our encoder; the tool's output must equal
canonicaljson.encode_canonical_json(v) byte for byte."""

import json

import pytest
from canonicaljson import encode_canonical_json

from mxj_jsongen import gen_value, in_canonical_range, rng_for
from mxj_tools import run_tool

N_VALUES = 10000


def canon_lines(values_text, strict=False):
    """Runs `canon` over lines of JSON text; returns the output lines."""
    args = ["canon", "--strict"] if strict else ["canon"]
    data = b"".join(t + b"\n" for t in values_text)
    out = run_tool("mxj-json-tool", *args, input_bytes=data).stdout
    lines = out.split(b"\n")
    assert lines[-1] == b"", "output does not end with a newline"
    lines = lines[:-1]
    assert len(lines) == len(values_text), "one output line per input line"
    return lines


def ascii_json(v):
    return json.dumps(v, ensure_ascii=True).encode("ascii")


@pytest.fixture(scope="module")
def generated():
    rng = rng_for("canonical")
    return [gen_value(rng) for _ in range(N_VALUES)]


def test_generated_values_match_canonicaljson(generated):
    got = canon_lines([ascii_json(v) for v in generated])

    mismatches = []
    for v, line in zip(generated, got):
        want = encode_canonical_json(v)
        if line != want:
            mismatches.append((v, want, line))

    assert not mismatches, (
        f"{len(mismatches)} of {len(generated)} differ; first: "
        f"value={mismatches[0][0]!r} want={mismatches[0][1]!r} "
        f"got={mismatches[0][2]!r}")


def test_generator_covers_the_awkward_cases(generated):
    """Guards against a generator that silently stops testing anything."""
    blob = b"\n".join(encode_canonical_json(v) for v in generated)
    for needle in [b"\\u0000", b"\\u001f", b"\\b", b"\\t", b"\\n", b"\\f",
                   b"\\r", b"\\\"", b"\\\\", b"\x7f", b"/",
                   "\u2028".encode(), "\u2029".encode(),
                   "\U0001f600".encode(), b"9007199254740991",
                   b"-9007199254740991", b"true", b"false", b"null"]:
        assert needle in blob, needle

    def keys(v):
        if isinstance(v, dict):
            for k, x in v.items():
                yield k
                yield from keys(x)
        elif isinstance(v, list):
            for x in v:
                yield from keys(x)

    all_keys = [k for v in generated for k in keys(v)]
    assert any(any(ord(c) > 0xffff for c in k) for k in all_keys)
    assert any(any(0xe000 <= ord(c) <= 0xffff for c in k) for k in all_keys)
    assert sum(1 for v in generated if isinstance(v, dict) and len(v) > 1) \
        > 1000


def test_strict_accepts_canonical_outputs(generated):
    """Canonical output in range parses strictly and is a fixed point."""
    inputs = [encode_canonical_json(v) for v in generated
              if in_canonical_range(v)]
    assert len(inputs) > N_VALUES // 2
    got = canon_lines(inputs, strict=True)
    bad = [(i, g) for i, g in zip(inputs, got) if i != g]
    assert not bad, f"{len(bad)} differ; first: {bad[0]!r}"


def test_strict_rejects_out_of_range_generated(generated):
    inputs = [ascii_json(v) for v in generated if not in_canonical_range(v)]
    assert len(inputs) > 100
    got = canon_lines(inputs, strict=True)
    bad = [(i, g) for i, g in zip(inputs, got)
           if not g.startswith(b"ERROR integer out of range")]
    assert not bad, f"{len(bad)} not rejected; first: {bad[0]!r}"


# raw text, the reason expected from strict mode
STRICT_REJECTS = [
    (b"1.5", b"ERROR float not allowed"),
    (b"1.0", b"ERROR float not allowed"),
    (b"1e10", b"ERROR float not allowed"),
    (b"1E+2", b"ERROR float not allowed"),
    (b"-0.0", b"ERROR float not allowed"),
    (b"0.1e-2", b"ERROR float not allowed"),
    (b'{"content":{"x":1.5}}', b"ERROR float not allowed at content.x"),
    (b'{"a":[0,{"b":[2.5]}]}', b"ERROR float not allowed at a[1].b[0]"),
    (b"9007199254740992", b"ERROR integer out of range"),
    (b"-9007199254740992", b"ERROR integer out of range"),
    (b'{"depth":9223372036854775807}', b"ERROR integer out of range at depth"),
    (b"9223372036854775808", b"ERROR invalid JSON"),
    (b'{"a":1,"a":1}', b'ERROR duplicate key "a"'),
    (b'{"a":1,"b":{"c":1,"c":2}}', b'ERROR duplicate key "c"'),
    (b'{"\\u00e9":1,"\xc3\xa9":2}', b"ERROR duplicate key"),
    (b"NaN", b"ERROR invalid JSON"),
    (b"[Infinity]", b"ERROR invalid JSON"),
    (b'{"a":-Infinity}', b"ERROR invalid JSON"),
    (b"", b"ERROR invalid JSON"),
    (b"[1] [2]", b"ERROR invalid JSON"),
    (b'"\\ud800"', b"ERROR invalid JSON"),
    (b'"\xff"', b"ERROR invalid JSON"),
    (b'{"a\\u0000":1}', b"ERROR invalid JSON"),
]


def test_strict_rejects():
    got = canon_lines([t for t, _ in STRICT_REJECTS], strict=True)
    for (text, want), line in zip(STRICT_REJECTS, got):
        assert line.startswith(want), (text, line)


def test_lenient_mode():
    """Without --strict: last duplicate wins (as Python's json), int64 ok,
    floats parse but cannot be encoded, NaN is still not JSON."""
    cases = [
        (b'{"a":1,"a":2}', encode_canonical_json(json.loads('{"a":1,"a":2}'))),
        (b"9007199254740992", encode_canonical_json(2**53)),
        (b"-9223372036854775808", encode_canonical_json(-2**63)),
        (b"-0", encode_canonical_json(json.loads("-0"))),
        (b"1.5", b"ERROR float not allowed"),
        (b"NaN", b"ERROR invalid JSON"),
        (b'"\\u0000"', encode_canonical_json("\x00")),
    ]
    got = canon_lines([t for t, _ in cases])
    for (text, want), line in zip(cases, got):
        assert line.startswith(want), (text, line)
        if not want.startswith(b"ERROR"):
            assert line == want, (text, line)


def test_every_single_code_point_class():
    """Each of U+0000..U+00FF plus the line separators, alone in a value and
    in a key, against canonicaljson."""
    values = []
    for c in list(range(0x100)) + [0x2028, 0x2029, 0xfffe, 0x10ffff]:
        s = chr(c)
        values.append(s)
        if c != 0:
            values.append({s: s, "k" + s: [s]})
    got = canon_lines([ascii_json(v) for v in values])
    for v, line in zip(values, got):
        assert line == encode_canonical_json(v), (v, line)


def test_nul_in_key_is_refused():
    """Known divergence: canonicaljson encodes a NUL in a key, jansson 2.14
    cannot hold one, so our parser refuses the document (both modes)."""
    assert encode_canonical_json({"a\x00": 1}) == b'{"a\\u0000":1}'
    text = ascii_json({"a\x00": 1})
    assert canon_lines([text])[0].startswith(b"ERROR invalid JSON")
    assert canon_lines([text], strict=True)[0].startswith(b"ERROR invalid JSON")
