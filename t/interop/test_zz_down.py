"""Last but one (A stops and starts again; the scenarios before it need A
up): while A is down the edge still accepts a join of a cached room, and
the forwarder delivers it once A is back."""

import pytest

from mxj_interop import (assert_module_answered, join_through_edge, poll,
                         replay_lands)

pytestmark = pytest.mark.timeout(300)


def test_forwarder_replays_into_a_that_comes_back(world):
    dora = world.users["dora"]
    room_id = world.rooms["down"]
    mark = len(world.fwd.log_text())
    world.a.stop()
    room_id, rows = join_through_edge(world, dora, "down")
    assert_module_answered(rows)
    # the forwarder tried and waits: A refuses connections
    poll("the forwarder retrying", lambda: f"retrying room={room_id}" in
         world.fwd.log_text()[mark:])
    world.a.start().wait_up()
    replay_lands(world, room_id, dora.user_id, timeout=120)
    assert "dead letter" not in world.fwd.log_text()
