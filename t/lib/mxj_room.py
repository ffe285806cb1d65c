#!/usr/bin/python3
"""Realistic Matrix rooms in the snapshot format matrix-join-ctl loads.

An independent producer: hashes, redaction, event IDs and signatures are
computed here with Debian's python3-signedjson, -canonicaljson, -nacl and
hashlib, never with our C core, so the loader can be judged against it.

    /usr/bin/python3 t/lib/mxj_room.py --version 10 --members 1000 \\
        --servers 50 --out snap.json [--seed N] [--keys-out keys.json]

The room: m.room.create, the creator's join, power levels, join rules,
history visibility, name, topic, canonical alias; then the members joining
from N servers (each server signs with its own key), a few leaving, one
banned, one invited; then one or two messages as forward extremities.
Every event has proper auth_events and prev_events (a chain, depth + 1);
auth_chain is the auth events of the state, recursively, as Synapse sends
it. Room versions 1-12: v1/v2 carry "$random:server" event IDs and
[id, {"sha256": ...}] references, v3 standard base64 event IDs, v4+
URL-safe ones; v11+ take the creator from the sender; v12 has no room_id
on the create event, the room ID is "!" + its event ID without "$", and
the create event is never listed in auth_events.

As a library: generate(version, members, servers, seed) returns a Room
with .snapshot (the document), .server_keys (signing keys per server,
to sign joins later), .sign(event) and the expected figures (.expected).

Rooms for the join rules: Room(..., create_content={"m.federate": False}
or {"additional_creators": [...]}, power_levels={...} (the whole content;
False: no power levels event),
join_rules={"join_rule": "restricted", "allow": [...]} or None (no
join_rules event)); after the build, room.add_state(type, state_key,
content, sender) and room.add_member(user, membership, sender) append
signed state events (any server: a key is made for a new one, or given
with add_server), room.fork(lengths) makes new forward extremities at
different depths; .snapshot and .expected follow every change.
"""

import argparse
import copy
import hashlib
import json
import random
import sys
import time

from canonicaljson import encode_canonical_json
from signedjson.key import decode_signing_key_base64, get_verify_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

VERSIONS = [str(v) for v in range(1, 13)]

_TOP_KEYS_V1 = frozenset((
    "event_id", "type", "room_id", "sender", "state_key", "content",
    "hashes", "signatures", "depth", "prev_events", "prev_state",
    "auth_events", "origin", "origin_server_ts", "membership"))
_TOP_KEYS_V11 = frozenset((
    "event_id", "type", "room_id", "sender", "state_key", "content",
    "hashes", "signatures", "depth", "prev_events", "auth_events",
    "origin_server_ts"))

# the default join_rules of a generated room (None: no join_rules event)
_PUBLIC = {"join_rule": "public"}

_PL_KEYS = ("ban", "events", "events_default", "kick", "redact",
            "state_default", "users", "users_default")


def vnum(version):
    return int(version)


def canonical(obj):
    """Matrix canonical JSON bytes (python3-canonicaljson)."""
    return encode_canonical_json(obj)


def redact(version, ev):
    """The redacted copy of ev under the room version's rules."""
    v = vnum(version)
    keep = _TOP_KEYS_V11 if v >= 11 else _TOP_KEYS_V1
    out = {k: val for k, val in ev.items() if k in keep}
    etype = ev.get("type")
    content = ev.get("content", {})
    if not isinstance(content, dict):
        content = {}
    kept = {}

    def copy(*keys):
        for k in keys:
            if k in content:
                kept[k] = content[k]

    if etype == "m.room.member":
        copy("membership")
        if v >= 9:
            copy("join_authorised_via_users_server")
        if v >= 11 and isinstance(content.get("third_party_invite"), dict):
            tpi = content["third_party_invite"]
            kept["third_party_invite"] = (
                {"signed": tpi["signed"]} if "signed" in tpi else {})
    elif etype == "m.room.create":
        if v >= 11:
            kept = dict(content)
        else:
            copy("creator")
    elif etype == "m.room.join_rules":
        copy("join_rule")
        if v >= 8:
            copy("allow")
    elif etype == "m.room.power_levels":
        copy(*_PL_KEYS)
        if v >= 11:
            copy("invite")
    elif etype == "m.room.history_visibility":
        copy("history_visibility")
    elif etype == "m.room.aliases" and v <= 5:
        copy("aliases")
    elif etype == "m.room.redaction" and v >= 11:
        copy("redacts")
    out["content"] = kept
    if v >= 12 and etype == "m.room.create":
        out.pop("room_id", None)
    return out


def content_hash(ev):
    """SHA-256 of the event without unsigned, signatures, hashes."""
    d = {k: v for k, v in ev.items()
         if k not in ("unsigned", "signatures", "hashes", "age_ts",
                      "outlier", "destinations")}
    return hashlib.sha256(canonical(d)).digest()


def reference_hash(version, ev):
    d = redact(version, ev)
    d.pop("signatures", None)
    d.pop("unsigned", None)
    return hashlib.sha256(canonical(d)).digest()


def event_id(version, ev):
    v = vnum(version)
    if v <= 2:
        return ev["event_id"]
    h = reference_hash(version, ev)
    if v == 3:
        return "$" + encode_base64(h)
    return "$" + encode_base64(h, urlsafe=True)


def b64_std(b):
    return encode_base64(b)


def sign_event(version, ev, server, key):
    """Sets hashes and adds server's signature (on the redacted form)."""
    ev["hashes"] = {"sha256": encode_base64(content_hash(ev))}
    red = redact(version, ev)
    red.pop("unsigned", None)
    red["signatures"] = {}
    sign_json(red, server, key)
    sigs = ev.setdefault("signatures", {})
    sigs.setdefault(server, {}).update(red["signatures"][server])
    return ev


def server_of(ident):
    return ident.split(":", 1)[1]


def make_key(seed, server):
    """A deterministic ed25519 key per (seed, server)."""
    raw = hashlib.sha256(f"mxj-room:{seed}:{server}".encode()).digest()
    return decode_signing_key_base64("ed25519", "a_1", encode_base64(raw))


class Room:
    """A generated room; see the module docstring."""

    def __init__(self, version, members=10, servers=3, seed=0,
                 extremities=2, leaves=None, bans=None, invites=None,
                 room_name="Generated room", create_content=None,
                 power_levels=None, join_rules=_PUBLIC):
        if version not in VERSIONS:
            raise ValueError(f"unknown room version {version!r}")
        if members < 1 or servers < 1:
            raise ValueError("need at least one member and one server")
        self.version = version
        self.v = vnum(version)
        self.seed = seed
        self.rng = random.Random(seed)
        self.servers = [f"s{i}.example.org" for i in range(servers)]
        self.server_keys = {s: make_key(seed, s) for s in self.servers}
        self.creator = f"@admin:{self.servers[0]}"
        self.alias = f"#room{seed}:{self.servers[0]}"
        self.ts = 1700000000000 + seed * 1000
        self.events = {}            # event ID -> PDU (dict)
        self.order = []             # event IDs in DAG order
        self.state = {}             # (type, state_key) -> event ID
        self.room_id = None if self.v >= 12 else \
            f"!r{self.rng.getrandbits(64):x}:{self.servers[0]}"
        self.last = None            # the previous event, for prev_events
        self._refhash = {}          # v1/v2: event ID -> reference hash
        self._create_content = create_content or {}
        self._power_levels = power_levels
        self._join_rules = join_rules
        self._build(members, extremities,
                    members // 100 if leaves is None else leaves,
                    (1 if members >= 20 else 0) if bans is None else bans,
                    (1 if members >= 10 else 0) if invites is None
                    else invites,
                    room_name)

    # -- events -------------------------------------------------------------

    def key_id(self, server):
        k = self.server_keys[server]
        return f"{k.alg}:{k.version}"

    def verify_key(self, server):
        return get_verify_key(self.server_keys[server])

    def sign(self, ev, server=None):
        """Signs ev as the sender's server (or server)."""
        server = server or server_of(ev["sender"])
        return sign_event(self.version, ev, server, self.add_server(server))

    def ref(self, eid):
        """An entry of prev_events / auth_events for the event eid."""
        if self.v <= 2:
            h = self._refhash.get(eid)
            if h is None:
                h = b64_std(reference_hash(self.version, self.events[eid]))
                self._refhash[eid] = h
            return [eid, {"sha256": h}]
        return eid

    def _new_event_id(self, server):
        return "$" + "".join(self.rng.choice(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
            for _ in range(18)) + ":" + server

    def add(self, etype, sender, content, state_key=None, auth=(),
            prev=None, state=True, extra=None):
        """Creates, signs and records an event; returns its ID."""
        prev = [self.last] if prev is None and self.last else (prev or [])
        depth = max([self.events[p]["depth"] for p in prev] or [0]) + 1
        self.ts += 1
        ev = {
            "type": etype,
            "sender": sender,
            "content": content,
            "depth": depth,
            "origin_server_ts": self.ts,
            "prev_events": [self.ref(p) for p in prev],
            "auth_events": [self.ref(a) for a in auth if a is not None
                            and (self.v < 12 or a != self.create_id)],
        }
        if state_key is not None:
            ev["state_key"] = state_key
        if self.room_id is not None and not (
                self.v >= 12 and etype == "m.room.create"):
            ev["room_id"] = self.room_id
        if self.v <= 5:
            ev["origin"] = server_of(sender)
        if self.v <= 2:
            ev["event_id"] = self._new_event_id(server_of(sender))
        if extra:
            ev.update(extra)
        self.sign(ev)
        eid = event_id(self.version, ev)
        self.events[eid] = ev
        self.order.append(eid)
        if state and state_key is not None:
            self.state[(etype, state_key)] = eid
        self.last = eid
        return eid

    def auth_for(self, etype, sender, state_key=None, membership=None):
        """The auth events selection (reference §6.1)."""
        a = [self.create_id, self.state.get(("m.room.power_levels", "")),
             self.state.get(("m.room.member", sender))]
        if etype == "m.room.member":
            if state_key != sender:
                a.append(self.state.get(("m.room.member", state_key)))
            if membership in ("join", "invite", "knock"):
                a.append(self.state.get(("m.room.join_rules", "")))
        seen = []
        for x in a:
            if x is not None and x not in seen:
                seen.append(x)
        return seen

    def member(self, user, membership, sender=None, content=None):
        sender = sender or user
        c = {"membership": membership}
        if content:
            c.update(content)
        return self.add("m.room.member", sender, c, state_key=user,
                        auth=self.auth_for("m.room.member", sender, user,
                                           membership))

    def state_event(self, etype, content, state_key=""):
        return self.add(etype, self.creator, content, state_key=state_key,
                        auth=self.auth_for(etype, self.creator))

    # -- changing the room after it is built ---------------------------------
    #
    # Each change is one new event, hashed and signed by its sender's server
    # (a key is made for a server the room has not seen), with the auth
    # events selection of the current state; its prev_events are every
    # forward extremity, so it becomes the only one. The state, the auth
    # chain, the extremities and .snapshot/.expected follow.

    def add_server(self, server, key=None):
        """The signing key of server (given, or made from the seed when
        the room has none yet)."""
        if key is not None:
            self.server_keys[server] = key
        elif server not in self.server_keys:
            self.server_keys[server] = make_key(self.seed, server)
        return self.server_keys[server]

    def add_state(self, etype, state_key, content, sender=None):
        """Appends a state event (sender: the creator by default) on top
        of the forward extremities; returns its event ID."""
        sender = sender or self.creator
        membership = content.get("membership") \
            if etype == "m.room.member" else None
        eid = self.add(etype, sender, copy.deepcopy(content),
                       state_key=state_key,
                       auth=self.auth_for(etype, sender, state_key,
                                          membership),
                       prev=list(self.extremity_ids))
        self.extremity_ids = [eid]
        self._snapshot()
        return eid

    def add_member(self, user, membership, sender=None, content=None):
        """user's membership event (sent by user, or by sender: an invite,
        a ban, a kick); returns its event ID."""
        c = {"membership": membership}
        c.update(content or {})
        return self.add_state("m.room.member", user, c,
                              sender=sender or user)

    def fork(self, lengths=(1, 2), sender=None):
        """New forward extremities: one chain of messages per entry of
        lengths, each chain starting on every current extremity, so the
        extremities end at different depths when the lengths differ."""
        sender = sender or self.creator
        parents = list(self.extremity_ids)
        ends = []
        for n, length in enumerate(lengths):
            prev = parents
            for k in range(length):
                prev = [self.add("m.room.message", sender,
                                 {"msgtype": "m.text",
                                  "body": f"fork {n}.{k}"},
                                 auth=self.auth_for("m.room.message",
                                                    sender),
                                 prev=prev, state=False)]
            ends.extend(prev)
        self.extremity_ids = ends
        self._snapshot()
        return ends

    def membership(self, user):
        """user's current membership, or None."""
        eid = self.state.get(("m.room.member", user))
        return None if eid is None else \
            self.events[eid]["content"].get("membership")

    def joined(self, server=None):
        """The users joined now (of server, when given), sorted."""
        return sorted(sk for (t, sk), eid in self.state.items()
                      if t == "m.room.member"
                      and self.events[eid]["content"].get("membership")
                      == "join"
                      and (server is None or server_of(sk) == server))

    def state_event_of(self, etype, state_key=""):
        """The current state event (the PDU dict), or None."""
        eid = self.state.get((etype, state_key))
        return None if eid is None else self.events[eid]

    # -- the room -----------------------------------------------------------

    def _build(self, members, extremities, leaves, bans, invites, name):
        self.create_id = None
        content = {"room_version": self.version}
        if self.v <= 10:
            content["creator"] = self.creator
        content.update(self._create_content)
        self.create_id = self.add("m.room.create", self.creator, content,
                                  state_key="", auth=())
        if self.v >= 12:
            self.room_id = "!" + self.create_id[1:]

        self.member(self.creator, "join",
                    content={"displayname": "Admin"})
        users = {} if self.v >= 12 else {self.creator: 100}
        if self._power_levels is False:
            pass                        # no power levels event at all
        elif self._power_levels is not None:
            self.state_event("m.room.power_levels",
                             copy.deepcopy(self._power_levels))
        else:
            self.state_event("m.room.power_levels", {
                "users": users, "users_default": 0, "events_default": 0,
                "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
                "invite": 0,
                "events": {"m.room.name": 50, "m.room.power_levels": 100,
                           "m.room.history_visibility": 100}})
        if self._join_rules is not None:
            self.state_event("m.room.join_rules",
                             copy.deepcopy(self._join_rules))
        self.state_event("m.room.history_visibility",
                         {"history_visibility": "shared"})
        self.state_event("m.room.name", {"name": name})
        self.state_event("m.room.topic",
                         {"topic": "A generated room \u2014 for tests"})
        self.state_event("m.room.canonical_alias", {"alias": self.alias})

        # members: the creator is member 0; users spread over the servers
        self.users = [self.creator]
        for j in range(1, members):
            srv = self.servers[j % len(self.servers)]
            user = f"@u{j}:{srv}"
            self.users.append(user)
            c = {"displayname": f"User {j}" if j % 7 else f"Zo\u00eb {j}"}
            if j % 5 == 0:
                c["avatar_url"] = f"mxc://{srv}/a{j}"
            self.member(user, "join", content=c)

        # a few leave: their joins stay in the auth chain, not in state
        extra = []
        for k in range(leaves):
            user = f"@gone{k}:{self.servers[(k + 1) % len(self.servers)]}"
            self.member(user, "join")
            extra.append(user)
        for user in extra:
            self.member(user, "leave")
        for k in range(bans):
            user = f"@spam{k}:{self.servers[-1]}"
            self.member(user, "join")
            self.member(user, "ban", sender=self.creator,
                        content={"reason": "spam"})
        for k in range(invites):
            user = f"@guest{k}:{self.servers[k % len(self.servers)]}"
            self.member(user, "invite", sender=self.creator)

        # forward extremities: messages, two of them forking
        parent = self.last
        self.extremity_ids = []
        for k in range(max(1, extremities)):
            sender = self.users[(k * 7919) % len(self.users)]
            eid = self.add("m.room.message", sender,
                           {"msgtype": "m.text", "body": f"hello {k}"},
                           auth=self.auth_for("m.room.message", sender),
                           prev=[parent], state=False)
            self.extremity_ids.append(eid)

        # a little unsigned data, kept as given
        for key in (("m.room.topic", ""), ("m.room.name", "")):
            self.events[self.state[key]]["unsigned"] = {"age": 1234}

        self._snapshot()

    def auth_chain_ids(self):
        """Auth events of the state, recursively (Synapse's auth chain)."""
        seen = set()
        todo = []
        for eid in self.state.values():
            todo.extend(self._auth_ids(eid))
        while todo:
            eid = todo.pop()
            if eid in seen:
                continue
            seen.add(eid)
            todo.extend(self._auth_ids(eid))
        pos = {eid: i for i, eid in enumerate(self.order)}
        return sorted(seen, key=pos.__getitem__)

    def _auth_ids(self, eid):
        ids = [a[0] if isinstance(a, list) else a
               for a in self.events[eid]["auth_events"]]
        if self.v >= 12 and eid != self.create_id:
            ids.append(self.create_id)
        return ids

    def _snapshot(self):
        state_ids = list(self.state.values())
        auth_ids = self.auth_chain_ids()
        self.snapshot = {
            "room_version": self.version,
            "state": [self.events[e] for e in state_ids],
            "auth_chain": [self.events[e] for e in auth_ids],
            "forward_extremities": [self.events[e]
                                    for e in self.extremity_ids],
            "aliases": [self.alias],
        }
        canon = {e: canonical(self.events[e]).decode()
                 for e in set(state_ids) | set(auth_ids)}
        members = [e for (t, _), e in self.state.items()
                   if t == "m.room.member"]
        self.expected = {
            "room_id": self.room_id,
            "room_version": self.version,
            "create_event_id": self.create_id,
            "state_events": len(state_ids),
            "member_events": len(members),
            "members": sum(1 for e in members
                           if self.events[e]["content"]["membership"]
                           == "join"),
            "auth_chain": len(auth_ids),
            "extremities": len(self.extremity_ids),
            "max_depth": max(self.events[e]["depth"]
                             for e in self.extremity_ids),
            "bytes": sum(len(canon[e].encode()) for e in state_ids)
                     + sum(len(canon[e].encode()) for e in auth_ids),
            "state_index": {
                canonical([t, sk]).decode(): e
                for (t, sk), e in self.state.items()},
            "canonical": canon,
            "state_ids": state_ids,
            "auth_ids": auth_ids,
            "extrem": {e: {"depth": self.events[e]["depth"],
                           "sha256": b64_std(reference_hash(
                               self.version, self.events[e]))}
                       for e in self.extremity_ids},
            "aliases": [self.alias],
        }

    def write(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.snapshot, f, separators=(",", ":"))

    def keys_document(self):
        """{server: {"key_id": ..., "seed": b64, "public": b64}}."""
        out = {}
        for s, k in self.server_keys.items():
            out[s] = {"key_id": self.key_id(s),
                      "seed": encode_base64(bytes(k)),
                      "public": encode_base64(bytes(get_verify_key(k)))}
        return out


def generate(version, members=10, servers=3, seed=0, **kw):
    return Room(str(version), members, servers, seed, **kw)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Generate a signed Matrix room snapshot.")
    p.add_argument("--version", required=True, choices=VERSIONS)
    p.add_argument("--members", type=int, default=100,
                   help="joined members, the creator included")
    p.add_argument("--servers", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extremities", type=int, default=2, choices=(1, 2))
    p.add_argument("--out", required=True)
    p.add_argument("--keys-out", help="write the servers' keys (JSON)")
    a = p.parse_args(argv)

    t0 = time.monotonic()
    room = generate(a.version, a.members, a.servers, a.seed,
                    extremities=a.extremities)
    room.write(a.out)
    if a.keys_out:
        with open(a.keys_out, "w") as f:
            json.dump(room.keys_document(), f, indent=1)
    e = room.expected
    print(f"{a.out}: room {e['room_id']} version {a.version}, "
          f"{e['state_events']} state events, {e['members']} members, "
          f"{e['auth_chain']} auth chain events, {e['extremities']} "
          f"forward extremities, {e['bytes']} bytes in "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
