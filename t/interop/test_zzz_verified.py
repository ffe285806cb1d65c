"""Last: the joining Synapses verified what the edge served with their own
code. B stored A's key document (the edge's: A's key, fetched from the
edge), holds the same state as A in every room it joined through the
module (each event of the send_join answers accepted), and no Synapse
logged a signature, key or hash that did not verify."""

import sqlite3

import pytest

from mxj_interop import VERSIONS, poll
from mxj_synapse import SYNAPSE, SYNAPSE_VERIFY_FAILURES

pytestmark = pytest.mark.timeout(300)


def test_b_stored_the_edges_key(world):
    version, _ = world.a.key_line()
    db = sqlite3.connect(world.b.dir / "homeserver.db")
    try:
        rows = db.execute("SELECT key_id, from_server FROM server_keys_json "
                          "WHERE server_name = ?", (world.name,)).fetchall()
    finally:
        db.close()
    assert (f"ed25519:{version}", world.name) in rows, rows


def state_ids(client, room_id):
    body = client.ok("GET", f"/rooms/{room_id}/state")
    return sorted(e["event_id"] for e in body)


@pytest.mark.parametrize("room", ["main", "second", "allowed", "restricted"]
                         + [f"v{v}" for v in VERSIONS])
def test_b_holds_as_state(world, room):
    room_id = world.rooms[room]
    poll(f"B's state of {room} equal to A's", lambda: state_ids(
        world.bob, room_id) == state_ids(world.alice, room_id)
        if room in ("main", "second") else state_ids(
        world.bert if room.startswith("v") else world.users["rita"],
        room_id) == state_ids(world.alice, room_id))


def test_log_scan_knows_synapses_messages():
    """Each message the scan looks for is in Synapse's source: the scan
    cannot miss a failure by a misspelt pattern."""
    src = "".join(
        (SYNAPSE / "src" / "synapse" / f).read_text() for f in (
            "crypto/keyring.py", "federation/federation_base.py",
            "federation/federation_client.py"))
    for m in SYNAPSE_VERIFY_FAILURES:
        assert m.strip() in src, m


def test_no_verification_failure_in_any_synapse_log(world):
    bad = {s.label: s.bad_log_lines() for s in world.synapses}
    assert not any(bad.values()), bad
