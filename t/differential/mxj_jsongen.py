"""Seeded random JSON values for the differential tests: the awkward parts
of canonical JSON (control characters, quotes, backslashes, U+007F,
U+2028/2029, BMP and non-BMP code points in keys and values, integer
limits), nested up to a fixed depth. No floats and no lone surrogates:
neither is canonical JSON."""

import random

INT_LIMIT = 2**53 - 1
INT64_MIN = -2**63
INT64_MAX = 2**63 - 1

_SPECIAL_CHARS = (
    [chr(c) for c in range(0x20)]
    + ['\x7f', '"', '\\', '/', '\u2028', '\u2029', '\ufeff', '\uffff',
       '\ue000', '\u00e9', '\u65e5', '\U0001f600', '\U0010ffff', '\U00010000']
)

_SPECIAL_INTS = [0, 1, -1, INT_LIMIT, -INT_LIMIT, INT_LIMIT - 1, 2**31,
                 -2**31, 2**32, 255, 256, 10**15]


def _char(rng, allow_nul):
    r = rng.random()
    if r < 0.45:
        c = chr(rng.randint(0x20, 0x7e))
    elif r < 0.65:
        c = rng.choice(_SPECIAL_CHARS)
    elif r < 0.80:
        # BMP outside the surrogate range
        c = chr(rng.choice([rng.randint(0x80, 0xd7ff),
                            rng.randint(0xe000, 0xffff)]))
    else:
        c = chr(rng.randint(0x10000, 0x10ffff))
    if c == '\x00' and not allow_nul:
        return 'n'
    return c


def gen_string(rng, allow_nul=True, max_len=12):
    return ''.join(_char(rng, allow_nul)
                   for _ in range(rng.randint(0, max_len)))


def gen_int(rng, large=True):
    r = rng.random()
    if r < 0.4:
        return rng.choice(_SPECIAL_INTS)
    if r < 0.8 or not large:
        return rng.randint(-1000000, 1000000)
    if r < 0.9:
        return rng.randint(-INT_LIMIT, INT_LIMIT)
    # outside the canonical range but inside int64 (lenient mode keeps it)
    return rng.choice([rng.randint(INT_LIMIT + 1, INT64_MAX),
                       rng.randint(INT64_MIN, -INT_LIMIT - 1),
                       INT64_MAX, INT64_MIN, 2**53, -2**53])


def gen_scalar(rng, large=True):
    r = rng.random()
    if r < 0.45:
        return gen_string(rng)
    if r < 0.8:
        return gen_int(rng, large)
    return rng.choice([True, False, None])


def gen_value(rng, depth=6, large=True):
    """Any JSON value; containers get rarer as depth runs out."""
    if depth <= 0 or rng.random() < 0.35:
        return gen_scalar(rng, large)
    if rng.random() < 0.5:
        return [gen_value(rng, depth - 1, large)
                for _ in range(rng.randint(0, 5))]
    return gen_object(rng, depth, large)


def gen_object(rng, depth=6, large=True):
    # jansson refuses NUL in object keys, so keys never contain one
    return {gen_string(rng, allow_nul=False): gen_value(rng, depth - 1, large)
            for _ in range(rng.randint(0, 6))}


def in_canonical_range(v):
    """True when every integer in v is within +-(2**53 - 1)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return True
    if isinstance(v, int):
        return -INT_LIMIT <= v <= INT_LIMIT
    if isinstance(v, list):
        return all(in_canonical_range(x) for x in v)
    return all(in_canonical_range(x) for x in v.values())


def rng_for(name):
    """A generator seeded from a fixed name, so runs are reproducible."""
    return random.Random(f"mxj-{name}-1")
