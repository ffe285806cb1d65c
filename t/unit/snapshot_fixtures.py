#!/usr/bin/python3
"""Writes t/unit/snapshot_fixtures.h: the small room of t/unit/test_snapshot.c
(create, alice's join, power levels, join rules, bob's join, a message as
forward extremity) for every room version, as the snapshot document and
the figures the loader must find in it, all computed here with
python3-canonicaljson and hashlib (t/lib/mxj_room.py's content hash,
reference hash and event ID), never with the C core under test.

    /usr/bin/python3 t/unit/snapshot_fixtures.py           # rewrite the header
    /usr/bin/python3 t/unit/snapshot_fixtures.py --check   # compare, exit 1 if stale

t/test runs --check, so the committed header is what this script makes."""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

import mxj_room  # noqa: E402
from unpaddedbase64 import encode_base64  # noqa: E402

OUT = HERE / "snapshot_fixtures.h"
ALICE = "@alice:example.org"
BOB = "@bob:b.example.org"
TS = 1700000000000


class Room:
    """The room of test_snapshot.c's room_build(), version by version."""

    def __init__(self, version):
        v = int(version)
        self.version = version
        self.refs_with_hashes = v <= 2          # [id, {"sha256": ...}]
        self.server_ids = v <= 2                # event_id in the event
        self.create_in_auth = v < 12
        self.room_id_from_create = v >= 12
        self.creator_is_sender = v >= 11
        self.serial = 0
        self.room_id = "" if self.room_id_from_create else "!room:example.org"

    def id_of(self, ev):
        return mxj_room.event_id(self.version, ev)

    def ref(self, ev):
        if self.refs_with_hashes:
            h = mxj_room.reference_hash(self.version, ev)
            return [self.id_of(ev), {"sha256": encode_base64(h)}]
        return self.id_of(ev)

    def event(self, etype, skey, sender, content, depth, auth, prev):
        ev = {"type": etype, "sender": sender, "content": content,
              "depth": depth, "origin_server_ts": TS + depth,
              "auth_events": [self.ref(a) for a in auth
                              if self.create_in_auth or a is not self.create],
              "prev_events": [self.ref(prev)] if prev is not None else [],
              "hashes": {},
              "signatures": {"example.org": {"ed25519:1": "c2ln"}}}
        if skey is not None:
            ev["state_key"] = skey
        if self.room_id:
            ev["room_id"] = self.room_id
        if self.server_ids:
            ev["event_id"] = f"$ev{self.serial}:example.org"
            self.serial += 1
        ev["hashes"] = {"sha256": encode_base64(mxj_room.content_hash(ev))}
        return ev

    def build(self):
        content = {"room_version": self.version}
        if not self.creator_is_sender:
            content["creator"] = ALICE
        self.create = c = self.event("m.room.create", "", ALICE, content, 1,
                                     [], None)
        if self.room_id_from_create:
            self.room_id = "!" + self.id_of(c)[1:]
        alice = self.event("m.room.member", ALICE, ALICE,
                           {"membership": "join"}, 2, [c], c)
        pl = self.event("m.room.power_levels", "", ALICE,
                        {"users": {}} if int(self.version) >= 12
                        else {"users": {ALICE: 100}}, 3, [c, alice], alice)
        jr = self.event("m.room.join_rules", "", ALICE,
                        {"join_rule": "public"}, 4, [c, alice, pl], pl)
        bob = self.event("m.room.member", BOB, BOB,
                         {"membership": "join", "displayname": "Bob"}, 5,
                         [c, pl, jr], jr)
        msg = self.event("m.room.message", None, BOB,
                         {"msgtype": "m.text", "body": "hello"}, 6,
                         [c, pl, bob], bob)
        state = [c, pl, jr, alice, bob]
        auth_chain = [c, alice, pl, jr]
        self.doc = {"room_version": self.version, "state": state,
                    "auth_chain": auth_chain,
                    "forward_extremities": [msg],
                    "aliases": ["#room:example.org"]}
        self.figures = {
            "room_id": self.room_id,
            "create_id": self.id_of(c),
            "pl_id": self.id_of(pl),
            "bob_id": self.id_of(bob),
            "msg_id": self.id_of(msg),
            "msg_sha256": encode_base64(
                mxj_room.reference_hash(self.version, msg)),
            # what a full send_join answer holds: every PDU of the state
            # and of the auth chain, canonical, without the commas
            "bytes": sum(len(mxj_room.canonical(e))
                         for e in state + auth_chain),
        }
        return self


def c_string(s, indent="      "):
    """s as adjacent C string literals of at most 72 characters."""
    esc = json.dumps(s, ensure_ascii=True)[1:-1]
    parts, cur = [], ""
    i = 0
    while i < len(esc):
        step = 2 if esc[i] == "\\" else 1
        if esc[i:i + 2] == "\\u":
            step = 6
        if len(cur) + step > 72:
            parts.append(cur)
            cur = ""
        cur += esc[i:i + step]
        i += step
    parts.append(cur)
    return ("\n" + indent).join(f'"{p}"' for p in parts)


def header():
    out = ["/*",
           " * Made by t/unit/snapshot_fixtures.py (python3-canonicaljson and",
           " * hashlib, not the core): do not edit; run the script again.",
           " */",
           "",
           "#ifndef SNAPSHOT_FIXTURES_H",
           "#define SNAPSHOT_FIXTURES_H",
           "",
           "",
           "typedef struct {",
           "    const char  *version;",
           "    const char  *doc;           /* the snapshot document */",
           "    const char  *room_id;",
           "    const char  *create_id;",
           "    const char  *pl_id;",
           "    const char  *bob_id;",
           "    const char  *msg_id;        /* the forward extremity */",
           "    const char  *msg_sha256;    /* its reference hash */",
           "    size_t       bytes;         /* state + auth chain PDUs */",
           "} snapshot_fixture_t;",
           "",
           "",
           "static const snapshot_fixture_t  snapshot_fixtures[] = {"]
    for v in mxj_room.VERSIONS:
        r = Room(v).build()
        f = r.figures
        doc = json.dumps(r.doc, separators=(",", ":"), sort_keys=True)
        out.append(f'    {{ "{v}",')
        out.append("      " + c_string(doc) + ",")
        for k in ("room_id", "create_id", "pl_id", "bob_id", "msg_id",
                  "msg_sha256"):
            out.append("      " + c_string(f[k]) + ",")
        out.append(f"      {f['bytes']} }},")
    out += ["};", "", "", "#endif /* SNAPSHOT_FIXTURES_H */", ""]
    return "\n".join(out)


def main(argv):
    text = header()
    if argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.name} is not what snapshot_fixtures.py makes: run "
                  "/usr/bin/python3 t/unit/snapshot_fixtures.py",
                  file=sys.stderr)
            return 1
        print(f"{OUT.name}: up to date")
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
