"""Redis Cluster (issue 18, item 3) on a real cluster: three masters, three
replicas (t/fault/mxj_cluster.py), the module and matrix-join-ctl given
`cluster:host:port ...`. Each room's keys live on the master of its hash
tag's slot; the module and the CLI must find it themselves (CLUSTER SLOTS)
and follow MOVED and ASK. The judge of our slot function is Redis: no
command of ours may be answered MOVED while the map is current
(errorstat_MOVED of INFO errorstats stays absent).

The fault rows (kill -9 and SIGSTOP of a room's master, a slot moved)
run here short; t/fault/run runs them long and records the time until
joins are answered again. Time is recorded, never asserted."""

import subprocess
import sys
import urllib.parse

import pytest
import requests

from mxj_nginx import CTL, TOP

sys.path.insert(0, str(TOP / "t" / "fault"))
import mxj_cluster  # noqa: E402
import mxj_fault  # noqa: E402

from test_send_join import (EDGE, Edge, answer_of, join,  # noqa: E402,F401
                            new_room, send)

sys.path.insert(0, str(TOP / "t" / "lib"))
import mxj_joiner  # noqa: E402
from mxj_joiner import Joiner, View  # noqa: E402

pytestmark = [pytest.mark.timeout(240), pytest.mark.no_valgrind]


@pytest.fixture(scope="module")
def cluster():
    c = mxj_cluster.ClusterSet().start()
    yield c
    c.cleanup()


@pytest.fixture
def cedge(nginx, cluster, tmp_path):
    e = Edge(nginx, cluster, tmp_path)
    yield e
    e.stop()


def moved(cluster):
    """MOVED answers the cluster's masters gave since they started."""
    out = {}
    for n in cluster.masters():
        stats = cluster.node_client(n).info("errorstats")
        if "errorstat_MOVED" in stats:
            out[n.port] = stats["errorstat_MOVED"]
    return out


def rooms_on_every_master(cluster, count, version="10"):
    """count rooms, at least one on each master (by the real server's
    CLUSTER KEYSLOT)."""
    rooms, owners = [], set()
    masters = len(cluster.masters())
    for _ in range(200):
        if len(rooms) >= count and len(owners) == masters:
            return rooms
        room = new_room(version)
        port = cluster.master_of(room.room_id).port
        if port in owners and len(rooms) >= count:
            continue
        owners.add(port)
        rooms.append(room)
    raise AssertionError(f"rooms on {len(owners)} of {masters} masters")


def test_handshake_on_every_master(cedge, cluster):
    """Rooms on each of the three masters: make_join and send_join
    answered from the right node, judged like any other edge's answers
    (state, auth chain, signatures); each join in its room's outbox on
    its room's master; the next template builds on it; no command was
    answered MOVED."""
    rooms = rooms_on_every_master(cluster, 3)
    cedge.load(*rooms).start(locations="""
        location = /status { matrix_status; }
        location = /metrics { matrix_metrics; }""")
    # (commands that come before a worker's first map wait for it: no
    # redirect at start either)
    poll_map(cedge)
    before = moved(cluster)
    assert before == {}, before
    for k, room in enumerate(rooms):
        view = View(room)
        joiner = Joiner(cedge.remotes[k % 3], f"c{k}")
        _, _, got = join(cedge, room, view, joiner)
        entries = cedge.outbox(room)
        assert [f[b"event_id"].decode() for _, f in entries] == \
            [got["event"]]
        owner = cluster.master_of(room.room_id)
        key = cedge.key(room, "outbox")
        assert cluster.node_client(owner).xlen(key) == 1
        tpl = cedge.template(room, Joiner(cedge.remotes[(k + 1) % 3],
                                          f"n{k}"))
        assert mxj_joiner.ref_ids(tpl["prev_events"]) == [got["event"]]
    assert moved(cluster) == before

    # matrix_status: the worker's map, the masters the real cluster has
    st = requests.get(f"http://127.0.0.1:{cedge.port}/status",
                      timeout=10).json()
    assert st["redis"]["state"] == "connected", st["redis"]
    nodes = st["redis"]["cluster"]["nodes"]
    serving = {n["port"]: n["slots"] for n in nodes if n["slots"]}
    real = {m.port: len(cluster.view()[m.id]["slots"])
            for m in cluster.masters()}
    assert serving == real, (serving, real)
    assert sum(serving.values()) == 16384
    assert all(n["state"] == "connected" for n in nodes if n["slots"])
    assert st["redis"]["cluster"]["redirects"] == 0
    assert len(st["rooms"]) == len(rooms)

    # matrix_metrics: the machine's counts (one worker here)
    m = metrics(cedge)
    assert m["matrix_join_redis_cluster_redirects_total"] == 0
    assert m["matrix_join_redis_cluster_slot_maps_total"] == \
        st["redis"]["cluster"]["slot_map_refreshes"] >= 1


DIR = "/_matrix/federation/v1/query/directory"


def status(edge):
    return requests.get(f"http://127.0.0.1:{edge.port}/status",
                        timeout=10).json()


def other_master(cluster, node):
    return [m for m in cluster.masters() if m is not node][0]


def poll_map(edge, timeout=30):
    """Until the worker's map gives every slot to a master that owns
    some (the first CLUSTER SLOTS answered)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        nodes = status(edge)["redis"]["cluster"]["nodes"]
        if len([n for n in nodes if n["slots"]]) >= 3:
            return nodes
        assert time.monotonic() < deadline, nodes
        time.sleep(0.05)


def metrics(edge):
    from test_metrics import parse
    text = requests.get(f"http://127.0.0.1:{edge.port}/metrics",
                        timeout=10).text
    return {k: v for k, v in parse(text).items() if isinstance(k, str)}


def test_a_moved_slot_is_followed(cedge, cluster):
    """A room's slot moved to another master after the worker learnt the
    map: the next join's first command is answered MOVED, followed at
    once (the join answered 200 and judged), the map refreshed, and the
    join after it is not redirected again."""
    room = new_room()
    cedge.load(room).start(locations="""
        location = /status { matrix_status; }
        location = /metrics { matrix_metrics; }""")
    poll_map(cedge)
    view = View(room)
    join(cedge, room, view, Joiner(cedge.remotes[0], "before"))
    assert status(cedge)["redis"]["cluster"]["redirects"] == 0
    src = cluster.master_of(room.room_id)
    dst = other_master(cluster, src)
    assert cluster.move_slot(cluster.keyslot(room.room_id), dst) > 0
    assert cluster.master_of(room.room_id) is dst
    _, _, got = join(cedge, room, view, Joiner(cedge.remotes[1], "after"))
    st = status(cedge)["redis"]["cluster"]
    assert st["redirects"] >= 1, st
    moved_once = st["redirects"]
    assert metrics(cedge)["matrix_join_redis_cluster_redirects_total"] \
        == moved_once
    join(cedge, room, view, Joiner(cedge.remotes[2], "again"))
    assert status(cedge)["redis"]["cluster"]["redirects"] == moved_once
    # the outbox moved with the slot: both joins on the new master
    key = cedge.key(room, "outbox")
    assert cluster.node_client(dst).xlen(key) == 3
    assert got["event"] in [f[b"event_id"].decode()
                            for _, f in cedge.outbox(room)]


def half_migrated(cluster, key):
    """key's slot set MIGRATING on its master and IMPORTING on another,
    and key alone moved there: the source answers ASK for it. Returns
    (slot, source, destination)."""
    slot = cluster.keyslot(key)
    src = cluster.master_of(key)
    dst = other_master(cluster, src)
    s, d = cluster.node_client(src), cluster.node_client(dst)
    d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.id)
    s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.id)
    s.execute_command("MIGRATE", "127.0.0.1", dst.port, key, 0, 5000)
    return slot, src, dst


def finish_migration(cluster, slot, dst):
    for m in cluster.masters():
        cluster.node_client(m).execute_command("CLUSTER", "SETSLOT", slot,
                                               "NODE", dst.id)
    cluster.wait_ok()


def test_an_asked_key_is_followed(cedge, cluster):
    """The directory's alias key has moved to the node importing its
    slot while the slot is still the source's: the source answers ASK,
    the module asks the other node (ASKING first) and answers 200 with
    the room; the map is not changed by an ASK."""
    room = new_room()
    cedge.load(room).start(locations=f"""
        location = {DIR} {{ matrix_directory; }}
        location = /status {{ matrix_status; }}""")
    akey = f"mxj:alias:{room.alias}"
    assert cluster.client().get(akey).decode() == room.room_id
    target = DIR + "?room_alias=" + urllib.parse.quote(room.alias, safe="")
    auth = [cedge.remotes[0].auth_header("GET", target, EDGE)]
    poll_map(cedge)
    rep = send(cedge.port, "GET", target, auth=auth)
    assert rep.status == 200, rep
    before = status(cedge)["redis"]["cluster"]
    slot, src, dst = half_migrated(cluster, akey)
    try:
        rep = send(cedge.port, "GET", target, auth=auth)
        assert rep.status == 200, rep
        assert rep.json()["room_id"] == room.room_id
        st = status(cedge)["redis"]["cluster"]
        assert st["redirects"] == before["redirects"] + 1, st
        # still the source's slot in this worker's map
        served = {n["port"]: n["slots"] for n in st["nodes"]}
        assert served == {n["port"]: n["slots"] for n in before["nodes"]}
    finally:
        finish_migration(cluster, slot, dst)


def ctl(*args, env=None):
    return subprocess.run([str(CTL), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_ctl_follows_moved_and_ask(cluster, tmp_path):
    """matrix-join-ctl on a cluster: load, show and rooms find each room's
    master; show follows ASK (the room's meta alone moved to the
    importing node) and, once the slot moved, MOVED."""
    room = new_room()
    path = tmp_path / "snap.json"
    room.write(path)
    p = ctl("load", "--redis", cluster.address, str(path))
    assert p.returncode == 0, p.stderr
    p = ctl("show", "--redis", cluster.address, room.room_id)
    assert p.returncode == 0, p.stderr
    assert f"room: {room.room_id}" in p.stdout
    assert f"alias: {room.alias}" in p.stdout
    meta = f"mxj:{{{room.room_id}}}:meta"
    slot, src, dst = half_migrated(cluster, meta)
    try:
        p = ctl("show", "--redis", cluster.address, room.room_id)
        assert p.returncode == 0, p.stderr
        assert "room_version: 10" in p.stdout, p.stdout
    finally:
        # the rest of the slot's keys, then the slot
        s = cluster.node_client(src)
        keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000,
                              "KEYS", *keys)
        finish_migration(cluster, slot, dst)
    p = ctl("show", "--redis", cluster.address, room.room_id)
    assert p.returncode == 0, p.stderr
    assert "room_version: 10" in p.stdout
    p = ctl("rooms", "--redis", cluster.address)
    assert p.returncode == 0 and room.room_id in p.stdout, p.stderr


def test_ctl_refuses_a_database_on_a_cluster(cluster):
    p = ctl("rooms", "--redis", cluster.address, "--db", "1")
    assert p.returncode == 1
    assert "Redis Cluster has only database 0 (--db 1)" in p.stderr


def test_ctl_no_node_answers(tmp_path):
    from mxj_nginx import free_port
    addr = f"cluster:127.0.0.1:{free_port()} 127.0.0.1:{free_port()}"
    p = ctl("rooms", "--redis", addr)
    assert p.returncode == 1
    assert "cannot connect to Redis Cluster node 127.0.0.1:" in p.stderr
    assert f'no node of the Redis Cluster "{addr}" gave its slot map' \
        in p.stderr


@pytest.mark.parametrize("conf,expect", [
    ("matrix_redis cluster:127.0.0.1:7000 unix:/tmp/r.sock;",
     "cluster nodes are asked over TCP"),
    ("matrix_redis cluster:unix:/tmp/r.sock;",
     "cluster nodes are asked over TCP"),
    ("matrix_redis cluster:127.0.0.1:7000; matrix_redis_db 2;",
     "matrix_redis_db 2: Redis Cluster has only database 0"),
])
def test_configuration_errors(nginx, conf, expect):
    nginx.write_conf(f"""
        matrix_server_name {EDGE};
        {conf}
        server {{ listen 127.0.0.1:$PORT; }}
        """)
    rc, out = nginx.test_config()
    assert rc != 0
    assert expect in out, out


def test_a_cluster_with_a_password(nginx, tmp_path):
    """Every node requires a password (requirepass, masterauth): the CLI
    (--password) and the module (matrix_redis_password) authenticate on
    each master's connection; a wrong one is refused by both, by name."""
    c = mxj_cluster.ClusterSet(password="s3cret").start()
    try:
        e = Edge(nginx, c, tmp_path)
        rooms = rooms_on_every_master(c, 2)
        path = tmp_path / "snap.json"
        for room in rooms:
            room.write(path)
            p = ctl("load", "--redis", c.address, "--password", "s3cret",
                    str(path))
            assert p.returncode == 0, p.stderr
        p = ctl("rooms", "--redis", c.address, "--password", "wrong")
        assert p.returncode == 1
        assert "AUTH failed" in p.stderr, p.stderr
        e.start(http_extra="matrix_redis_password s3cret;")
        for k, room in enumerate(rooms):
            join(e, room, View(room), Joiner(e.remotes[k % 3], f"pw{k}"))
        e.stop()
        nginx.stop()
        nginx.allowed_log.append("AUTH failed")
        e2 = Edge(nginx, c, tmp_path)
        e2.start(fallback=False, http_extra="matrix_redis_password wrong;")
        target = ("/_matrix/federation/v1/make_join/"
                  + urllib.parse.quote(rooms[0].room_id, safe="") + "/"
                  + urllib.parse.quote("@x:remote.test", safe="")
                  + "?ver=10")
        rep = send(e2.port, "GET", target,
                   auth=[e2.remotes[0].auth_header("GET", target, EDGE)])
        assert rep.status == 503, rep
        assert rep.json()["errcode"] == "M_UNKNOWN"
        assert "AUTH failed" in nginx.log_text()
        e2.stop()
    finally:
        c.cleanup()


def test_sync_on_a_cluster(cluster):
    """matrix-join-ctl sync against a cluster: the first pass writes the
    snapshot (every key equal to what the generated room computes, read
    through a cluster client), an incremental pass after new members
    applies them (its MULTI reads on the room's master), and no command
    of the CLI's was answered MOVED."""
    import test_sync
    hs = test_sync.new_hs(members=40, servers=4)
    try:
        before = moved(cluster)
        test_sync.synced(cluster, hs, hs.room.room_id)
        test_sync.check_snapshot(cluster.client(), hs)
        hs.add_members(5)
        mark = hs.mark()
        test_sync.synced(cluster, hs, hs.room.room_id)
        test_sync.check_snapshot(cluster.client(), hs)
        by = [h.endpoint for h in hs.hits_since(mark)]
        assert by.count("state") == 0 and by.count("state_ids") == 1, by
        assert moved(cluster) == before
    finally:
        hs.stop()


class Unreachable:
    """A cluster address none of whose seeds answers."""

    def __init__(self):
        from mxj_nginx import free_port
        self.address = f"cluster:127.0.0.1:{free_port()}"

    def client(self):
        return None


def test_no_node_reachable_is_a_matrix_5xx(nginx, tmp_path):
    """A cluster none of whose seeds answers: a make_join is answered 503
    M_UNKNOWN in JSON (no fallback configured; as with one Redis down),
    the error log says why, the worker keeps running."""
    e = Edge(nginx, Unreachable(), tmp_path)
    nginx.allowed_log.append("connection failed")
    try:
        e.start(fallback=False)
        room = new_room()
        target = ("/_matrix/federation/v1/make_join/"
                  + urllib.parse.quote(room.room_id, safe="") + "/"
                  + urllib.parse.quote("@x:remote.test", safe="")
                  + "?ver=10")
        rep = send(e.port, "GET", target,
                   auth=[e.remotes[0].auth_header("GET", target, EDGE)])
        assert rep.status == 503, rep
        assert rep.json() == {"errcode": "M_UNKNOWN", "error":
                              "the room cache (Redis) is unavailable"}
        assert "Connection refused" in nginx.log_text()
    finally:
        e.stop()


@pytest.mark.parametrize("fault", ["cluster-kill", "cluster-stop",
                                   "cluster-move", "cluster-reshard"])
def test_cluster_row(fault):
    """Under a steady load of make_joins and distinct send_joins: the
    master of the busiest room's slot killed (or stopped) until a replica
    takes over, that slot moved to another master by hand, or all of that
    master's slots moved by redis-cli --cluster reshard. No join answered
    200 is lost (each compared with what the homeserver received once the
    forwarder, also on the cluster, drained the outboxes), every other
    answer is a Matrix JSON 5xx, no worker crashed, joins are answered 200
    again."""
    row = mxj_fault.run_row(fault, seconds=6.0, fault_at=1.5, rate=60,
                            threads=6)
    assert row["ok200"] > 0, row
    assert row["lost"] == 0, row["problems"]
    assert row["bad"] == 0, row["problems"]
    assert not row["problems"], "\n".join(row["problems"])
    if fault == "cluster-move":
        assert row["moved_keys"], row
    elif fault == "cluster-reshard":
        assert row["moved_slots"], row
    else:
        # the fault was felt (answers failed) and the failover happened
        assert row["errors"], row
        assert row["failover_s"] is not None, row
