"""Joins through the edge by a real Synapse: every handshake request
answered by the module (the access log's upstream=-), the replay landing
on A (A's /members), messages both ways, leave and rejoin, a second
server, every room version Synapse 1.67 offers."""

import pytest

from mxj_interop import (VERSIONS, assert_module_answered, join_through_edge,
                         poll, q, replay_lands)

pytestmark = pytest.mark.timeout(300)


def test_join_by_alias_answered_by_the_module(world):
    room_id, kinds = join_through_edge(world, world.bob, "main")
    assert_module_answered(kinds)
    assert world.bob.membership(room_id, world.bob.user_id) == "join"


def test_replay_lands(world):
    """bob is joined on A, by the very join the edge accepted: A's log
    has the forwarder's send_join of that event, answered 200."""
    room_id = world.rooms["main"]
    replay_lands(world, room_id, world.bob.user_id)
    state = world.alice.ok("GET", f"/rooms/{q(room_id)}/state")
    join = [e for e in state if e["type"] == "m.room.member"
            and e["state_key"] == world.bob.user_id][0]
    sent = [line for line in world.a.log_text().splitlines()
            if "/send_join/" + q(room_id) + "/" + q(join["event_id"])
            in line]
    assert sent and all(" 200 " in line and "matrix-join-ctl/" in line
                        for line in sent), sent
    log = world.fwd.log_text()
    assert "dead letter" not in log, log


def test_messages_both_ways(world):
    room_id = world.rooms["main"]
    replay_lands(world, room_id, world.bob.user_id)
    world.bob.send(room_id, "hello from B")
    poll("B's message on A", lambda: any(
        e["content"].get("body") == "hello from B"
        for e in world.alice.messages(room_id)))
    world.alice.send(room_id, "hello from A")
    poll("A's message on B", lambda: any(
        e["content"].get("body") == "hello from A"
        for e in world.bob.messages(room_id)))


def test_second_server_joins_after_the_first(world):
    room_id = world.rooms["second"]
    _, kinds = join_through_edge(world, world.bob, "second")
    assert_module_answered(kinds)
    replay_lands(world, room_id, world.bob.user_id)
    _, kinds = join_through_edge(world, world.carol, "second")
    assert_module_answered(kinds)
    replay_lands(world, room_id, world.carol.user_id)
    members = world.carol.members(room_id)
    assert members.get(world.bob.user_id) == "join", members
    # A sends the replayed join on to B (the room's other server)
    poll("C's join on B", lambda: world.bob.members(room_id).get(
        world.carol.user_id) == "join")
    world.bob.send(room_id, "B to everyone")
    poll("B's message on C", lambda: any(
        e["content"].get("body") == "B to everyone"
        for e in world.carol.messages(room_id)))
    world.carol.send(room_id, "C to everyone")
    poll("C's message on B", lambda: any(
        e["content"].get("body") == "C to everyone"
        for e in world.bob.messages(room_id)))


def test_leave_and_rejoin(world):
    """bob, B's only user in the room, leaves (B sends its leave to A as a
    transaction) and joins again: B is no longer in the room, so the join
    is a handshake through the edge again."""
    room_id, rows = join_through_edge(world, world.bob, "rejoin")
    assert_module_answered(rows)
    replay_lands(world, room_id, world.bob.user_id)
    world.bob.leave(room_id)
    poll("B's leave on A", lambda: world.alice.members(room_id).get(
        world.bob.user_id) == "leave")
    _, rows = join_through_edge(world, world.bob, "rejoin")
    for kind in ("make_join", "send_join"):
        assert rows.get(kind) and all(s == 200 for s, _, _ in rows[kind]), \
            rows
    replay_lands(world, room_id, world.bob.user_id)


@pytest.mark.parametrize("version", VERSIONS)
def test_room_version(world, version):
    room_id, kinds = join_through_edge(world, world.bert, f"v{version}")
    assert_module_answered(kinds)
    replay_lands(world, room_id, world.bert.user_id)
    # the edge's template named A's extremity: the join is A's only one
    assert len(world.a_extremities(room_id)) == 1, \
        world.a_extremities(room_id)
