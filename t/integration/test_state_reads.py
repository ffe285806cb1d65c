"""matrix_event and matrix_state against their contract
(docs/directives.md): GET /event/{eventId} and GET /state_ids, /state at
a join accepted at the edge, answered from the snapshot and the edge's
records, as the homeserver (Synapse 1.67's on_pdu_request,
on_state_ids_request, on_room_state_request) answers them; everything
else handed to the fallback unchanged.

Every expected value comes from the test's own room (t/lib/mxj_room.py,
events signed with signedjson) and the joins the test's joiners signed,
through mxj_joiner.View (the state before each join) and
mxj_joiner.auth_closure (the auth chain): never from the module's
output."""

import json
import sys
import urllib.parse

import pytest

from mxj_nginx import TOP

sys.path.insert(0, str(TOP / "t" / "lib"))
sys.path.insert(0, str(TOP / "t" / "integration"))
import mxj_joiner  # noqa: E402
from mxj_joiner import View  # noqa: E402
from test_send_join import (EDGE, ORIGIN, ORIGIN2, assert_error,  # noqa
                            at_once, edge, join, new_room, send)

pytestmark = pytest.mark.timeout(120)

LOCATIONS = """
    location ^~ /_matrix/federation/v1/event/ {
        matrix_event;
    }
    location ~ ^/_matrix/federation/v1/state(_ids)?/ {
        matrix_state;
    }
"""

HOMESERVER = {"from": "homeserver"}     # the fallback's Recorder answers


def q(s):
    return urllib.parse.quote(s, safe="")


def event_target(eid):
    return "/_matrix/federation/v1/event/" + q(eid)


def state_target(kind, room_id, eid):
    return f"/_matrix/federation/v1/{kind}/{q(room_id)}?event_id={q(eid)}"


def get(edge, target, remote):
    return send(edge.port, "GET", target,
                auth=[remote.auth_header("GET", target, EDGE)])


def canon(ev):
    return json.dumps(ev, sort_keys=True, separators=(",", ":"))


def handed_over(edge, rep, target):
    """The fallback answered, and got the request as it was sent."""
    assert rep.status == 200 and rep.json() == HOMESERVER, rep
    assert any(r.target == target for r in edge.rec.requests), \
        [r.target for r in edge.rec.requests]


def expected_state(room, view, join_ev):
    """(state IDs, auth chain IDs) before the join: its prev_events'
    state (View) and the auth chain of that state (auth_closure)."""
    st = view.state_at(mxj_joiner.ref_ids(join_ev["prev_events"]))
    ids = set(st.values())
    chain = mxj_joiner.auth_closure(room, [room.events[e] for e in ids])
    return ids, chain


def joined_room(edge, version="10", **kw):
    """A room loaded at the edge, then joined through it by remote.test;
    returns (room, view, the join as remote.test signed it, its ID)."""
    room = new_room(version, **kw)
    edge.load(room).start(locations=LOCATIONS)
    view = View(room)
    s, _, got = join(edge, room, view, edge.joiner)
    return room, view, s.event, got["event"]


def check_transaction(rep, pdu):
    """Synapse's _transaction_dict_from_pdus: origin (ours),
    origin_server_ts (now, not compared), pdus [the event]."""
    assert rep.status == 200, rep
    doc = rep.json()
    assert set(doc) == {"origin", "origin_server_ts", "pdus"}, doc
    assert doc["origin"] == EDGE
    assert isinstance(doc["origin_server_ts"], int)
    assert doc["pdus"] == [pdu], (doc["pdus"], pdu)


@pytest.mark.parametrize("version", ["3", "10"])
def test_event_state_auth_and_edge_join(edge, version):
    """/event of a state event, of an auth chain event that is not in the
    state (a departed user's join), of the create event (older than the
    room's history_visibility event) and of the edge join itself: each the
    PDU the room (or the joiner) signed, in Synapse's transaction shape."""
    room, view, ev, eid = joined_room(edge, version, leaves=1)
    remote = edge.joiner.remote
    name_id = room.state[("m.room.name", "")]
    check_transaction(get(edge, event_target(name_id), remote),
                      room.events[name_id])
    state_ids = set(room.state.values())
    auth_only = [e for e in room.auth_chain_ids() if e not in state_ids]
    assert auth_only, "the room has an auth event outside its state"
    check_transaction(get(edge, event_target(auth_only[0]), remote),
                      room.events[auth_only[0]])
    check_transaction(get(edge, event_target(room.create_id), remote),
                      room.events[room.create_id])
    check_transaction(get(edge, event_target(eid), remote), ev)
    assert edge.rec.requests == [], "nothing went to the homeserver"


def test_event_unknown_handed_over_member_event_answered(edge):
    """A member event outside the auth chain (v3+ keeps those in the
    chunks only: found through mevent and mchunk) is answered, the PDU
    the room signed; an event the snapshot does not hold (a message, an
    event ID no room has) goes to the fallback unchanged."""
    room, view, ev, eid = joined_room(edge)
    remote = edge.joiner.remote
    chain = set(room.auth_chain_ids())
    member = [e for (t, _), e in view.base_state.items()
              if t == "m.room.member" and e not in chain][0]
    check_transaction(get(edge, event_target(member), remote),
                      room.events[member])
    for e in (view.base_ext[0], "$nosuchevent"):
        t = event_target(e)
        handed_over(edge, get(edge, t, remote), t)


def test_event_stale_room_handed_over(edge):
    room, view, ev, eid = joined_room(edge)
    edge.r.hset(edge.key(room, "meta"), "stale", "1")
    name_id = room.state[("m.room.name", "")]
    for t in (event_target(name_id), event_target(eid),
              state_target("state_ids", room.room_id, eid),
              state_target("state", room.room_id, eid)):
        handed_over(edge, get(edge, t, edge.joiner.remote), t)


def test_no_member_refused_as_synapse_refuses(edge):
    """remote2.test has no member in the room: 403 M_FORBIDDEN "Host not
    in room." (Synapse's check_host_in_room) for /event, /state_ids and
    /state, and nothing goes to the homeserver."""
    room, view, ev, eid = joined_room(edge)
    other = edge.joiner2.remote
    assert other.name == ORIGIN2
    name_id = room.state[("m.room.name", "")]
    for t in (event_target(name_id), event_target(eid),
              state_target("state_ids", room.room_id, eid),
              state_target("state", room.room_id, eid)):
        doc = assert_error(get(edge, t, other), 403, "M_FORBIDDEN")
        assert doc["error"] == "Host not in room.", (t, doc)
    assert edge.rec.requests == []


def test_bad_xmatrix_401(edge):
    """A signature by a key that is not remote.test's, and no
    Authorization at all: 401, for each endpoint."""
    room, view, ev, eid = joined_room(edge)
    name_id = room.state[("m.room.name", "")]
    liar = type(edge.joiner.remote)(ORIGIN, seed=b"\x01" * 32)
    for t in (event_target(name_id),
              state_target("state_ids", room.room_id, eid),
              state_target("state", room.room_id, eid)):
        assert_error(get(edge, t, liar), 401)
        assert_error(send(edge.port, "GET", t), 401, "M_UNAUTHORIZED")
    assert edge.rec.requests == []


def check_state_ids(rep, ids, chain):
    assert rep.status == 200, rep
    doc = rep.json()
    assert set(doc) == {"pdu_ids", "auth_chain_ids"}, doc
    assert len(doc["pdu_ids"]) == len(set(doc["pdu_ids"])), "duplicates"
    assert len(doc["auth_chain_ids"]) == len(set(doc["auth_chain_ids"]))
    assert set(doc["pdu_ids"]) == ids
    assert set(doc["auth_chain_ids"]) == chain


def check_state(rep, room, ids, chain):
    """The PDUs are the room's own signed events (compared as canonical
    JSON multisets: each once), Content-Length exact."""
    assert rep.status == 200, rep
    assert int(rep.header("Content-Length")) == len(rep.body)
    doc = rep.json()
    assert set(doc) == {"pdus", "auth_chain"}, doc
    assert sorted(canon(e) for e in doc["pdus"]) == \
        sorted(canon(room.events[e]) for e in ids)
    assert sorted(canon(e) for e in doc["auth_chain"]) == \
        sorted(canon(room.events[e]) for e in chain)


@pytest.mark.parametrize("version", ["3", "10"])
def test_state_at_edge_joins(edge, version):
    """Two joins through the edge, then the state at each: the first's is
    the snapshot's (without the second join, which came later), the
    second's holds the first; a rejoin (remote.test's user joined again)
    replaces its member event, and in the state of a join after it the
    first join has left the state for the auth chain.
    /state_ids and /state agree with the room."""
    room, view, ev1, e1 = joined_room(edge, version, leaves=1)
    s2, _, got2 = join(edge, room, view, edge.joiner2)
    e2 = got2["event"]
    s3, _, got3 = join(edge, room, view, edge.joiner)     # joins again
    e3 = got3["event"]
    s4, _, got4 = join(edge, room, view, edge.joiner3)
    e4 = got4["event"]
    remote = edge.joiner.remote
    for e, pdu in ((e1, ev1), (e2, s2.event), (e3, s3.event),
                   (e4, s4.event)):
        ids, chain = expected_state(room, view, pdu)
        check_state_ids(get(edge, state_target("state_ids", room.room_id, e),
                            remote), ids, chain)
        check_state(get(edge, state_target("state", room.room_id, e),
                        remote), room, ids, chain)
    ids1, _ = expected_state(room, view, ev1)
    ids3, _ = expected_state(room, view, s3.event)
    ids4, chain4 = expected_state(room, view, s4.event)
    assert e2 not in ids1 and e1 in ids3 and e2 in ids3
    assert e3 in ids4 and e1 not in ids4
    assert e1 in chain4, "the rejoin's previous join is in the auth chain"
    assert edge.rec.requests == []


def test_state_at_other_events_handed_over(edge):
    """E a snapshot state event, a message, an unknown ID, or no event_id
    at all: the homeserver's."""
    room, view, ev, eid = joined_room(edge)
    remote = edge.joiner.remote
    for kind in ("state_ids", "state"):
        for e in (room.state[("m.room.name", "")], view.base_ext[0],
                  "$unknown"):
            t = state_target(kind, room.room_id, e)
            handed_over(edge, get(edge, t, remote), t)
        t = f"/_matrix/federation/v1/{kind}/{q(room.room_id)}"
        handed_over(edge, get(edge, t, remote), t)
    t = state_target("state_ids", "!notcached:s0.example.org", eid)
    handed_over(edge, get(edge, t, remote), t)


def test_history_visibility_joined(edge):
    """The room changed its history_visibility to "joined" (the new event
    marks, as Synapse does, that it replaced the first one): an event
    older than it, whose visibility the edge cannot know, and the new one
    itself (joined: the edge cannot tell whether the server had a member
    then) go to the homeserver; the joiner's own join, which shows its
    server a member at the event, is answered."""
    room = new_room()
    first = room.state[("m.room.history_visibility", "")]
    hv = room.add_state("m.room.history_visibility", "",
                        {"history_visibility": "joined"})
    room.events[hv]["unsigned"] = {"replaces_state": first}
    room._snapshot()
    edge.load(room).start(locations=LOCATIONS)
    view = View(room)
    s, _, got = join(edge, room, view, edge.joiner)
    remote = edge.joiner.remote
    for e in (room.create_id, room.state[("m.room.name", "")], hv):
        t = event_target(e)
        handed_over(edge, get(edge, t, remote), t)
    check_transaction(get(edge, event_target(got["event"]), remote),
                      s.event)


def test_server_acl_refused_as_synapse_refuses(edge):
    """A server the room's ACL denies: 403 M_FORBIDDEN "Server is banned
    from room" for /state_ids and /state (Synapse checks the ACL there,
    not for /event)."""
    room = new_room()
    edge.load(room).start(locations=LOCATIONS)
    view = View(room)
    s, _, got = join(edge, room, view, edge.joiner)
    s2, _, got2 = join(edge, room, view, edge.joiner2)
    acl = {"allow": ["*"], "deny": [ORIGIN2], "allow_ip_literals": True}
    room.add_state("m.room.server_acl", "", acl)
    edge.load(room)        # a new snapshot: the joins are in its state
    s3, _, got3 = join(edge, room, View(room), edge.joiner3)
    other = edge.joiner2.remote
    for kind in ("state_ids", "state"):
        doc = assert_error(get(edge, state_target(kind, room.room_id,
                                                  got3["event"]), other),
                           403, "M_FORBIDDEN")
        assert doc["error"] == "Server is banned from room", doc
    assert edge.rec.requests == []


def test_room_version_1_state_handed_over_member_event_answered(edge):
    """v1/v2 keep member events in pdu: /event of one is answered; the
    state at an edge join is the homeserver's (not answered here)."""
    room, view, ev, eid = joined_room(edge, "1")
    remote = edge.joiner.remote
    member = room.state[("m.room.member", room.creator)]
    check_transaction(get(edge, event_target(member), remote),
                      room.events[member])
    check_transaction(get(edge, event_target(eid), remote), ev)
    for kind in ("state_ids", "state"):
        t = state_target(kind, room.room_id, eid)
        handed_over(edge, get(edge, t, remote), t)


@pytest.mark.parametrize("cache", ["0", "256m"])
def test_state_at_once_from_one_read_of_the_chunks(edge, cache):
    """Eight /state requests at once after a restart (a zone that holds no
    copy of the generation; with matrix_send_join_cache 0 never): one
    reads the chunk lists while the others wait for it, and every answer
    is the state the room and the join imply. A larger room, so that its
    chunks are several."""
    room = new_room(members=400)
    edge.load(room).start(locations=LOCATIONS,
                          http_extra=f"matrix_send_join_cache {cache};")
    view = View(room)
    s, _, got = join(edge, room, view, edge.joiner)
    ids, chain = expected_state(room, view, s.event)
    # a new nginx, so a new zone: no copy of the chunks (a reload keeps
    # the zone of matrix_send_join_cache, and the copy the join made)
    edge.nginx.stop()
    edge.nginx.start()
    t = state_target("state", room.room_id, got["event"])
    execs = edge.r.info("commandstats").get("cmdstat_exec", {}).get("calls",
                                                                    0)
    reps = at_once(8, lambda k: get(edge, t, edge.joiner.remote))
    for rep in reps:
        assert rep is not None, "an answer did not come"
        check_state(rep, room, ids, chain)
    assert edge.rec.requests == []
    # the chunk lists were read (MULTI ... EXEC) once, or, not kept, by
    # each request in turn
    read = edge.r.info("commandstats")["cmdstat_exec"]["calls"] - execs
    assert read == (8 if cache == "0" else 1), read
