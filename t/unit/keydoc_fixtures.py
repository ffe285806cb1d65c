#!/usr/bin/python3
"""Prints the signed key documents of t/unit/test_keydoc.c as C string
constants. Run once by hand; its output is pasted into the test, so that
the fixtures are signed by python3-signedjson and canonicaljson, not by the
code under test:  /usr/bin/python3 t/unit/keydoc_fixtures.py
Keys: the spec's seed (reference §8) as "ed25519:1" of "domain"; RFC 8032
§7.1 TEST 1's seed as the second key and as the notary's key."""

import json

import signedjson.key
import signedjson.sign

SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
RFC_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
SPEC_PK = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
RFC_PK = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"

FAR = 1700000000000
OLD = 1500000000000


def key(version, seed):
    return signedjson.key.decode_signing_key_base64("ed25519", version, seed)


def doc(server, verify, until=FAR, old=None):
    d = {"server_name": server, "valid_until_ts": until,
         "verify_keys": {k: {"key": v} for k, v in verify.items()}}
    if old is not None:
        d["old_verify_keys"] = old
    return d


def signed(d, server, *keys):
    for k in keys:
        d = signedjson.sign.sign_json(d, server, k)
    return d


spec1 = key("1", SPEC_SEED)
rfc2 = key("2", RFC_SEED)
rfca = key("a", RFC_SEED)
notary = key("n", RFC_SEED)
assert signedjson.key.encode_verify_key_base64(spec1.verify_key) == SPEC_PK
assert signedjson.key.encode_verify_key_base64(rfc2.verify_key) == RFC_PK

fixtures = {
    # the spec key; old keys, one without an integer expired_ts
    "GOOD": signed(doc("domain", {"ed25519:1": SPEC_PK}, old={
        "ed25519:old": {"key": RFC_PK, "expired_ts": OLD},
        "ed25519:noexp": {"key": RFC_PK},
        "ed25519:strexp": {"key": RFC_PK, "expired_ts": str(OLD)}}),
        "domain", spec1),
    # old_verify_keys not an object
    "OLD_LIST": signed(doc("domain", {"ed25519:1": SPEC_PK}, old=[]),
                       "domain", spec1),
    # as a notary hands them on: the notary's signature added
    "NOTARY_DOMAIN": signed(signed(doc("domain", {"ed25519:1": SPEC_PK}),
                                   "domain", spec1),
                            "notary.example", notary),
    "NOTARY_OTHER": signed(signed(doc("other.example", {"ed25519:a": RFC_PK}),
                                  "other.example", rfca),
                           "notary.example", notary),
    "EXPIRED": signed(doc("domain", {"ed25519:1": SPEC_PK}, until=1000),
                      "domain", spec1),
    "ROTATED": signed(doc("domain", {"ed25519:2": RFC_PK},
                          old={"ed25519:1": {"key": SPEC_PK,
                                             "expired_ts": OLD}}),
                      "domain", rfc2),
    # lists ed25519:1 but is signed by ed25519:2 only
    "UNLISTED": signed(doc("domain", {"ed25519:1": SPEC_PK}), "domain", rfc2),
    "TWO": signed(doc("domain", {"ed25519:1": SPEC_PK, "ed25519:2": RFC_PK}),
                  "domain", spec1, rfc2),
    # the spec key padded
    "PADDED": signed(doc("domain", {"ed25519:1": SPEC_PK + "="}),
                     "domain", spec1),
}

# entries that are not keys of ours, and signatures by them (not signed
# over: signatures are not part of the signed bytes)
skip = doc("domain", {"ed25519:1": SPEC_PK, "ed25519:short": "AAAA",
                      "ed25519:bad-id": SPEC_PK, "curve25519:x": SPEC_PK})
skip["verify_keys"]["ed25519:nokey"] = {}
skip = signed(skip, "domain", spec1)
skip["signatures"]["domain"]["ed25519:short"] = "bm90IGEgc2lnbmF0dXJl"
skip["signatures"]["domain"]["ed25519:bad-id"] = "bm90IGEgc2lnbmF0dXJl"
skip["signatures"]["domain"]["curve25519:x"] = "bm90IGEgc2lnbmF0dXJl"
fixtures["SKIP"] = skip

# a key ID longer than MX_KEY_ID_MAX (128), and a signature by it
long_id = "ed25519:" + "a" * 130
long = signed(doc("domain", {"ed25519:1": SPEC_PK, long_id: SPEC_PK}),
              "domain", spec1)
long["signatures"]["domain"][long_id] = "bm90IGEgc2lnbmF0dXJl"
fixtures["LONG_ID"] = long

for name, d in fixtures.items():
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    c = text.replace("\\", "\\\\").replace('"', '\\"')
    lines = []
    while c:
        n = min(72, len(c))
        if (len(c[:n]) - len(c[:n].rstrip("\\"))) % 2:
            n -= 1                  # never split an escape
        lines.append(c[:n])
        c = c[n:]
    print(f"#define {name} \\")
    for i, part in enumerate(lines):
        print(f'    "{part}"' + (" \\" if i < len(lines) - 1 else ""))
    print()
