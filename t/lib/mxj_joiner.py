"""A joining server for the send_join tests, and the judge of the answers.

Built on matrix-org's libraries only (python3-signedjson, -canonicaljson,
-unpaddedbase64) and on the generated room of t/lib/mxj_room.py: nothing
here runs or trusts our C code, and no expected value is read back from
the code under test.

    Joiner            a remote user on a RemoteServer (t/lib/mxj_remote.py):
                      fills in a make_join template as a joining server
                      does (reference §1: origin_server_ts, its own origin
                      where the template has one, v1/v2 its own event ID),
                      signs it, and builds the send_join request.
    View              the edge as docs/directives.md "matrix_send_join"
                      describes it: the loaded snapshot plus the joins it
                      accepted, each join replacing its prev_events among
                      the forward extremities; state_at(prev_events) is the
                      snapshot's state plus the accepted joins that are
                      ancestors of those prev_events.
    check_answer      judges a send_join answer event by event: hashes,
                      signatures, event IDs, room_id, the events of the
                      generated room byte for byte (as parsed JSON), the
                      state against the View, the auth chain closed and
                      exact, no event twice.
    xmatrix_verifies  checks an Authorization value the edge stored (the
                      outbox) against the request it claims to sign.

A failed check raises AssertionError with what was expected and what came.
"""

import copy
import json
import re
import time
import urllib.parse

from canonicaljson import encode_canonical_json
from signedjson.key import (decode_verify_key_bytes, get_verify_key,
                            read_signing_keys)
from signedjson.sign import SignatureVerifyException, verify_signed_json

import mxj_authcheck as judge
import mxj_room

SEND_JOIN = "/_matrix/federation/v{v}/send_join/"


def v_of(room_or_version):
    return int(getattr(room_or_version, "version", room_or_version))


def server_of(ident):
    return ident.split(":", 1)[1]


def now_ms():
    return int(time.time() * 1000)


# -- identifiers and requests -------------------------------------------------

def ref_id(r):
    """The event ID of a prev_events / auth_events entry (v1/v2 pairs)."""
    return r[0] if isinstance(r, list) else r


def ref_ids(refs):
    return [ref_id(r) for r in refs]


def event_id(version, ev):
    """v1/v2: the carried ID; v3+: the reference hash (mxj_room)."""
    return mxj_room.event_id(str(version), ev)


def quote_lower(s):
    """Percent-encodes every byte that is not unreserved, with LOWER-case
    hex: a handler that re-encodes (Python and Go write upper case) can
    not produce the same bytes, so a byte-identical URI is a raw one."""
    out = []
    for b in s.encode():
        c = chr(b)
        if c.isalnum() and b < 128 or c in "-._~":
            out.append(c)
        else:
            out.append(f"%{b:02x}")
    return "".join(out)


def send_join_target(room_id, eid, v=2, query="", lower=False):
    enc = quote_lower if lower else \
        (lambda s: urllib.parse.quote(s, safe=""))
    return SEND_JOIN.format(v=v) + enc(room_id) + "/" + enc(eid) + query


def body_bytes(ev, style="canonical"):
    """The request body: canonical JSON, or pretty-printed with the keys in
    another order (valid JSON with the same values: what the outbox must
    keep byte for byte)."""
    if style == "canonical":
        return encode_canonical_json(ev)
    if style == "pretty":
        def reorder(x):
            if isinstance(x, dict):
                return {k: reorder(x[k]) for k in sorted(x, reverse=True)}
            if isinstance(x, list):
                return [reorder(i) for i in x]
            return x
        return json.dumps(reorder(ev), indent=2,
                          ensure_ascii=True).encode() + b"\n"
    raise ValueError(style)


# -- the joining server -------------------------------------------------------

class Joiner:
    """A user of a RemoteServer who joins rooms through the edge."""

    def __init__(self, remote, localpart="joiner"):
        self.remote = remote
        self.user = f"@{localpart}:{remote.name}"
        self._n = 0

    @property
    def server(self):
        return self.remote.name

    def verify_key(self):
        return get_verify_key(self.remote.signing_key())

    def new_event_id(self):
        self._n += 1
        return f"$join{now_ms()}x{self._n}:{self.server}"

    def fill(self, version, template, keep_origin=False, event_id=None):
        """The template made into this server's signed join: a new
        origin_server_ts, origin = this server where the template has one
        (keep_origin: the resident's left as it is, as Synapse 1.134+
        joining servers do), v1/v2 an event ID of this server (as
        Synapse, GMSL and sytest do; event_id= overrides)."""
        ev = copy.deepcopy(template)
        ev["origin_server_ts"] = now_ms()
        if "origin" in ev and not keep_origin:
            ev["origin"] = self.server
        if v_of(version) <= 2:
            ev["event_id"] = event_id or self.new_event_id()
        return self.sign(version, ev)

    def sign(self, version, ev, server=None, key=None):
        """Hashes and signs ev afresh as this server (old hashes and
        signatures dropped)."""
        ev.pop("signatures", None)
        ev.pop("hashes", None)
        return mxj_room.sign_event(str(version), ev, server or self.server,
                                   key or self.remote.signing_key())

    def auth(self, method, uri, body, destination, origin=None):
        """The X-Matrix Authorization value for a request with body bytes
        (the signed object holds the parsed body)."""
        content = json.loads(body) if body is not None else None
        return self.remote.auth_header(method, uri, destination,
                                       content=content, origin=origin)


# -- a room without name or alias (Complement TestSendJoinPartialState...) ----

class PlainRoom(mxj_room.Room):
    """create, the creator's join, power_levels, join_rules (public),
    history_visibility, then joins (and invites by the creator): no name,
    topic or canonical alias, one forward extremity (the last event). The
    creator is @alice of the first server unless given."""

    def __init__(self, version, seed, joined=(), invited=(), creator=None):
        self._plain = (creator, list(joined), list(invited))
        super().__init__(str(version), members=1, servers=1, seed=seed)

    def _build(self, *unused):
        creator, joined, invited = self._plain
        self.creator = creator or f"@alice:{self.servers[0]}"
        content = {"room_version": self.version}
        if self.v <= 10:
            content["creator"] = self.creator
        self.create_id = None
        self.create_id = self.add("m.room.create", self.creator, content,
                                  state_key="", auth=())
        if self.v >= 12:
            self.room_id = "!" + self.create_id[1:]
        self.member(self.creator, "join")
        users = {} if self.v >= 12 else {self.creator: 100}
        self.state_event("m.room.power_levels", {
            "users": users, "users_default": 0, "invite": 0,
            "state_default": 50, "events_default": 0})
        self.state_event("m.room.join_rules", {"join_rule": "public"})
        self.state_event("m.room.history_visibility",
                         {"history_visibility": "shared"})
        for u in joined:
            self.member(u, "join")
        for u in invited:
            self.member(u, "invite", sender=self.creator)
        self.users = [self.creator] + joined
        self.extremity_ids = [self.last]
        self._snapshot()


# -- the edge's view: snapshot + accepted joins -------------------------------

class View:
    """What the edge should hold for a room after the joins it accepted.
    room: the mxj_room.Room as loaded (its state and extremities are the
    snapshot's). accept() also records each join in the Room (events,
    state, extremities), so mxj_authcheck can judge later templates."""

    def __init__(self, room):
        self.room = room
        self.base_state = dict(room.state)
        self.base_ext = list(room.extremity_ids)
        self.joins = {}                 # event ID -> PDU, accepted here
        self.accepted_order = []
        self.followed = {}              # event ID -> prev IDs: the
        #                                 homeserver's non-state events
        #                                 the edge follows (no state change)
        self.members = {}               # event ID -> (prev IDs, state
        #                                 key): the homeserver's member
        #                                 events the edge follows
        self.order = []                 # joins and member events, in the
        #                                 order the edge took them

    def extremities(self):
        ext = list(self.base_ext)
        for eid in self.accepted_order:
            prev = ref_ids(self.joins[eid]["prev_events"])
            ext = [e for e in ext if e not in prev] + [eid]
        return ext

    def accept(self, ev, signed_by_us=None):
        """Records an accepted join (the event as the edge answered it)."""
        eid = event_id(self.room.version, ev)
        if eid in self.joins:
            return eid
        self.joins[eid] = ev
        self.accepted_order.append(eid)
        self.order.append(eid)
        r = self.room
        r.events[eid] = ev
        r.order.append(eid)
        r.state[("m.room.member", ev["state_key"])] = eid
        prev = ref_ids(ev["prev_events"])
        r.extremity_ids = [e for e in r.extremity_ids if e not in prev] \
            + [eid]
        r.last = eid
        return eid

    def follow(self, eid, prev_ids, member=None):
        """An event of the homeserver after the snapshot (its prev_events
        prev_ids): a non-state event leaves the state unchanged, but the
        joins before it are ancestors of what names it; a member event
        (member: its state_key) changes the state from there on."""
        if member is None:
            self.followed[eid] = list(prev_ids)
        else:
            self.members[eid] = (list(prev_ids), member)
            self.order.append(eid)

    def ancestors(self, prev_ids):
        """The accepted joins and followed member events that are
        prev_ids or their ancestors (through the followed events too), in
        the order the edge took them."""
        seen, todo = set(), list(prev_ids)
        while todo:
            e = todo.pop()
            if e in seen:
                continue
            if e in self.joins:
                seen.add(e)
                todo.extend(ref_ids(self.joins[e]["prev_events"]))
            elif e in self.followed:
                seen.add(e)
                todo.extend(self.followed[e])
            elif e in self.members:
                seen.add(e)
                todo.extend(self.members[e][0])
        return [e for e in self.order if e in seen]

    def state_at(self, prev_ids):
        """{(type, state_key): event ID}: the state before a join whose
        prev_events are prev_ids."""
        st = dict(self.base_state)
        for e in self.ancestors(prev_ids):
            sk = self.joins[e]["state_key"] if e in self.joins \
                else self.members[e][1]
            st[("m.room.member", sk)] = e
        return st

    def servers_joined(self, state):
        """{server: joined members} in a state map."""
        out = {}
        for (t, sk), eid in state.items():
            if t == "m.room.member" and \
                    self.room.events[eid]["content"].get("membership") \
                    == "join":
                out[server_of(sk)] = out.get(server_of(sk), 0) + 1
        return out


def auth_ids_of(room, ev, eid=None):
    """An event's auth events; v12 implies the create event."""
    ids = ref_ids(ev.get("auth_events", []))
    if v_of(room) >= 12 and eid != room.create_id \
            and ev.get("type") != "m.room.create":
        ids.append(room.create_id)
    return ids


def auth_closure(room, evs):
    """The auth chain of the events evs (PDUs): their auth events,
    recursively, as event IDs (the events themselves only when one is an
    auth event of another)."""
    seen, todo = set(), []
    for ev in evs:
        todo.extend(auth_ids_of(room, ev))
    while todo:
        e = todo.pop()
        if e in seen:
            continue
        seen.add(e)
        if e not in room.events:
            raise AssertionError(f"auth event {e} is not an event of the "
                                 "room")
        todo.extend(auth_ids_of(room, room.events[e], e))
    return seen


# -- the answer ---------------------------------------------------------------

def our_signing_key(path):
    """The edge's first key from its Synapse-format signing key file,
    read with signedjson (not with our C)."""
    with open(path) as f:
        keys = read_signing_keys(f)
    return keys[0]


def verify_our_signature(version, ev, our_name, our_key):
    """The resident's signature (reference §2.3) on the redacted event."""
    red = mxj_room.redact(str(version), ev)
    red.pop("unsigned", None)
    kid = f"{our_key.alg}:{our_key.version}"
    sigs = ev.get("signatures", {}).get(our_name, {})
    assert kid in sigs, f"no signature of {our_name} {kid}: {sigs}"
    try:
        verify_signed_json(red, our_name, get_verify_key(our_key))
    except SignatureVerifyException as e:
        raise AssertionError(f"our signature does not verify: {e}")


def judge_event(room, ev, keys, where):
    """Hashes, the required signatures and the event ID of a returned
    event, its room_id, and that it is the room's event as generated (or
    as accepted); returns its ID."""
    try:
        eid = judge.verify_crypto(room.version, ev, keys)
    except judge.Rejected as e:
        raise AssertionError(f"{where}: {ev.get('type')} "
                             f"{ev.get('state_key')!r}: {e}")
    create_v12 = v_of(room) >= 12 and ev.get("type") == "m.room.create"
    if create_v12:
        assert "room_id" not in ev, f"{where}: v12 create with a room_id"
    else:
        assert ev.get("room_id") == room.room_id, \
            f"{where}: {eid} has room_id {ev.get('room_id')!r}"
    assert eid in room.events, f"{where}: {eid} is no event of the room"
    assert ev == room.events[eid], \
        f"{where}: {eid} differs from the room's event:\n{ev}\n" \
        f"{room.events[eid]}"
    return eid


def check_answer(room, view, sent, doc, keys, our_name=None, our_key=None,
                 omit_members=False, own_auth_in_chain=True):
    """Judges a send_join answer (the v2 object; unwrap v1 first) for the
    join sent. keys: {server: VerifyKey} of every signer. our_key: the
    edge's SigningKey, when the join is restricted (the edge signs it).
    own_auth_in_chain=False forgives an auth_chain that leaves out the
    join's own auth events that only the join brings and that state
    holds (closed all the same); the contract asks for them ("the auth
    chain of that state and of the join").
    Returns {"state": {key: id}, "auth": set of IDs, "event": id}."""
    v = v_of(room)
    assert isinstance(doc, dict), doc
    for k in ("state", "auth_chain", "event"):
        assert k in doc, f"no {k!r} in the answer: {sorted(doc)}"
    assert isinstance(doc["state"], list) and \
        isinstance(doc["auth_chain"], list)

    # event: what was sent, plus our signature only for restricted joins
    ev = doc["event"]
    restricted = v >= 8 and "join_authorised_via_users_server" in \
        sent.get("content", {})
    if restricted:
        assert our_key is not None
        got = copy.deepcopy(ev)
        ours = got.get("signatures", {}).pop(our_name, None)
        assert ours is not None, f"the restricted join lacks our " \
                                 f"signature: {ev.get('signatures')}"
        assert got == sent, f"event differs from the join sent:\n{got}\n" \
                            f"{sent}"
        verify_our_signature(room.version, ev, our_name, our_key)
    else:
        assert ev == sent, f"event differs from the join sent:\n{ev}\n{sent}"
    join_id = event_id(room.version, sent)
    prev = ref_ids(sent["prev_events"])

    # every event judged on its own
    state, state_ids = {}, []
    for i, e in enumerate(doc["state"]):
        eid = judge_event(room, e, keys, f"state[{i}]")
        key = (e["type"], e.get("state_key"))
        assert e.get("state_key") is not None, f"state[{i}] {eid} is not " \
                                               "a state event"
        assert key not in state, f"state has two events for {key}: " \
                                 f"{state[key]}, {eid}"
        state[key] = eid
        state_ids.append(eid)
    auth = []
    for i, e in enumerate(doc["auth_chain"]):
        auth.append(judge_event(room, e, keys, f"auth_chain[{i}]"))
    twice = sorted({e for e in auth if auth.count(e) > 1})
    assert not twice, f"auth_chain holds events twice: {twice}"
    assert join_id not in state_ids and join_id not in auth, \
        "the join itself is in state or auth_chain"

    # state: the state at the join's prev_events
    full = view.state_at(prev)
    if omit_members:
        assert doc.get("members_omitted") is True, \
            f"members_omitted {doc.get('members_omitted')!r}"
        want = {k: e for k, e in full.items() if k[0] != "m.room.member"}
        own = ("m.room.member", sent["state_key"])
        if own in full:
            want[own] = full[own]
        heroes = {k: e for k, e in state.items()
                  if k[0] == "m.room.member" and k != own}
        named = ("m.room.name", "") in full or \
            ("m.room.canonical_alias", "") in full
        eligible = {k: e for k, e in full.items()
                    if k[0] == "m.room.member" and k != own
                    and room.events[e]["content"].get("membership")
                    in ("join", "invite")}
        if named:
            assert not heroes, f"heroes in a named room: {heroes}"
        elif len(eligible) <= 5:
            assert heroes == eligible, \
                f"heroes {sorted(heroes)}, want every joined or invited " \
                f"member: {sorted(eligible)}"
        else:
            # "the first five": in the room's order (depth, then event ID)
            first = sorted(eligible.items(), key=lambda kv: (
                room.events[kv[1]]["depth"], kv[1]))[:5]
            assert heroes == dict(first), \
                f"heroes {sorted(k[1] for k in heroes)}, want the first " \
                f"five joined or invited: {sorted(k[1] for k, _ in first)}"
        want.update(heroes)
        # servers_in_room: the servers with joined members before the
        # join, most members first (ties in any order)
        per = view.servers_joined(full)
        sir = doc.get("servers_in_room")
        assert isinstance(sir, list) and sorted(sir) == sorted(per), \
            f"servers_in_room {sir}, want {sorted(per)}"
        counts = [per[x] for x in sir]
        assert counts == sorted(counts, reverse=True), \
            f"servers_in_room {sir} not by members: {counts}"
    else:
        assert doc.get("members_omitted", False) is False, \
            f"members_omitted {doc.get('members_omitted')!r} without " \
            "omit_members"
        want = full
    if state != want:
        missing = {k: e for k, e in want.items() if state.get(k) != e}
        extra = {k: e for k, e in state.items() if want.get(k) != e}
        raise AssertionError(f"state is not the state at the join's "
                             f"prev_events {prev}:\nmissing/different "
                             f"{missing}\nextra/different {extra}")

    # auth_chain: closed, and exactly the chain of the state and the join
    returned = set(state_ids) | set(auth)
    for e in [sent] + doc["state"] + doc["auth_chain"]:
        for a in auth_ids_of(room, e, None):
            assert a in returned, \
                f"auth chain not closed: {a} (auth event of " \
                f"{e.get('type')} {e.get('state_key')!r}) is in neither " \
                "state nor auth_chain"
    chain = auth_closure(room, [sent] + doc["state"])
    if omit_members:
        chain -= set(state_ids)
    if not own_auth_in_chain:
        # the join's own auth events may be left to state when only they
        # bring them (the test that asks for them is a separate one)
        only_own = chain - auth_closure(room, doc["state"])
        assert only_own <= set(auth_ids_of(room, sent)) | set(state_ids)
        chain -= only_own & set(state_ids) - set(auth)
    if set(auth) != chain:
        def named(ids):
            return sorted(f"{e} ({room.events[e]['type']} "
                          f"{room.events[e].get('state_key')!r})"
                          for e in ids)
        mine = set(auth_ids_of(room, sent))
        raise AssertionError(
            f"auth_chain is not the auth chain of the state and the join "
            f"(closed: yes):\nmissing {named(chain - set(auth))} (of them "
            f"the join's own auth events: {named(mine & (chain - set(auth)))})"
            f"\nextra {named(set(auth) - chain)}")
    # v12: nothing lists the create event
    if v >= 12:
        for e in [ev] + doc["state"] + doc["auth_chain"]:
            assert room.create_id not in ref_ids(e.get("auth_events", [])), \
                f"{e.get('type')} lists the create event (v12)"
    return {"state": state, "auth": set(auth), "event": join_id}


# -- X-Matrix, as the outbox stores it ----------------------------------------

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)'
                    r'\s*(?:,|$)')


def parse_xmatrix(value):
    """{name: value} of an X-Matrix Authorization value (names lower-case,
    quotes and backslash escapes removed)."""
    scheme, _, rest = value.partition(" ")
    assert scheme == "X-Matrix", value
    out, pos = {}, 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        assert m, f"cannot parse {rest[pos:]!r}"
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out[m.group(1).lower()] = v
        pos = m.end()
    return out


def xmatrix_verifies(value, method, uri, body, destination, verify_keys):
    """The X-Matrix signature in value covers this request (method, raw
    URI, origin, destination, the parsed body) under the origin's key;
    verify_keys: {server: VerifyKey}. Returns the origin."""
    p = parse_xmatrix(value)
    origin = p["origin"]
    obj = {"method": method, "uri": uri, "origin": origin,
           "destination": destination,
           "content": json.loads(body),
           "signatures": {origin: {p["key"]: p["sig"]}}}
    key = decode_verify_key_bytes(p["key"], bytes(verify_keys[origin]))
    try:
        verify_signed_json(obj, origin, key)
    except SignatureVerifyException as e:
        raise AssertionError(f"X-Matrix signature does not verify: {e}")
    return origin
