#!/usr/bin/python3
"""A stand-in homeserver: what `matrix-join-ctl sync` pulls rooms from.

Built on matrix-org's libraries only (python3-signedjson, -canonicaljson,
-unpaddedbase64) and on the generated rooms of t/lib/mxj_room.py; nothing
here runs our C code. It plays the room's own server NAME (the server
behind the edge, whose users are joined): it owns NAME's signing key
(written to a Synapse-format key file for sync's --signing-key and the
edge's matrix_signing_key), and serves its rooms over federation on
127.0.0.1, on a port it picks:

    GET  /_matrix/federation/v1/query/directory?room_alias=A
    GET  /_matrix/federation/v1/make_join/{room}/{user}?ver=...
    GET  /_matrix/federation/v1/state/{room}?event_id=E
    GET  /_matrix/federation/v1/state_ids/{room}?event_id=E
    GET  /_matrix/federation/v1/event/{event}
    GET  /_matrix/federation/v1/timestamp_to_event/{room}?ts=&dir=
    PUT  /_matrix/federation/v{1,2}/send_join/{room}/{event}
    GET  /_matrix/key/v2/server
    GET  /_matrix/key/v2/query/{server}[/{key}], POST /_matrix/key/v2/query

Every federation request must carry a valid X-Matrix signature for
destination NAME. The reads (directory, state, state_ids, event,
timestamp_to_event) are served to origin NAME only, signed with NAME's
key, as a real Synapse serves the requests signed with its own key; make_join
and send_join also to the remote servers registered with add_remote (the
joining servers whose joins the edge's forwarder replays here, and whose
requests reach us through the edge's fallback). Anything else: 401
M_UNAUTHORIZED (the reason in .auth_failures).

What the tests steer (every method holds the server's lock; the room
changes as a homeserver's would, each change one signed event on top of
the forward extremities, which it then replaces):

    add_members(n | users=[...])  new joined members
    ban(user) / kick(user) / leave(user)
    set_power_levels({...})       the new content merged into the old
    set_join_rule("invite")       and allow= for restricted rules
    message()                     a message: the new only extremity
    add_soft_failed(...)          an event served by /event but never in
                                  state nor among the extremities (what a
                                  homeserver keeps of a soft-failed event)
    forge(event_id, how)          serve that event broken ("signature",
                                  "content": its hash no longer matches)
    soft_fail_joins               users (or True: all) whose send_join is
                                  answered 200 but left out of the room,
                                  as Synapse does; a join of a user the
                                  current state bans is soft-failed anyway
    refuse_joins                  users whose send_join gets 403
    answer_429(endpoint, ms, n)   the next n requests of endpoint get 429
                                  M_LIMIT_EXCEEDED with retry_after_ms
    rate = (per_s, burst)         Synapse-like per-origin rate limit
    down() / up()                 close the listener / listen again
    use_registration(path)        the Application Service registration
                                  sync wrote: push(events) PUTs a
                                  transaction to its url with hs_token;
                                  auto_push=True pushes every change

and what they read back: counts (requests per endpoint), hits (each
request: endpoint, target, status, bytes in and out, times), make_join_users,
auth_failures, soft_failed (event ID -> PDU), pushes.

From the command line (the README demo):

    /usr/bin/python3 t/lib/mxj_homeserver.py --room-members 3000 \\
        [--servers 60] [--version 10] [--name hs.example.org] [--seed 0] \\
        [--port 0] [--key-file FILE]

prints its URL, server name, room ID, alias and key file, and serves
until interrupted.
"""

import argparse
import collections
import copy
import hashlib
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from canonicaljson import encode_canonical_json
from signedjson.key import (decode_signing_key_base64,
                            decode_verify_key_bytes, get_verify_key,
                            write_signing_keys)
from signedjson.sign import SignatureVerifyException, sign_json, \
    verify_signed_json
from unpaddedbase64 import decode_base64, encode_base64

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mxj_authcheck  # noqa: E402
import mxj_room  # noqa: E402
from mxj_joiner import parse_xmatrix  # noqa: E402
from mxj_remote import _Base  # noqa: E402

DEFAULT_NAME = "hs.example.org"
FED = "/_matrix/federation/"
DAY_MS = 24 * 3600 * 1000

# the reads a sync makes: served to NAME alone
READS = ("directory", "state", "state_ids", "event", "timestamp_to_event")


def now_ms():
    return int(time.time() * 1000)


def server_of(ident):
    return ident.split(":", 1)[1]


def ref_id(r):
    return r[0] if isinstance(r, list) else r


def home_key(name, seed=0):
    """NAME's signing key: deterministic per (name, seed), key version
    a_1, like the generated rooms' keys."""
    raw = hashlib.sha256(f"mxj-homeserver:{seed}:{name}".encode()).digest()
    return decode_signing_key_base64("ed25519", "a_1", encode_base64(raw))


class HomeRoom(mxj_room.Room):
    """An mxj_room.Room whose first server, the creator's (and so the
    room ID's and the alias's), is NAME, signing with NAME's key; keys:
    {server: SigningKey} for servers that already have one (one key per
    server across rooms, as in the real world)."""

    def __init__(self, name, key, version="10", members=100, servers=10,
                 seed=0, keys=None, **kw):
        self._home = (name, key, dict(keys or {}))
        super().__init__(str(version), members, servers, seed, **kw)

    def _build(self, *args):
        name, key, keys = self._home
        old = self.servers[0]
        self.server_keys.pop(old, None)
        self.servers[0] = name
        self.server_keys[name] = key
        for s, k in keys.items():
            if s in self.server_keys:
                self.server_keys[s] = k
        self.creator = f"@admin:{name}"
        self.alias = f"#room{self.seed}:{name}"
        if self.room_id is not None:
            self.room_id = self.room_id.rsplit(":", 1)[0] + ":" + name
        super()._build(*args)


class Hit:
    """One request as served."""

    def __init__(self, endpoint, method, target, origin, status, bytes_in,
                 bytes_out, t, wall_ms):
        self.endpoint = endpoint
        self.method = method
        self.target = target
        self.origin = origin
        self.status = status
        self.bytes_in = bytes_in
        self.bytes_out = bytes_out
        self.t = t                  # time.monotonic() at arrival
        self.wall_ms = wall_ms
        self.retry_after_ms = None  # of a 429
        self.dur = 0.0              # seconds spent making the answer

    def __repr__(self):
        return (f"<Hit {self.endpoint} {self.method} {self.target[:90]} "
                f"-> {self.status} at {self.wall_ms}>")


class _Reply(Exception):
    def __init__(self, status, obj, headers=()):
        super().__init__(status)
        self.status = status
        self.obj = obj
        self.headers = list(headers)


def _err(status, errcode, error, **extra):
    obj = {"errcode": errcode, "error": error}
    obj.update(extra)
    return _Reply(status, obj)


# -- the registration file (YAML) -------------------------------------------

def _scalar(text):
    t = text.strip()
    if not t:
        return None
    if t[0] in "'\"":
        q = t[0]
        end = t.rfind(q)
        body = t[1:end] if end > 0 else t[1:]
        if q == "'":
            return body.replace("''", "'")
        return json.loads('"' + body + '"')
    t = re.sub(r"\s+#.*$", "", t)
    low = t.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("null", "~"):
        return None
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    return t


def parse_registration(text):
    """The registration as a dict: JSON, or the block YAML a registration
    is written in (mappings, lists of mappings, scalars). Enough for the
    file sync writes; python3-yaml, when installed, is used to check it
    elsewhere."""
    s = text.strip()
    if s.startswith("{"):
        return json.loads(s)
    lines = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#") \
                or raw.strip() == "---":
            continue
        lines.append((len(raw) - len(raw.lstrip(" ")), raw.strip()))
    pos = 0

    def block(indent):
        nonlocal pos
        if pos < len(lines) and lines[pos][1].startswith("- ") or \
                pos < len(lines) and lines[pos][1] == "-":
            out = []
            while pos < len(lines) and lines[pos][0] == indent and \
                    (lines[pos][1].startswith("- ") or lines[pos][1] == "-"):
                ind, content = lines[pos]
                rest = content[1:].strip()
                if not rest:
                    pos += 1
                    out.append(block(lines[pos][0]) if pos < len(lines)
                               and lines[pos][0] > indent else None)
                    continue
                if re.match(r"^[^'\"][^:]*:(\s|$)", rest):
                    # a mapping starting on the dash line
                    lines[pos] = (ind + 2, rest)
                    out.append(block(ind + 2))
                else:
                    out.append(_flow(rest))
                    pos += 1
            return out
        out = {}
        while pos < len(lines) and lines[pos][0] == indent:
            content = lines[pos][1]
            m = re.match(r"^(\"[^\"]*\"|'[^']*'|[^:]+):(?:\s+(.*))?$",
                         content)
            if not m:
                raise ValueError(f"cannot read registration line "
                                 f"{content!r}")
            k = _scalar(m.group(1))
            v = m.group(2)
            pos += 1
            if v is None or v.strip() == "":
                if pos < len(lines) and (lines[pos][0] > indent or (
                        lines[pos][0] == indent
                        and lines[pos][1].startswith("-"))):
                    out[k] = block(lines[pos][0])
                else:
                    out[k] = None
            else:
                out[k] = _flow(v)
        return out

    def _flow(v):
        v = v.strip()
        if v.startswith("[") or v.startswith("{"):
            return json.loads(v)
        return _scalar(v)

    return block(lines[0][0]) if lines else {}


def as_event(ev, room_id, eid):
    """A PDU as the Application Service API carries it (the fields the
    client-server API exposes)."""
    out = {"event_id": eid, "type": ev["type"], "sender": ev["sender"],
           "content": ev.get("content", {}), "room_id": room_id,
           "origin_server_ts": ev["origin_server_ts"],
           "unsigned": {"age": max(0, now_ms() - ev["origin_server_ts"])}}
    if "state_key" in ev:
        out["state_key"] = ev["state_key"]
    return out


# -- the homeserver -----------------------------------------------------------

class Homeserver(_Base):
    """See the module docstring.

    Homeserver(name="hs.example.org", members=100, servers=10,
    version="10", seed=0) generates its room (a HomeRoom); Homeserver(
    room=r) serves an existing mxj_room.Room as its servers[0] (or name=,
    one of the room's servers): the room signs that server's events with
    the key the homeserver then owns. key_file: where the Synapse-format
    key goes (a temporary file by default, removed at stop())."""

    def __init__(self, name=None, room=None, members=100, servers=10,
                 version="10", seed=0, key_file=None, port=0, avoid=(),
                 remotes=(), room_kw=None):
        self._lock = threading.RLock()
        if room is None:
            self.name = name or DEFAULT_NAME
            self.key = home_key(self.name, seed)
            room = HomeRoom(self.name, self.key, version, members, servers,
                            seed, **(room_kw or {}))
        else:
            self.name = name or room.servers[0]
            self.key = room.add_server(self.name)
        self.key_id = f"{self.key.alg}:{self.key.version}"
        self.rooms = {}
        self.aliases = {}
        self.remotes = {}
        self._canon = {}                # event ID -> canonical bytes
        self._state_cache = {}          # (room ID, E) -> {key: event ID}
        self._chain_cache = {}          # event ID -> frozenset auth chain
        self.soft_failed = {}           # event ID -> PDU
        self._soft_rooms = {}           # event ID -> room ID
        self._soft_state = {}           # event ID -> state before it
        self.forged = {}                # event ID -> how
        self.fail_events = set()        # event IDs /event answers 500
        self.soft_fail_joins = set()    # users, or True
        self.refuse_joins = set()       # users whose send_join gets 403
        self.join_answers = {}          # event ID -> what send_join did
        self.rate = None                # (per second, burst) per origin
        self._buckets = {}
        self._limits = collections.defaultdict(list)   # endpoint -> [ms]
        self.counts = collections.Counter()
        self.hits = []
        self.auth_failures = []
        self.make_join_users = []
        self.appservice = None
        self.auto_push = False
        self.push_style = "synapse-1.67"
        self.pushes = []
        self._txn = 0
        self.add_room(room)
        for r in remotes:
            self.add_remote(r)
        self._own_key_file = key_file is None
        if key_file is None:
            fd, key_file = tempfile.mkstemp(prefix="mxj-hs-", suffix=".key")
            os.close(fd)
        self.key_file = str(key_file)
        with open(self.key_file, "w") as f:
            write_signing_keys(f, [self.key])
        super().__init__(port, avoid)

    # -- set-up ---------------------------------------------------------------

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def room(self):
        """The first room."""
        return next(iter(self.rooms.values()))

    def new_room(self, version="10", members=20, servers=3, seed=0,
                 **kw):
        """Another room of NAME's, its servers signing with the keys they
        have in our other rooms; added and returned."""
        keys = {}
        for r in self.rooms.values():
            keys.update(r.server_keys)
        for s, rs in self.remotes.items():
            keys[s] = rs.signing_key()
        return self.add_room(HomeRoom(self.name, self.key, version, members,
                                      servers, seed, keys=keys, **kw))

    def add_room(self, room):
        """Serves room too; its servers must sign with the keys they have
        in our other rooms (one key document per server)."""
        with self._lock:
            if self.name not in room.server_keys:
                room.add_server(self.name, key=self.key)
            for s, k in room.server_keys.items():
                mine = self._signing_keys(s)
                if mine and bytes(k) not in {bytes(x)
                                             for x in mine.values()}:
                    raise ValueError(f"{room.room_id}: {s} signs with "
                                     "another key than in our other "
                                     "rooms")
            self.rooms[room.room_id] = room
            if server_of(room.alias) == self.name:
                self.aliases[room.alias] = room.room_id
        return room

    def add_alias(self, alias, room_id=None):
        with self._lock:
            self.aliases[alias] = room_id or self.room.room_id

    def add_remote(self, remote):
        """A mxj_remote.RemoteServer allowed to make_join / send_join (its
        keys are also served by our notary); the rooms sign its users'
        events with its key."""
        with self._lock:
            self.remotes[remote.name] = remote
            for r in self.rooms.values():
                r.add_server(remote.name, key=remote.signing_key())
        return remote

    def stop(self):
        super().stop()
        if self._own_key_file:
            try:
                os.unlink(self.key_file)
            except OSError:
                pass

    # -- reading back ---------------------------------------------------------

    def count(self, endpoint=None, origin=None):
        with self._lock:
            return sum(1 for h in self.hits
                       if (endpoint is None or h.endpoint == endpoint)
                       and (origin is None or h.origin == origin))

    def hits_since(self, n):
        with self._lock:
            return list(self.hits[n:])

    def mark(self):
        """A position in hits, for hits_since()."""
        with self._lock:
            return len(self.hits)

    def bytes_out(self, since=0):
        with self._lock:
            return sum(h.bytes_out for h in self.hits[since:])

    def bytes_in(self, since=0):
        with self._lock:
            return sum(h.bytes_in for h in self.hits[since:])

    # -- keys -----------------------------------------------------------------

    def _signing_keys(self, server):
        """{key ID: SigningKey} of a server we know (ours, a room's, a
        remote's)."""
        if server == self.name:
            return {self.key_id: self.key}
        if server in self.remotes:
            return dict(self.remotes[server].keys)
        for r in self.rooms.values():
            k = r.server_keys.get(server)
            if k is not None:
                return {f"{k.alg}:{k.version}": k}
        return {}

    def verify_keys(self):
        """{server: VerifyKey} of every server we know (for judges)."""
        out = {}
        for r in self.rooms.values():
            for s in r.server_keys:
                out[s] = get_verify_key(next(iter(
                    self._signing_keys(s).values())))
        for s, rs in self.remotes.items():
            out[s] = get_verify_key(rs.signing_key())
        out[self.name] = get_verify_key(self.key)
        return out

    def key_document(self, server, bad_signature=False):
        keys = self._signing_keys(server)
        if not keys:
            return None
        doc = {"server_name": server,
               "valid_until_ts": now_ms() + DAY_MS,
               "verify_keys": {kid: {"key": encode_base64(
                   get_verify_key(k).encode())} for kid, k in keys.items()},
               "old_verify_keys": {}}
        for k in keys.values():
            sign_json(doc, server, k)
        if bad_signature:
            for kid, sig in doc["signatures"][server].items():
                raw = bytearray(decode_base64(sig))
                raw[0] ^= 1
                doc["signatures"][server][kid] = encode_base64(bytes(raw))
        return doc

    bad_key_signature = frozenset()     # servers whose self-signature breaks

    # -- events ---------------------------------------------------------------

    def _canonical(self, eid, ev):
        b = self._canon.get(eid)
        if b is None:
            b = encode_canonical_json(ev)
            self._canon[eid] = b
        return b

    def _served(self, room, eid):
        """The PDU as we serve it (forged when told)."""
        ev = room.events.get(eid) or self.soft_failed.get(eid)
        if ev is None:
            return None, None
        how = self.forged.get(eid)
        if how is None:
            return ev, self._canonical(eid, ev)
        bad = copy.deepcopy(ev)
        if how == "signature":
            server = server_of(ev["sender"])
            sigs = bad["signatures"][server]
            for kid, sig in sigs.items():
                raw = bytearray(decode_base64(sig))
                raw[5] ^= 0x40
                sigs[kid] = encode_base64(bytes(raw))
        elif how == "content":
            # the content changes, the hash (and, in v3+, the reference
            # hash: redaction keeps membership only) does not
            bad["content"] = dict(bad.get("content", {}))
            bad["content"]["forged"] = "not what was signed"
        else:
            raise ValueError(how)
        return bad, encode_canonical_json(bad)

    def _room_of_event(self, eid):
        for r in self.rooms.values():
            if eid in r.events:
                return r
        rid = self._soft_rooms.get(eid)
        return self.rooms.get(rid)

    def state_before(self, room, eid):
        """{(type, state_key): event ID}: the room's state before event eid
        (the state events before it in the room's order; the generated
        DAG is a chain, forks hold messages only)."""
        key = (room.room_id, eid)
        st = self._state_cache.get(key)
        if st is not None:
            return st
        if eid in self._soft_state:
            return self._soft_state[eid]
        st = {}
        for e in room.order:
            if e == eid:
                break
            ev = room.events[e]
            if "state_key" in ev:
                st[(ev["type"], ev["state_key"])] = e
        else:
            raise KeyError(eid)
        self._state_cache[key] = st
        return st

    def _auth_ids(self, room, eid):
        ev = room.events.get(eid) or self.soft_failed[eid]
        ids = [ref_id(a) for a in ev.get("auth_events", [])]
        if room.v >= 12 and eid != room.create_id:
            ids.append(room.create_id)
        return ids

    def auth_chain(self, room, ids):
        """The auth events of ids, recursively (not ids themselves unless
        one authorises another), in the room's order."""
        seen = set()
        todo = []
        for e in ids:
            todo.extend(self._auth_ids(room, e))
        while todo:
            e = todo.pop()
            if e in seen:
                continue
            seen.add(e)
            todo.extend(self._auth_ids(room, e))
        pos = {e: i for i, e in enumerate(room.order)} \
            if len(seen) > 64 else None
        if pos is None:
            return sorted(seen, key=room.order.index)
        return sorted(seen, key=pos.__getitem__)

    # -- changes (the room changes as a homeserver's does) -------------------

    def _add_state(self, room, etype, state_key, content, sender):
        membership = content.get("membership") \
            if etype == "m.room.member" else None
        eid = room.add(etype, sender, copy.deepcopy(content),
                       state_key=state_key,
                       auth=room.auth_for(etype, sender, state_key,
                                          membership),
                       prev=list(room.extremity_ids))
        room.extremity_ids = [eid]
        return eid

    def _changed(self, room, ids):
        if self.auto_push and self.appservice is not None:
            self.push([(room, e) for e in ids])
        return ids

    def _pick(self, room):
        return room if room is not None else self.room

    def add_members(self, n=1, users=None, room=None, server=None):
        """n new joined members (of the room's servers in turn, or of
        server), or the users given; returns their join event IDs."""
        with self._lock:
            room = self._pick(room)
            if users is None:
                base = len(room.users)
                users = []
                for k in range(n):
                    srv = server or room.servers[(base + k) %
                                                 len(room.servers)]
                    users.append(f"@new{base + k}:{srv}")
            ids = []
            for u in users:
                ids.append(self._add_state(room, "m.room.member", u,
                                           {"membership": "join"}, u))
                room.users.append(u)
        return self._changed(room, ids)

    def ban(self, user, room=None, sender=None, reason="spam"):
        with self._lock:
            room = self._pick(room)
            ids = [self._add_state(room, "m.room.member", user,
                                   {"membership": "ban", "reason": reason},
                                   sender or room.creator)]
        return self._changed(room, ids)

    def kick(self, user, room=None, sender=None):
        with self._lock:
            room = self._pick(room)
            ids = [self._add_state(room, "m.room.member", user,
                                   {"membership": "leave"},
                                   sender or room.creator)]
        return self._changed(room, ids)

    def leave(self, user, room=None):
        return self.kick(user, room, sender=user)

    def set_power_levels(self, changes, room=None):
        """The power levels content updated with changes (a dict; nested
        "users"/"events" dicts merged)."""
        with self._lock:
            room = self._pick(room)
            old = room.state_event_of("m.room.power_levels")
            content = copy.deepcopy(old["content"]) if old else {}
            for k, v in changes.items():
                if isinstance(v, dict) and isinstance(content.get(k), dict):
                    content[k].update(v)
                else:
                    content[k] = v
            ids = [self._add_state(room, "m.room.power_levels", "",
                                   content, room.creator)]
        return self._changed(room, ids)

    def set_join_rule(self, rule, allow=None, room=None):
        with self._lock:
            room = self._pick(room)
            content = {"join_rule": rule}
            if allow is not None:
                content["allow"] = allow
            ids = [self._add_state(room, "m.room.join_rules", "", content,
                                   room.creator)]
        return self._changed(room, ids)

    def add_state(self, etype, state_key, content, sender=None, room=None):
        with self._lock:
            room = self._pick(room)
            ids = [self._add_state(room, etype, state_key, content,
                                   sender or room.creator)]
        return self._changed(room, ids)

    def message(self, body="hello", sender=None, room=None):
        """A message on top of every forward extremity: the only one."""
        with self._lock:
            room = self._pick(room)
            sender = sender or room.creator
            eid = room.add("m.room.message", sender,
                           {"msgtype": "m.text", "body": body},
                           auth=room.auth_for("m.room.message", sender),
                           prev=list(room.extremity_ids), state=False)
            room.extremity_ids = [eid]
        return self._changed(room, [eid])

    def add_soft_failed(self, sender=None, room=None, kind="message"):
        """An event as a homeserver keeps a soft-failed one: signed,
        deeper than every extremity (prev_events: the extremities), served
        by /event (and timestamp_to_event), but neither an extremity nor
        in state. kind "message", or "join" (sender's join: for a banned
        sender, the join that Synapse soft-fails). Returns its ID."""
        with self._lock:
            room = self._pick(room)
            sender = sender or room.creator
            prev = list(room.extremity_ids)
            room.ts += 1
            ev = {"type": "m.room.message", "sender": sender,
                  "content": {"msgtype": "m.text",
                              "body": "soft-failed: nobody sees this"},
                  "depth": max(room.events[p]["depth"] for p in prev) + 1,
                  "origin_server_ts": room.ts,
                  "prev_events": [room.ref(p) for p in prev]}
            if kind == "join":
                ev["type"] = "m.room.member"
                ev["state_key"] = sender
                ev["content"] = {"membership": "join"}
                auth = room.auth_for("m.room.member", sender, sender,
                                     "join")
            else:
                auth = room.auth_for("m.room.message", sender)
            ev["auth_events"] = [room.ref(a) for a in auth
                                 if room.v < 12 or a != room.create_id]
            ev["room_id"] = room.room_id
            if room.v <= 5:
                ev["origin"] = server_of(sender)
            if room.v <= 2:
                ev["event_id"] = room._new_event_id(server_of(sender))
            room.sign(ev)
            eid = mxj_room.event_id(room.version, ev)
            self.soft_failed[eid] = ev
            self._soft_rooms[eid] = room.room_id
            self._soft_state[eid] = dict(room.state)
        return eid

    def forge(self, eid, how="signature"):
        with self._lock:
            self.forged[eid] = how

    def unforge(self, eid=None):
        with self._lock:
            if eid is None:
                self.forged.clear()
            else:
                self.forged.pop(eid, None)

    def answer_429(self, endpoint, retry_after_ms=500, times=1):
        with self._lock:
            self._limits[endpoint].extend([retry_after_ms] * times)

    # -- the Application Service API (as the homeserver pushes it) ----------

    def use_registration(self, path, auto_push=True):
        """Reads the registration sync wrote; returns it (a dict)."""
        with open(path) as f:
            reg = parse_registration(f.read())
        with self._lock:
            self.appservice = reg
            self.auto_push = auto_push
        return reg

    def _as_interested(self, room_id):
        reg = self.appservice or {}
        for ns in (reg.get("namespaces") or {}).get("rooms") or []:
            rx = ns.get("regex") if isinstance(ns, dict) else None
            if rx and re.fullmatch(rx, room_id):
                return True
        return False

    def push(self, items, txn_id=None, token=None, where=None,
             timeout=10, path=None):
        """PUTs one transaction of events ([(room, event ID)] or
        [AS-format dicts]) to the registration's url, as a homeserver
        does (events of rooms outside its namespaces are left out; client
        format: no prev_events, no signatures). By default as Synapse 1.67
        sends it (push_style "synapse-1.67": the legacy path
        {url}/transactions/{txnId}, the hs_token as the access_token
        parameter); push_style "v1": /_matrix/app/v1/transactions and the
        Bearer header. where ("header", "query") and path override.
        Returns (status, body, seconds)."""
        legacy = self.push_style == "synapse-1.67"
        if where is None:
            where = "query" if legacy else "header"
        if path is None:
            path = "/transactions/" if legacy else \
                "/_matrix/app/v1/transactions/"
        reg = self.appservice
        if reg is None:
            raise RuntimeError("no registration: use_registration() first")
        events = []
        with self._lock:
            for it in items:
                if isinstance(it, dict):
                    events.append(it)
                    continue
                room, eid = it
                if not self._as_interested(room.room_id):
                    continue
                ev = room.events.get(eid) or self.soft_failed[eid]
                events.append(as_event(ev, room.room_id, eid))
            if txn_id is None:
                self._txn += 1
                txn_id = f"{int(time.time() * 1000)}-{self._txn}"
        if not events and not any(isinstance(i, dict) for i in items):
            return None, None, 0.0
        token = reg.get("hs_token") if token is None else token
        url = reg["url"].rstrip("/") + path + \
            urllib.parse.quote(str(txn_id), safe="")
        headers = {"Content-Type": "application/json"}
        if where == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif where == "query":
            url += "?access_token=" + urllib.parse.quote(token, safe="")
        body = json.dumps({"events": events, "ephemeral": []}).encode()
        req = urllib.request.Request(url, data=body, method="PUT",
                                     headers=headers)
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, out = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, out = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            status, out = None, str(e).encode()
        dt = time.monotonic() - t0
        with self._lock:
            self.pushes.append((txn_id, status, out, dt, events))
        return status, out, dt

    # -- HTTP -----------------------------------------------------------------

    def _record(self, req):
        pass                        # a body that never came: nothing to do

    def _answer(self, req):
        t = time.monotonic()
        wall = now_ms()
        path, _, query = req.target.partition("?")
        endpoint, origin = "other", None
        try:
            endpoint, params = self._route(req.method, path)
            with self._lock:
                if self._limits.get(endpoint):
                    ms = self._limits[endpoint].pop(0)
                    raise _err(429, "M_LIMIT_EXCEEDED", "Too Many Requests",
                               retry_after_ms=ms)
            if path.startswith(FED):
                origin = self._authenticate(req, endpoint)
                self._rate_limit(origin)
            status, obj = self._dispatch(endpoint, params, query, req,
                                         origin)
            headers = []
        except _Reply as r:
            status, obj, headers = r.status, r.obj, r.headers
        body = obj if isinstance(obj, bytes) else encode_canonical_json(obj)
        with self._lock:
            self.counts[endpoint] += 1
            hit = Hit(endpoint, req.method, req.target, origin, status,
                      len(req.body or b""), len(body), t, wall)
            if status == 429 and isinstance(obj, dict):
                hit.retry_after_ms = obj.get("retry_after_ms")
            hit.dur = time.monotonic() - t
            self.hits.append(hit)
        return status, [("Content-Type", "application/json")] + headers, \
            body

    _ROUTES = [
        ("GET", r"/_matrix/federation/v1/query/directory", "directory"),
        ("GET", r"/_matrix/federation/v1/make_join/([^/]+)/([^/]+)",
         "make_join"),
        ("GET", r"/_matrix/federation/v1/state/([^/]+)", "state"),
        ("GET", r"/_matrix/federation/v1/state_ids/([^/]+)", "state_ids"),
        ("GET", r"/_matrix/federation/v1/event/([^/]+)", "event"),
        ("POST", r"/_matrix/federation/v1/get_missing_events/([^/]+)",
         "get_missing_events"),
        ("GET", r"/_matrix/federation/v1/timestamp_to_event/([^/]+)",
         "timestamp_to_event"),
        ("PUT", r"/_matrix/federation/(v[12])/send_join/([^/]+)/([^/]+)",
         "send_join"),
        ("GET", r"/_matrix/key/v2/server/?", "key_server"),
        ("GET", r"/_matrix/key/v2/query/([^/]+)(?:/[^/]*)?", "key_query"),
        ("POST", r"/_matrix/key/v2/query", "key_query"),
    ]

    def _route(self, method, path):
        for m, rx, name in self._ROUTES:
            mt = re.fullmatch(rx, path)
            if mt:
                if method != m:
                    raise _err(405, "M_UNRECOGNIZED", "Unrecognized request")
                return name, [urllib.parse.unquote(g) for g in mt.groups()]
        raise _err(404, "M_UNRECOGNIZED", "Unrecognized request")

    def _deny(self, why):
        with self._lock:
            self.auth_failures.append(why)
        raise _err(401, "M_UNAUTHORIZED", why)

    def _authenticate(self, req, endpoint):
        """The X-Matrix origin of the request (destination NAME)."""
        values = [v for k, v in req.headers if k.lower() == "authorization"
                  and v.startswith("X-Matrix")]
        if not values:
            self._deny(f"{endpoint}: no X-Matrix Authorization header")
        content = None
        if req.body:
            try:
                content = json.loads(req.body)
            except ValueError:
                raise _err(400, "M_NOT_JSON", "Content not JSON.")
        why = "no signature verified"
        for value in values:
            try:
                p = parse_xmatrix(value)
            except AssertionError as e:
                raise _err(400, "M_UNAUTHORIZED", f"malformed: {e}")
            origin, kid, sig = p.get("origin"), p.get("key"), p.get("sig")
            if not origin or not kid or not sig:
                raise _err(400, "M_UNAUTHORIZED", "malformed X-Matrix")
            dest = p.get("destination")
            if dest is None:
                why = f"{endpoint}: no destination in X-Matrix (origin " \
                      f"{origin})"
                continue
            if dest != self.name:
                why = f"{endpoint}: destination {dest!r} is not " \
                      f"{self.name!r}"
                continue
            allowed = {self.name} if endpoint in READS else \
                {self.name} | set(self.remotes)
            if origin not in allowed:
                why = f"{endpoint}: origin {origin!r} is not served"
                continue
            key = self._signing_keys(origin).get(kid)
            if key is None:
                why = f"{endpoint}: unknown key {kid} of {origin}"
                continue
            obj = {"method": req.method, "uri": req.target,
                   "origin": origin, "destination": self.name,
                   "signatures": {origin: {kid: sig}}}
            if content is not None:
                obj["content"] = content
            vk = decode_verify_key_bytes(kid, bytes(get_verify_key(key)))
            try:
                verify_signed_json(obj, origin, vk)
            except SignatureVerifyException as e:
                why = f"{endpoint}: bad signature of {origin}: {e}"
                continue
            return origin
        self._deny(why)

    def _rate_limit(self, origin):
        if self.rate is None:
            return
        per_s, burst = self.rate
        with self._lock:
            now = time.monotonic()
            tokens, ts = self._buckets.get(origin, (float(burst), now))
            tokens = min(float(burst), tokens + (now - ts) * per_s)
            if tokens < 1.0:
                self._buckets[origin] = (tokens, now)
                wait = int((1.0 - tokens) / per_s * 1000) + 1
                raise _err(429, "M_LIMIT_EXCEEDED", "Too Many Requests",
                           retry_after_ms=wait)
            self._buckets[origin] = (tokens - 1.0, now)

    def _dispatch(self, endpoint, params, query, req, origin):
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        with self._lock:
            if endpoint == "directory":
                return self._directory(q)
            if endpoint == "make_join":
                return self._make_join(params[0], params[1], q, origin)
            if endpoint in ("state", "state_ids"):
                return self._state(params[0], q, endpoint == "state_ids")
            if endpoint == "event":
                return self._event(params[0])
            if endpoint == "get_missing_events":
                return self._missing(params[0], req)
            if endpoint == "timestamp_to_event":
                return self._timestamp_to_event(params[0], q)
            if endpoint == "send_join":
                return self._send_join(params[0], params[1], params[2],
                                       req, origin)
            if endpoint == "key_server":
                return 200, self.key_document(self.name)
            if endpoint == "key_query":
                return self._key_query(params, req)
        raise _err(404, "M_UNRECOGNIZED", "Unrecognized request")

    def _room(self, room_id):
        r = self.rooms.get(room_id)
        if r is None:
            raise _err(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        return r

    def _directory(self, q):
        alias = (q.get("room_alias") or [None])[0]
        rid = self.aliases.get(alias)
        if rid is None:
            raise _err(404, "M_NOT_FOUND", "Room alias not found")
        room = self.rooms[rid]
        counts = collections.Counter(server_of(u) for u in room.joined())
        servers = sorted(counts, key=lambda s: (s != self.name, -counts[s],
                                                s))
        return 200, {"room_id": rid, "servers": servers}

    def _join_rule(self, room):
        jr = room.state_event_of("m.room.join_rules")
        return "invite" if jr is None else \
            jr["content"].get("join_rule", "invite")

    def _make_join(self, room_id, user, q, origin):
        room = self._room(room_id)
        vers = q.get("ver") or ["1"]
        if room.version not in vers:
            raise _err(400, "M_INCOMPATIBLE_ROOM_VERSION",
                       "Your homeserver does not support the features "
                       "required to join this room",
                       room_version=room.version)
        self.make_join_users.append((user, origin))
        if ":" not in user or server_of(user) != origin:
            raise _err(403, "M_FORBIDDEN", "User not from origin")
        membership = room.membership(user)
        rule = self._join_rule(room)
        if membership == "ban":
            raise _err(403, "M_FORBIDDEN", "You are banned from this room")
        if membership != "join" and rule != "public" and \
                membership != "invite":
            raise _err(403, "M_FORBIDDEN",
                       f"You are not invited to this room (join rule "
                       f"{rule})")
        prev = list(room.extremity_ids)
        ev = {"type": "m.room.member", "room_id": room.room_id,
              "sender": user, "state_key": user,
              "content": {"membership": "join"},
              "depth": max(room.events[p]["depth"] for p in prev) + 1,
              "origin_server_ts": now_ms(),
              "prev_events": [room.ref(p) for p in prev],
              "auth_events": [room.ref(a) for a in room.auth_for(
                  "m.room.member", user, user, "join")
                  if room.v < 12 or a != room.create_id]}
        if room.v <= 10:
            ev["origin"] = self.name
        if room.v <= 2:
            ev["event_id"] = room._new_event_id(self.name)
        return 200, {"room_version": room.version, "event": ev}

    def _state(self, room_id, q, ids_only):
        room = self._room(room_id)
        eid = (q.get("event_id") or [None])[0]
        if eid is None:
            raise _err(400, "M_MISSING_PARAM", "event_id missing")
        if eid not in room.events and self._soft_rooms.get(eid) != room_id:
            raise _err(404, "M_NOT_FOUND", f"Unknown event {eid}")
        st = self.state_before(room, eid)
        state_ids = list(st.values())
        chain = self.auth_chain(room, state_ids)
        if ids_only:
            return 200, {"pdu_ids": state_ids, "auth_chain_ids": chain}
        parts = [b'{"auth_chain":[',
                 b",".join(self._served(room, e)[1] for e in chain),
                 b'],"pdus":[',
                 b",".join(self._served(room, e)[1] for e in state_ids),
                 b"]}"]
        return 200, b"".join(parts)

    def _event(self, eid):
        room = self._room_of_event(eid)
        if room is None:
            raise _err(404, "M_NOT_FOUND", f"Could not find event {eid}")
        if eid in self.fail_events:
            raise _err(500, "M_UNKNOWN", "Internal server error")
        ev, raw = self._served(room, eid)
        return 200, b'{"origin":' + json.dumps(self.name).encode() + \
            b',"origin_server_ts":' + str(now_ms()).encode() + \
            b',"pdus":[' + raw + b"]}"

    def _missing(self, room_id, req):
        """As Synapse: the ancestors of latest_events that are not
        earliest_events or theirs (latest excluded), at most limit, the
        deepest first found, answered oldest first."""
        room = self._room(room_id)
        try:
            body = json.loads(req.body)
            earliest = set(body.get("earliest_events") or [])
            latest = list(body["latest_events"])
            limit = int(body.get("limit", 10))
        except (ValueError, KeyError, TypeError):
            raise _err(400, "M_BAD_JSON", "bad body")
        stop, todo = set(), list(earliest)
        while todo:
            e = todo.pop()
            if e in stop or e not in room.events:
                continue
            stop.add(e)
            todo.extend(ref_id(r) for r in room.events[e]["prev_events"])
        out, seen = [], set(latest)
        front = []
        for e in latest:
            if e in room.events:
                front.extend(ref_id(r) for r in room.events[e]["prev_events"])
        while front and len(out) < limit:
            front.sort(key=lambda x: room.events[x]["depth"]
                       if x in room.events else -1)
            e = front.pop()
            if e in seen or e in stop or e not in room.events:
                continue
            seen.add(e)
            out.append(e)
            front.extend(ref_id(r) for r in room.events[e]["prev_events"])
        out.sort(key=lambda x: room.events[x]["depth"])
        raws = [self._served(room, e)[1] for e in out]
        return 200, b'{"events":[' + b",".join(raws) + b"]}"

    def _timestamp_to_event(self, room_id, q):
        """Synapse's answer includes soft-failed events: the latest event
        (ours: the deepest, soft-failed ones included) at or before ts."""
        room = self._room(room_id)
        cands = [(ev["origin_server_ts"], eid) for eid, ev in
                 list(room.events.items()) + list(self.soft_failed.items())
                 if self._soft_rooms.get(eid, room.room_id) == room_id]
        ts, eid = max(cands)
        return 200, {"event_id": eid, "origin_server_ts": ts}

    def _key_query(self, params, req):
        if req.method == "POST":
            try:
                wanted = list(json.loads(req.body)["server_keys"])
            except (ValueError, KeyError, TypeError):
                raise _err(400, "M_BAD_JSON", "bad query body")
        else:
            wanted = [params[0]]
        docs = []
        for s in wanted:
            doc = self.key_document(s, s in self.bad_key_signature)
            if doc is not None:
                sign_json(doc, self.name, self.key)
                docs.append(doc)
        return 200, {"server_keys": docs}

    def _send_join(self, v, room_id, path_eid, req, origin):
        room = self._room(room_id)
        try:
            ev = json.loads(req.body)
        except (ValueError, TypeError):
            raise _err(400, "M_NOT_JSON", "Content not JSON.")
        if not isinstance(ev, dict) or ev.get("room_id") != room_id:
            raise _err(400, "M_BAD_JSON", "room_id mismatch")
        if ev.get("type") != "m.room.member" or \
                (ev.get("content") or {}).get("membership") != "join" or \
                ev.get("state_key") != ev.get("sender"):
            raise _err(400, "M_BAD_JSON", "Not a join event")
        if server_of(ev["sender"]) != origin:
            raise _err(403, "M_FORBIDDEN", "User not from origin")
        keys = {s: get_verify_key(next(iter(self._signing_keys(s).values())))
                for s in {origin, server_of(ev["sender"])}
                if self._signing_keys(s)}
        try:
            eid = mxj_authcheck.verify_crypto(room.version, ev, keys)
        except AssertionError as e:
            raise _err(403, "M_FORBIDDEN", f"Signature check failed: {e}")
        if eid != path_eid:
            raise _err(400, "M_BAD_JSON", "event ID mismatch")
        for p in ev.get("prev_events", []):
            if ref_id(p) not in room.events:
                raise _err(400, "M_BAD_JSON", f"unknown prev_event "
                                              f"{ref_id(p)}")
        before = dict(room.state)
        if ev["sender"] in self.refuse_joins:
            raise _err(403, "M_FORBIDDEN", "refused on purpose")
        if eid not in self.join_answers:
            user = ev["sender"]
            banned = room.membership(user) == "ban"
            told = self.soft_fail_joins is True or \
                user in self.soft_fail_joins
            if banned or told:
                self.soft_failed[eid] = ev
                self._soft_rooms[eid] = room_id
                self._soft_state[eid] = before
                self.join_answers[eid] = "soft-failed"
            else:
                room.events[eid] = ev
                room.order.append(eid)
                room.state[("m.room.member", user)] = eid
                prev = [ref_id(p) for p in ev["prev_events"]]
                room.extremity_ids = [e for e in room.extremity_ids
                                      if e not in prev] + [eid]
                room.last = eid
                room.users.append(user)
                self.join_answers[eid] = "accepted"
                self._changed(room, [eid])
        state_ids = list(before.values())
        chain = self.auth_chain(room, state_ids + [eid]
                                if eid in room.events else state_ids)
        doc = (b'{"auth_chain":[' +
               b",".join(self._served(room, e)[1] for e in chain) +
               b'],"event":' + encode_canonical_json(ev) +
               b',"state":[' +
               b",".join(self._served(room, e)[1] for e in state_ids) +
               b"]}")
        if v == "v1":
            return 200, b"[200," + doc + b"]"
        return 200, doc


# -- the command line ---------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(
        description="A stand-in homeserver serving one generated room "
                    "over federation on 127.0.0.1.")
    p.add_argument("--room-members", type=int, default=100)
    p.add_argument("--servers", type=int, default=10)
    p.add_argument("--version", default="10", choices=mxj_room.VERSIONS)
    p.add_argument("--name", default=DEFAULT_NAME)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--key-file", help="where NAME's signing key is "
                                      "written (default: a temporary file)")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    hs = Homeserver(a.name, members=a.room_members, servers=a.servers,
                    version=a.version, seed=a.seed, key_file=a.key_file,
                    port=a.port)
    r = hs.room
    print(f"url {hs.url}")
    print(f"server_name {hs.name}")
    print(f"room_id {r.room_id}")
    print(f"alias {r.alias}")
    print(f"room_version {r.version}")
    print(f"members {len(r.joined())}")
    print(f"signing_key {hs.key_file}")
    print(f"(generated in {time.monotonic() - t0:.1f} s; Ctrl-C stops)",
          flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    hs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
