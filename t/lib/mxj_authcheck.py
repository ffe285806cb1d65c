"""An independent judge of a join event against a generated room.

Written from the Matrix specification as summarised in
shared/reference/matrix-join.md (§1 the template, §6.1 the auth events
selection, §6.2 the join auth rules per room version, §6.3 power levels,
§7 limits), never from our C: the make_join tests fill in the module's
template as a joining server would, sign it with signedjson, and ask this
module whether the resident's rules would accept the result.

The room is a t/lib/mxj_room.py Room (its .version, .room_id,
.create_id, .events, .state and .extremity_ids: the room the snapshot was
made from). Hashes, redaction and reference hashes are mxj_room's (also
independent of our C, and checked against the loader by test_ctl_load).

    check_join(room, ev, keys)     every check below; returns the event ID
    verify_crypto(version, ev, keys)   content hash, signatures, event ID
    check_refs / check_prev_events / check_auth_events / check_auth_rules
    build_join(room, user, ...)    a join made here, for the judge's own
                                   tests (a checker that cannot fail
                                   judges nothing)

A failed check raises Rejected with the rule's name (.rule) and details.
keys: {server name: signedjson VerifyKey}.
"""

import math
import re

from canonicaljson import encode_canonical_json
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import encode_base64

import mxj_room

MAX_PDU_BYTES = 65536
MAX_PREV = 20
TEMPLATE_PREV = 10      # what Synapse names (get_prev_events_for_room)
MAX_AUTH = 10
MAX_ID = 255


class Rejected(AssertionError):
    def __init__(self, rule, detail=""):
        super().__init__(f"{rule}: {detail}" if detail else rule)
        self.rule = rule
        self.detail = detail


def _v(room_or_version):
    v = getattr(room_or_version, "version", room_or_version)
    return int(v)


def server_of(user):
    return user.split(":", 1)[1]


# -- power levels (§6.3) ------------------------------------------------------

_STRINGY_INT = re.compile(r"^\s*[+-]?[0-9]+\s*$")


def _level(version, value, what):
    """A power level value: an integer; v1-v9 also accept a string of
    one (the "stringy power levels" Synapse parses with int())."""
    if isinstance(value, bool):
        raise Rejected("power_levels", f"{what} is a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _v(version) <= 9 \
            and _STRINGY_INT.match(value):
        return int(value)
    raise Rejected("power_levels", f"{what} is not an integer: {value!r}")


def creators(version, create_ev):
    """v12: the create event's sender and its additional_creators (they
    have infinite power); before: the creator (content.creator in v1-v10,
    the sender in v11)."""
    v = _v(version)
    if v >= 12:
        extra = create_ev["content"].get("additional_creators", [])
        return [create_ev["sender"]] + list(extra)
    if v >= 11:
        return [create_ev["sender"]]
    return [create_ev["content"].get("creator")]


def user_power(version, create_ev, pl_ev, user):
    v = _v(version)
    if v >= 12 and user in creators(version, create_ev):
        return math.inf
    if pl_ev is None:
        return 100 if user in creators(version, create_ev) else 0
    c = pl_ev["content"]
    users = c.get("users", {})
    if isinstance(users, dict) and user in users:
        return _level(version, users[user], f"users[{user}]")
    return _level(version, c.get("users_default", 0), "users_default")


def invite_level(version, pl_ev):
    if pl_ev is None:
        return 0
    return _level(version, pl_ev["content"].get("invite", 0), "invite")


# -- references ---------------------------------------------------------------

def reference_hash_b64(room, eid):
    return encode_base64(mxj_room.reference_hash(room.version,
                                                 room.events[eid]))


def check_refs(room, refs, what):
    """The event IDs of a prev_events / auth_events list: v1/v2 pairs
    [id, {"sha256": <the event's reference hash>}], v3+ ID strings; each
    an event of the room, none twice."""
    if not isinstance(refs, list):
        raise Rejected(what, "not a list")
    ids = []
    for i, r in enumerate(refs):
        if _v(room) <= 2:
            if not (isinstance(r, list) and len(r) == 2
                    and isinstance(r[0], str) and isinstance(r[1], dict)):
                raise Rejected(what, f"[{i}] is not [id, {{sha256}}]: {r!r}")
            eid = r[0]
            if eid not in room.events:
                raise Rejected(what, f"[{i}] {eid} is not an event of "
                                     "the room")
            want = reference_hash_b64(room, eid)
            if r[1].get("sha256") != want:
                raise Rejected(what, f"[{i}] {eid}: sha256 "
                                     f"{r[1].get('sha256')!r}, its reference "
                                     f"hash is {want!r}")
        else:
            if not isinstance(r, str):
                raise Rejected(what, f"[{i}] is not an event ID: {r!r}")
            eid = r
            if eid not in room.events:
                raise Rejected(what, f"[{i}] {eid} is not an event of "
                                     "the room")
        if eid in ids:
            raise Rejected(what, f"{eid} listed twice")
        ids.append(eid)
    return ids


# -- prev_events and depth ------------------------------------------------------

def check_prev_events(room, ev):
    """prev_events: the room's forward extremities (the deepest 10, as
    Synapse names them, when there are more; never over 20); depth: the
    largest of their depths + 1."""
    ids = check_refs(room, ev.get("prev_events"), "prev_events")
    ext = list(room.extremity_ids)
    if len(ids) > MAX_PREV:
        raise Rejected("prev_events", f"{len(ids)} entries (at most 20)")
    if not ids:
        raise Rejected("prev_events", "empty")
    unknown = [e for e in ids if e not in ext]
    if unknown:
        raise Rejected("prev_events", f"not forward extremities: {unknown}")
    want_n = min(TEMPLATE_PREV, len(ext))
    if len(ids) != want_n:
        raise Rejected("prev_events", f"{len(ids)} of the {len(ext)} "
                                      f"forward extremities, want {want_n}")
    left = [e for e in ext if e not in ids]
    if left:
        depth = lambda e: room.events[e]["depth"]   # noqa: E731
        if min(map(depth, ids)) < max(map(depth, left)):
            raise Rejected("prev_events", "not the deepest extremities")
    want_depth = max(room.events[e]["depth"] for e in ids) + 1
    if ev.get("depth") != want_depth or isinstance(ev.get("depth"), bool):
        raise Rejected("depth", f"{ev.get('depth')!r}, want {want_depth}")
    return ids


# -- the auth events selection (§6.1) ---------------------------------------------

def auth_selection(room, user, authoriser=None):
    """{(type, state_key): event ID} a join of user must list: create
    (not in v12), power levels, join rules, the user's membership, the
    authoriser's membership (v8+), each if the room has one."""
    want = [("m.room.power_levels", ""), ("m.room.join_rules", ""),
            ("m.room.member", user)]
    if _v(room) <= 11:
        want.insert(0, ("m.room.create", ""))
    if authoriser is not None and _v(room) >= 8:
        want.append(("m.room.member", authoriser))
    return {k: room.state[k] for k in want if k in room.state}


def check_auth_events(room, ev):
    """auth_events are exactly the selection for the event's content;
    returns {(type, state_key): event}."""
    ids = check_refs(room, ev.get("auth_events"), "auth_events")
    if len(ids) > MAX_AUTH:
        raise Rejected("auth_events", f"{len(ids)} entries (at most 10)")
    got = {}
    for eid in ids:
        a = room.events[eid]
        key = (a["type"], a.get("state_key"))
        if key in got:
            raise Rejected("auth_events", f"two events for {key}")
        if a.get("room_id", room.room_id) != ev.get("room_id"):
            raise Rejected("auth_events", f"{eid} is of room "
                                          f"{a.get('room_id')}")
        got[key] = eid
    if _v(room) >= 12 and room.create_id in ids:
        raise Rejected("auth_events", "lists the create event (v12 implies "
                                      "it by the room ID)")
    if _v(room) <= 11 and ("m.room.create", "") not in got:
        raise Rejected("auth_events", "no create event")
    content = ev.get("content") if isinstance(ev.get("content"), dict) \
        else {}
    want = auth_selection(room, ev.get("state_key"),
                          content.get("join_authorised_via_users_server"))
    if got != want:
        extra = {k: v for k, v in got.items() if want.get(k) != v}
        missing = {k: v for k, v in want.items() if got.get(k) != v}
        raise Rejected("auth_events", f"not the selection: extra {extra}, "
                                      f"missing {missing}")
    return {k: room.events[v] for k, v in got.items()}


# -- the join auth rules (§6.2) ----------------------------------------------------

def _join_rule(version, auth):
    """The effective join rule, and the allowed room IDs (restricted)."""
    jr = auth.get(("m.room.join_rules", ""))
    if jr is None:
        return "invite", []     # no join_rules event: invite (Synapse)
    rule = jr["content"].get("join_rule", "invite")
    allow = jr["content"].get("allow")
    rooms = []
    if isinstance(allow, list):
        for a in allow:
            if isinstance(a, dict) and a.get("type") == "m.room_membership" \
                    and isinstance(a.get("room_id"), str):
                rooms.append(a["room_id"])
    return rule, rooms


def check_auth_rules(room, ev, keys, auth=None):
    """The auth rules of the room's version for ev, a join, against its
    auth events (auth: from check_auth_events)."""
    v = _v(room)
    if auth is None:
        auth = check_auth_events(room, ev)
    create = room.events[room.create_id]
    # v12 rule 2: the room ID is "!" + the create event's ID
    if v >= 12 and ev.get("room_id") != "!" + room.create_id[1:]:
        raise Rejected("room_id", "not derived from the create event")
    if v <= 11 and auth[("m.room.create", "")] is not create:
        raise Rejected("auth_events", "another create event")

    content = ev.get("content")
    if not isinstance(content, dict) or "membership" not in content \
            or "state_key" not in ev:
        raise Rejected("member", "no state_key or no content.membership")
    if content["membership"] != "join":
        raise Rejected("member", f"membership {content['membership']!r}")
    sender, target = ev.get("sender"), ev.get("state_key")

    # m.federate (rule 4), on the sender (Synapse: the target too)
    if create["content"].get("m.federate", True) is False:
        for who in (sender, target):
            if server_of(who) != server_of(create["sender"]):
                raise Rejected("m.federate", f"{who} is not of the "
                                             "creator's server")

    # v8+: an authoriser must have signed the event
    authoriser = content.get("join_authorised_via_users_server")
    if v >= 8 and authoriser is not None:
        if not (isinstance(authoriser, str) and authoriser.startswith("@")
                and ":" in authoriser):
            raise Rejected("join_authorised_via_users_server",
                           f"not a user ID: {authoriser!r}")
        srv = server_of(authoriser)
        if srv not in keys:
            raise Rejected("join_authorised_via_users_server",
                           f"no key of {srv} to check its signature")
        try:
            verify_signed_json(_redacted_signed(room.version, ev), srv,
                               keys[srv])
        except SignatureVerifyException as e:
            raise Rejected("join_authorised_via_users_server",
                           f"not signed by {srv}: {e}")

    # the creator's first join (rule 3) does not apply to a remote join
    if sender != target:
        raise Rejected("sender", "sender is not state_key")
    cur_ev = auth.get(("m.room.member", target))
    current = cur_ev["content"].get("membership") if cur_ev else None
    if current == "ban":
        raise Rejected("ban", f"{target} is banned")

    rule, allowed_rooms = _join_rule(v, auth)
    invite_like = ("invite", "knock") if v >= 7 else ("invite",)
    restricted = (("restricted",) if v >= 8 else ()) + \
        (("knock_restricted",) if v >= 10 else ())
    if rule in invite_like:
        if current in ("invite", "join"):
            return
        raise Rejected("join_rule", f"{rule}: {target} is {current}")
    if rule in restricted:
        if current in ("invite", "join"):
            return
        if authoriser is None:
            raise Rejected("join_rule", f"{rule}: no "
                                        "join_authorised_via_users_server")
        a_ev = auth.get(("m.room.member", authoriser))
        if a_ev is None or a_ev["content"].get("membership") != "join":
            raise Rejected("join_rule", f"{rule}: the authoriser "
                                        f"{authoriser} is not joined")
        pl = auth.get(("m.room.power_levels", ""))
        if user_power(v, create, pl, authoriser) < invite_level(v, pl):
            raise Rejected("join_rule", f"{rule}: the authoriser "
                                        f"{authoriser} cannot invite")
        return
    if rule == "public":
        return
    raise Rejected("join_rule", f"{rule!r} admits nobody uninvited in "
                                f"room version {v}")


# -- hashes, signatures, IDs -----------------------------------------------------

def _redacted_signed(version, ev):
    red = mxj_room.redact(version, ev)
    red.pop("unsigned", None)
    return red


def verify_crypto(version, ev, keys):
    """The content hash, the sender's server's signature (and, v1/v2,
    the event ID's server's) on the redacted event; returns the event
    ID (v1/v2: the given one; v3: standard, v4+: URL-safe base64 of the
    reference hash)."""
    v = _v(version)
    want = encode_base64(mxj_room.content_hash(ev))
    got = (ev.get("hashes") or {}).get("sha256")
    if got != want:
        raise Rejected("hashes", f"sha256 {got!r}, content hash {want!r}")
    servers = {server_of(ev["sender"])}
    if v <= 2:
        eid = ev.get("event_id")
        if not isinstance(eid, str) or not eid.startswith("$") \
                or ":" not in eid:
            raise Rejected("event_id", f"{eid!r}")
        servers.add(server_of(eid))
    for srv in servers:
        if srv not in keys:
            raise Rejected("signatures", f"no key of {srv}")
        try:
            verify_signed_json(_redacted_signed(version, ev), srv, keys[srv])
        except SignatureVerifyException as e:
            raise Rejected("signatures", f"{srv}: {e}")
    if v <= 2:
        return ev["event_id"]
    ref = mxj_room.reference_hash(version, ev)
    return "$" + encode_base64(ref, urlsafe=(v >= 4))


def check_format(room, ev):
    """The PDU's shape for a join: type, sender = state_key, room, sizes,
    integer ranges (§7)."""
    v = _v(room)
    if ev.get("type") != "m.room.member":
        raise Rejected("format", f"type {ev.get('type')!r}")
    if ev.get("room_id") != room.room_id:
        raise Rejected("room_id", f"{ev.get('room_id')!r}, the room is "
                                  f"{room.room_id!r}")
    for k in ("sender", "state_key", "room_id"):
        if not isinstance(ev.get(k), str) or len(ev[k].encode()) > MAX_ID:
            raise Rejected("format", f"{k} {ev.get(k)!r}")
    limit = 2 ** 53 - 1 if v >= 6 else 2 ** 63 - 1
    for k in ("depth", "origin_server_ts"):
        x = ev.get(k)
        if not isinstance(x, int) or isinstance(x, bool) or x < 0 \
                or x >= limit:
            raise Rejected("format", f"{k} {x!r}")
    if v >= 11 and "origin" in ev:
        pass    # allowed, not covered by the signature (redacted away)
    if len(encode_canonical_json(ev)) > MAX_PDU_BYTES:
        raise Rejected("format", "over 65536 bytes")


def check_join(room, ev, keys):
    """Every check: format, hashes and signatures, prev_events and depth,
    the auth events selection, the auth rules. Returns the event ID."""
    check_format(room, ev)
    eid = verify_crypto(room.version, ev, keys)
    check_prev_events(room, ev)
    auth = check_auth_events(room, ev)
    check_auth_rules(room, ev, keys, auth)
    return eid


# -- a join made here (the judge's own tests) -----------------------------------

def build_join(room, user, authoriser=None, ts=1800000000000):
    """An unsigned join of user as the spec describes it (what a correct
    template filled in looks like)."""
    v = _v(room)
    content = {"membership": "join"}
    if authoriser is not None:
        content["join_authorised_via_users_server"] = authoriser
    ext = sorted(room.extremity_ids,
                 key=lambda e: -room.events[e]["depth"])[:MAX_PREV]
    sel = auth_selection(room, user, authoriser)
    ev = {
        "type": "m.room.member", "room_id": room.room_id,
        "sender": user, "state_key": user, "content": content,
        "origin_server_ts": ts,
        "depth": max(room.events[e]["depth"] for e in ext) + 1,
        "prev_events": [room.ref(e) for e in ext],
        "auth_events": [room.ref(e) for e in sel.values()],
    }
    if v <= 10:
        ev["origin"] = server_of(user)
    if v <= 2:
        ev["event_id"] = "$judge" + str(ts) + ":" + server_of(user)
    return ev
