"""Redis Sentinel and matrix_redis_wait (issue 18, item 2) on real servers:
a master, two replicas and three sentinels (t/fault/mxj_sentinel.py), the
module and matrix-join-ctl given `sentinel:NAME host:port ...`.

The two fault rows run here short (a few seconds of load each); t/fault/run
runs them long and records the time until joins are answered again. Time
is recorded, never asserted."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from mxj_nginx import CTL, TOP

sys.path.insert(0, str(TOP / "t" / "fault"))
import mxj_fault  # noqa: E402
import mxj_sentinel  # noqa: E402

sys.path.insert(0, str(TOP / "t" / "lib"))
import mxj_forwarder as fw  # noqa: E402
import mxj_room  # noqa: E402

pytestmark = [pytest.mark.timeout(240), pytest.mark.no_valgrind]


@pytest.mark.parametrize("fault", ["sentinel-kill", "sentinel-stop"])
def test_sentinel_row(fault):
    """The master killed (or stopped) under load: the edge follows the
    failover, no join answered 200 is lost, every other answer is a
    Matrix JSON 5xx, and joins are answered 200 again."""
    row = mxj_fault.run_row(fault, seconds=6.0, fault_at=1.5, rate=60,
                            threads=6)
    assert row["ok200"] > 0, row
    assert row["lost"] == 0, row["problems"]
    assert row["bad"] == 0, row["problems"]
    assert not row["problems"], "\n".join(row["problems"])
    # the fault was felt (answers failed) and the failover happened
    assert row["errors"], row
    assert row["failover_s"] is not None, row


def _send(edge, req):
    status, body, err = mxj_fault.send(edge.nginx.port, req)
    assert err is None, err
    return status, body


def test_wait_answers_503_until_a_replica_has_the_join():
    """matrix_redis_wait 1: with both replicas stopped the join is stored
    on the master but answered 503 (M_UNKNOWN, not durable); the joiner's
    retry once a replica is back is answered 200, and the outbox holds the
    join once."""
    edge = mxj_fault.Edge(rooms=1, sentinel=True, forwarder=False,
                          http_extra="matrix_redis_wait 1 100ms;")
    try:
        edge.start()
        _, sjs = edge.presign(2, make_joins_per_room=1)
        room = edge.rooms[0]
        first, control = sjs[room.room_id]

        # with the replicas up: 200 (the judge can see a 200)
        status, body = _send(edge, control)
        assert status == 200, body

        replicas = edge.redis.nodes[1:]
        for n in replicas:
            n.proc.send_signal(signal.SIGSTOP)
        try:
            status, body = _send(edge, first)
        finally:
            for n in replicas:
                n.proc.send_signal(signal.SIGCONT)
        assert status == 503, body
        err = json.loads(body)
        assert err["errcode"] == "M_UNKNOWN", err
        assert "not yet durable" in err["error"], err

        # stored on the master all the same: the forwarder will deliver it
        r = edge.redis.client()
        ids = [f[b"event_id"].decode()
               for _, f in fw.outbox_entries(r, room.room_id)]
        assert ids.count(first.event_id) == 1, ids

        edge.redis.wait_replicas(2)
        status, body = _send(edge, first)
        assert status == 200, body
        ids = [f[b"event_id"].decode()
               for _, f in fw.outbox_entries(r, room.room_id)]
        assert ids.count(first.event_id) == 1, ids
        assert ids.count(control.event_id) == 1, ids
    finally:
        edge.stop()
        edge.cleanup()


def _delivered(edge, event_id):
    return lambda u: any(x.ok for x in u.requests(event_id))


def test_running_forwarder_follows_a_failover():
    """A manual failover (SENTINEL FAILOVER) demotes the master while it
    runs (the sentinels then close its clients' connections): the running
    forwarder reconnects through a new lookup and delivers a join
    accepted on the new master. (A READONLY answer, which marks the
    connection failed too, is not provoked here: Sentinel's CLIENT KILL
    comes first.)"""
    edge = mxj_fault.Edge(rooms=1, sentinel=True,
                          http_extra="matrix_redis_wait 1 100ms;")
    try:
        edge.start()
        _, sjs = edge.presign(2, make_joins_per_room=1)
        room = edge.rooms[0]
        before, after = sjs[room.room_id]
        status, body = _send(edge, before)
        assert status == 200, body
        edge.upstream.wait_for(_delivered(edge, before.event_id), 30)

        old = edge.redis.master_node()
        edge.redis.sentinels[0].client().execute_command(
            "SENTINEL", "FAILOVER", mxj_sentinel.NAME)
        edge.redis.wait_failover(old)
        deadline = time.monotonic() + 30
        while old.client().execute_command("ROLE")[0] != b"slave":
            assert time.monotonic() < deadline, "old master not demoted"
            time.sleep(0.05)

        # the edge follows too: its answers may be 5xx for a moment
        deadline = time.monotonic() + 20
        while True:
            status, body = _send(edge, after)
            if status == 200:
                break
            assert mxj_fault.matrix_5xx(status, body), (status, body)
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        new = edge.redis.master_node()
        assert new is not old
        ids = [f[b"event_id"].decode()
               for _, f in fw.outbox_entries(new.client(), room.room_id)]
        assert after.event_id in ids or \
            _delivered(edge, after.event_id)(edge.upstream), ids

        edge.upstream.wait_for(_delivered(edge, after.event_id), 30,
                               "the running forwarder's delivery")
        assert edge.forwarder.running(), edge.forwarder.excerpt(1500)
    finally:
        edge.stop()
        edge.cleanup()


def _ctl(*args):
    return subprocess.run([str(CTL)] + list(args), capture_output=True,
                          text=True, timeout=60)


def test_ctl_follows_the_failover(tmp_path):
    """matrix-join-ctl --redis sentinel:NAME ...: load writes to the master
    the sentinels name; after the master is killed and a replica
    promoted, the same command line reaches the new master."""
    s = mxj_sentinel.SentinelSet().start()
    try:
        room = mxj_room.Room("10", members=4, seed=9100)
        path = tmp_path / "snap.json"
        room.write(path)
        p = _ctl("load", "--redis", s.address, str(path))
        assert p.returncode == 0, p.stderr
        assert s.client().exists(fw.key(room.room_id, "meta")) == 1

        old = s.kill9()
        s.wait_failover(old)
        assert s.master_node() is not old

        p = _ctl("rooms", "--redis", s.address)
        assert p.returncode == 0, p.stderr
        assert room.room_id in p.stdout

        # a name the sentinels do not know
        bad = f"sentinel:{mxj_sentinel.NAME}x 127.0.0.1:" \
              f"{s.sentinels[0].port}"
        p = _ctl("rooms", "--redis", bad)
        assert p.returncode != 0
        assert "does not name master" in p.stderr, p.stderr
    finally:
        s.cleanup()


def _ctl_env(env, *args):
    return subprocess.run([str(CTL)] + list(args), capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, **env))


@pytest.mark.parametrize("right", [True, False])
def test_sentinels_and_nodes_with_passwords(tmp_path, nginx, right):
    """Data nodes that require a password and sentinels that require
    their own (requirepass in sentinel.conf, as production sentinels
    run): matrix-join-ctl (MXJ_REDIS_PASSWORD, MXJ_REDIS_SENTINEL_PASSWORD)
    loads a room into the master, and the module (matrix_redis_password,
    matrix_redis_sentinel_password) finds it there. With the sentinels'
    password wrong, both fail and say AUTH failed."""
    s = mxj_sentinel.SentinelSet(password="data-pw",
                                 sentinel_password="sentinel-pw").start()
    try:
        spw = "sentinel-pw" if right else "wrong"
        env = {"MXJ_REDIS_PASSWORD": "data-pw",
               "MXJ_REDIS_SENTINEL_PASSWORD": spw}
        room = mxj_room.Room("10", members=4, seed=9200)
        path = tmp_path / "snap.json"
        room.write(path)
        p = _ctl_env(env, "load", "--redis", s.address, str(path))
        if not right:
            assert p.returncode == 1, p.stderr
            assert "AUTH failed: WRONGPASS" in p.stderr, p.stderr
            p = _ctl_env({"MXJ_REDIS_PASSWORD": "data-pw",
                          "MXJ_REDIS_SENTINEL_PASSWORD": "sentinel-pw"},
                         "load", "--redis", s.address, str(path))
        assert p.returncode == 0, p.stderr
        assert s.client().exists(fw.key(room.room_id, "meta")) == 1

        nginx.write_conf(f"""
            matrix_redis {s.address};
            matrix_redis_password data-pw;
            matrix_redis_sentinel_password {spw};
            {STATUS_SERVER}
            """)
        if not right:
            nginx.allowed_log.append("AUTH failed")
        nginx.start()
        url = nginx.url("/s") + "?room_id=" + room.room_id
        end = time.monotonic() + 20     # only ends a hang
        while True:
            r = requests.get(url, timeout=10)
            done = r.status_code == 200 if right else \
                "AUTH failed: WRONGPASS" in nginx.log_text()
            if done or time.monotonic() > end:
                break
            time.sleep(0.2)
        if right:
            assert r.status_code == 200, r.text
            assert room.room_id in r.json()["rooms"]
        else:
            log = nginx.log_text()
            assert re.search(r"redis sentinel 127\.0\.0\.1:\d+: AUTH "
                             r"failed: WRONGPASS", log), log
            r = requests.get(url, timeout=10)
            assert r.status_code == 502, r.text
            assert r.json()["errcode"] == "M_UNKNOWN", r.text
    finally:
        s.cleanup()


def test_ctl_rejects_a_bad_address():
    p = _ctl("rooms", "--redis", "sentinel:m")
    assert p.returncode != 0
    assert "invalid Redis address \"sentinel:m\": no sentinel address" \
        in p.stderr, p.stderr


STATUS_SERVER = """server { listen 127.0.0.1:$PORT;
                   location /s { matrix_status; } }"""


@pytest.mark.parametrize("conf,expect", [
    ("matrix_redis sentinel:m;",
     'invalid Redis address "sentinel:m": no sentinel address'),
    ("matrix_redis 127.0.0.1:1 127.0.0.1:2;",
     'one address, "sentinel:NAME" and the sentinels\' addresses, or '
     '"cluster:host:port" and more nodes'),
    ("matrix_redis sentinel:m unix:/tmp/s.sock;",
     "sentinels are asked over TCP"),
    ("matrix_redis sentinel:m 127.0.0.1:26379; matrix_redis_wait 0 100ms;",
     'invalid number of replicas "0"'),
    ("matrix_redis sentinel:m 127.0.0.1:26379; matrix_redis_wait 1 abc;",
     'invalid timeout "abc"'),
    ("matrix_redis sentinel:m 127.0.0.1:26379; matrix_redis_wait on;",
     'takes "off" or the number of replicas and a timeout'),
    ("matrix_redis sentinel:m 127.0.0.1:26379; matrix_redis_wait off; "
     "matrix_redis_wait off;", "is duplicate"),
])
def test_configuration_errors(nginx, conf, expect):
    nginx.write_conf(conf + STATUS_SERVER)
    rc, out = nginx.test_config()
    assert rc != 0 and expect in out, out


def test_configuration_accepted(nginx):
    """The control for the cases above: the same directives, valid."""
    nginx.write_conf("matrix_redis sentinel:m 127.0.0.1:26379\n"
                     "    [::1]:26380,127.0.0.1:26381;\n"
                     "matrix_redis_wait 1 100ms;" + STATUS_SERVER)
    rc, out = nginx.test_config()
    assert rc == 0, out
