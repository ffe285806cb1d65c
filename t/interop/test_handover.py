"""What the edge cannot answer goes to Synapse A unchanged (the access
log names A's address), and the join works as if the edge were not
there: a room the cache does not hold, restricted rooms whose allowed
room is cached or not, a knock room, a room of a version the edge does
not know."""

import pytest

from mxj_interop import (UNSTABLE_VERSION, assert_handed_over,
                         assert_module_answered, handshake_rows,
                         join_through_edge, poll, replay_lands)

pytestmark = pytest.mark.timeout(300)


def test_uncached_room_handed_over(world):
    uma = world.users["uma"]
    room_id, rows = join_through_edge(world, uma, "uncached")
    assert_handed_over(rows, ("query/directory", "make_join", "send_join"))
    # A answered the send_join itself: the join is in A's room at once
    assert world.alice.members(room_id).get(uma.user_id) == "join"


def test_restricted_room_allowed_room_cached(world):
    """rita is in the allowed room (joined through the edge); the module
    authorises her join of the restricted room (signed as A) and the
    joining Synapse accepts it."""
    rita = world.users["rita"]
    allowed, rows = join_through_edge(world, rita, "allowed")
    assert_module_answered(rows)
    replay_lands(world, allowed, rita.user_id)
    room_id, rows = join_through_edge(world, rita, "restricted")
    assert_module_answered(rows)
    replay_lands(world, room_id, rita.user_id)


def test_restricted_room_allowed_room_not_cached(world):
    """rosa is in the allowed room (A answered that join: it is not
    cached); the edge cannot tell whether she may join the restricted
    room, so A must answer: the join works, handed over."""
    rosa = world.users["rosa"]
    allowed, rows = join_through_edge(world, rosa, "allowed-uncached")
    assert_handed_over(rows)
    assert world.alice.members(allowed).get(rosa.user_id) == "join"
    room_id, rows = join_through_edge(world, rosa, "restricted-uncached")
    assert_handed_over(rows)
    assert world.alice.members(room_id).get(rosa.user_id) == "join"


def test_knock_room_handed_over(world):
    """make_knock and send_knock reach A; A's admin invites the knocker,
    who then joins."""
    kim = world.users["kim"]
    room_id = world.rooms["knock"]
    since = len(world.access())
    status, body = kim.knock(f"#knock:{world.name}")
    rows = handshake_rows(world, since)
    assert status == 200, f"knock: {status} {body}; at the edge: {rows}"
    assert_handed_over(rows, ("make_knock", "send_knock"))
    assert world.alice.members(room_id).get(kim.user_id) == "knock"
    world.alice.invite(room_id, kim.user_id)
    poll("the invite on B", lambda: room_id in kim.invites())
    since = len(world.access())
    status, body = kim.join(room_id)
    rows = handshake_rows(world, since)
    assert status == 200, f"join: {status} {body}; at the edge: {rows}"
    replay_lands(world, room_id, kim.user_id)


def test_version_the_edge_does_not_offer_handed_over(world):
    """Synapse offers org.matrix.msc2176, the edge does not: sync says so
    (once: one pass so far; its make_join does not offer the version, so
    A answers M_INCOMPATIBLE_ROOM_VERSION) and loads nothing; the join
    goes to A."""
    room_id = world.rooms["unstable"]
    said = [line for line in world.sync.log_text().splitlines()
            if f"room={room_id} failed" in line]
    assert len(said) == 1, said
    assert "M_INCOMPATIBLE_ROOM_VERSION" in said[0] or \
        f'unknown room version "{UNSTABLE_VERSION}"' in said[0], said
    ursula = world.users["ursula"]
    room_id, rows = join_through_edge(world, ursula, "unstable")
    assert_handed_over(rows, ("query/directory", "make_join", "send_join"))
    assert world.alice.members(room_id).get(ursula.user_id) == "join"
