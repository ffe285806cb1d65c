"""The fault matrix (t/fault/, docs/reliability.md) in a reduced form for
CI: four rows with a few seconds of load each (compound: Redis, a worker
and the forwarder killed at once). Asserts correctness only
(every send_join answered 200 reached the homeserver exactly as sent or
is still in the outbox; every other answer is a Matrix JSON 5xx; no
crash or [alert] but the worker killed on purpose); latency is recorded
by t/fault/run, never asserted here."""

import sys

import pytest

from mxj_nginx import TOP

sys.path.insert(0, str(TOP / "t" / "fault"))
import mxj_fault  # noqa: E402

pytestmark = [pytest.mark.timeout(180), pytest.mark.no_valgrind]


@pytest.mark.parametrize("fault", ["redis-kill", "worker-kill",
                                   "forwarder-kill", "compound"])
def test_fault_row(fault):
    row = mxj_fault.run_row(fault, seconds=5.0, fault_at=1.5, rate=80,
                            threads=6)
    assert row["ok200"] > 0, row
    assert row["lost"] == 0, row["problems"]
    assert row["bad"] == 0, row["problems"]
    assert not row["problems"], "\n".join(row["problems"])


def test_fault_judge_sees_a_lost_join(monkeypatch):
    """The judge can fail: an accepted join removed from the outbox
    before anything delivers it is reported lost."""
    real = mxj_fault.Edge.stop_forwarder

    def drop_one(edge):
        real(edge)
        r = edge.redis.client()
        for room in edge.rooms:
            entries = mxj_fault.fw.outbox_entries(r, room.room_id)
            if entries:
                r.xdel(mxj_fault.fw.key(room.room_id, "outbox"),
                       entries[-1][0])
                return
        raise AssertionError("nothing left in any outbox to drop")

    monkeypatch.setattr(mxj_fault.Edge, "stop_forwarder", drop_one)
    # the homeserver refuses connections for the whole load, so the
    # joins wait in the outbox
    monkeypatch.setitem(mxj_fault.FAULTS, "refuse-all",
                        (mxj_fault._up_down, mxj_fault._nothing, 0, False,
                         "homeserver down"))
    row = mxj_fault.run_row("refuse-all", seconds=2.0, fault_at=0.0,
                            rate=40, threads=2)
    assert row["ok200"] > 0, row
    assert row["lost"] == 1, row["problems"]
