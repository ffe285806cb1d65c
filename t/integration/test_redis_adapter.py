"""The hiredis adapter under faults, driven through matrix_status: big
replies, Redis killed or stalled mid-request, clients that leave, a
graceful quit with a request in flight, AUTH/SELECT, NOSCRIPT, schema."""

import json
import signal
import socket
import threading
import time

import pytest
import requests

from mxj_redis import RedisServer

PREFIX = "mxj:"
ROOM = "!room:example.org"


def status_conf(redis_addr, extra=""):
    return f"""
        matrix_redis {redis_addr};
        {extra}
        server {{
            listen 127.0.0.1:$PORT;
            location = /status {{
                matrix_status;
            }}
        }}
        """


def put_room(client, room=ROOM, extremities=None, prefix=PREFIX):
    """A room's meta and extremities as the schema describes them."""
    tag = f"{prefix}{{{room}}}"
    client.hset(f"{tag}:meta", mapping={
        "schema": "1", "room_id": room, "room_version": "10",
        "create_event_id": "$create", "loaded_at": int(time.time() * 1000),
        "state_events": 12, "members": 7, "member_events": 9,
        "auth_chain": 30, "extremities": 1, "max_depth": 41, "bytes": 4096})
    ex = extremities or {"$tip": {"depth": 41, "sha256": "AAAA"}}
    client.hset(f"{tag}:extrem",
                mapping={k: json.dumps(v) for k, v in ex.items()})
    client.sadd(f"{prefix}rooms", room)


def get_status(nginx, query="", timeout=10):
    return requests.get(nginx.url("/status" + query), timeout=timeout)


def status_once_up(nginx, within=15):
    """The first 200 within `within` s (Redis back, the worker
    reconnected by itself), or the last answer."""
    deadline = time.monotonic() + within
    while True:
        r = get_status(nginx)
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_empty_cache(nginx, redis_server):
    nginx.write_conf(status_conf(redis_server.address))
    nginx.start()
    r = get_status(nginx)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    doc = r.json()
    assert doc["rooms"] == {}
    assert doc["redis"]["state"] == "connected"
    assert doc["redis"]["address"] == redis_server.address


def test_rooms_and_one_room(nginx, redis_server):
    c = redis_server.client()
    put_room(c)
    put_room(c, room="!other:example.org")
    nginx.write_conf(status_conf(redis_server.address))
    nginx.start()

    doc = get_status(nginx).json()
    assert set(doc["rooms"]) == {ROOM, "!other:example.org"}
    room = doc["rooms"][ROOM]
    assert room["room_version"] == "10"
    assert room["state_events"] == 12
    assert room["members"] == 7
    assert room["auth_chain"] == 30
    assert room["forward_extremities"] == [{"event_id": "$tip", "depth": 41}]
    assert 0 <= room["snapshot_age_ms"] < 60000

    r = get_status(nginx, "?room_id=%21room%3Aexample.org")
    assert r.status_code == 200
    assert list(r.json()["rooms"]) == [ROOM]


def test_unknown_and_invalid_room(nginx, redis_server):
    nginx.write_conf(status_conf(redis_server.address))
    nginx.start()
    r = get_status(nginx, "?room_id=!nope:example.org")
    assert r.status_code == 404
    assert r.json()["errcode"] == "M_NOT_FOUND"
    for bad in ("?room_id=", "?room_id=notaroom", "?room_id=!a}b:c"):
        r = get_status(nginx, bad)
        assert r.status_code == 400, bad
        assert r.json()["errcode"] == "M_INVALID_PARAM"


def test_reply_larger_than_64k(nginx, redis_server):
    """hiredis reads 16 KiB at a time: with edge-triggered events a large
    reply would stall until the timeout."""
    ex = {f"$event{i:05d}_" + "x" * 40: {"depth": i, "sha256": "A" * 43}
          for i in range(5000)}
    put_room(redis_server.client(), extremities=ex)
    nginx.write_conf(status_conf(redis_server.address))
    nginx.start()
    r = get_status(nginx, "?room_id=" + ROOM)
    assert r.status_code == 200, r.text
    got = r.json()["rooms"][ROOM]["forward_extremities"]
    assert len(got) == 5000
    assert {e["event_id"] for e in got} == set(ex)


def test_method_not_allowed(nginx, redis_server):
    nginx.write_conf(status_conf(redis_server.address))
    nginx.start()
    r = requests.post(nginx.url("/status"), data=b"x", timeout=5)
    assert r.status_code == 405
    assert r.json()["errcode"] == "M_UNRECOGNIZED"


def test_stalled_redis_times_out(nginx, redis_server):
    put_room(redis_server.client())
    nginx.write_conf(status_conf(redis_server.address,
                                 "matrix_redis_timeout 500ms;"))
    nginx.start()
    assert get_status(nginx).status_code == 200   # connected

    redis_server.pause(4000)
    t0 = time.monotonic()
    r = get_status(nginx)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert r.json()["errcode"] == "M_UNKNOWN"
    # answered by the configured timeout, not by the end of the pause
    assert 0.45 <= elapsed < 3.0, elapsed

    # nothing was read for the whole timeout: the connection is closed as
    # hung, and once Redis answers again a new one serves requests
    time.sleep(4.0 - (time.monotonic() - t0) + 0.2)
    r = get_status(nginx)
    assert r.status_code == 200, r.text
    assert r.json()["redis"]["hung"] == 1
    assert r.json()["redis"]["connects"] == 2
    log = nginx.log_text()
    assert "no reply within 500 ms" in log
    # matrix_status sends two commands
    assert "nothing read for 500 ms with 2 commands waiting: closing the " \
        "connection" in log
    assert "connection lost" not in log     # closed by us, said once


def test_stopped_redis_does_not_pile_up_commands(nginx, redis_server):
    """A Redis that never answers (SIGSTOP: TCP stays up, nothing is
    read): each request is answered by the timeout, and the commands do
    not pile up in the worker for as long as it lasts: every connection
    is closed after one timeout without a byte read, with only the
    commands of that window on it."""
    put_room(redis_server.client())
    nginx.write_conf(status_conf(redis_server.address,
                                 "matrix_redis_timeout 300ms;"))
    nginx.start()
    assert get_status(nginx).status_code == 200

    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        answers = []
        lock = threading.Lock()

        def ask():
            end = time.monotonic() + 2.5
            while time.monotonic() < end:
                r = get_status(nginx, timeout=10)
                with lock:
                    answers.append(r)
                time.sleep(0.05)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)

    assert answers
    for r in answers:
        # 504 by the timeout, or 502 while the worker waits to reconnect
        assert r.status_code in (502, 504), r.text
        assert r.json()["errcode"] == "M_UNKNOWN"
    assert any(r.status_code == 504 for r in answers)

    log = nginx.log_text()
    closes = [int(line.split(" with ")[1].split()[0])
              for line in log.splitlines()
              if "closing the connection" in line]
    assert len(closes) >= 2, log[-2000:]
    # four clients, one request (two commands) each at a time: at most
    # eight commands ever wait on one connection
    assert max(closes) <= 8, closes

    r = status_once_up(nginx)
    assert r.status_code == 200, r.text
    st = r.json()["redis"]
    assert st["hung"] == len(closes)
    assert st["outstanding"] == 0       # this request's own is done
    assert ROOM in r.json()["rooms"]


def test_redis_killed_mid_request_then_recovers(nginx, redis_server):
    put_room(redis_server.client())
    nginx.write_conf(status_conf(redis_server.address,
                                 "matrix_redis_timeout 10s;"))
    nginx.start()
    assert get_status(nginx).status_code == 200

    redis_server.pause(10000)
    result = {}

    def ask():
        t0 = time.monotonic()
        result["r"] = get_status(nginx, timeout=20)
        result["t"] = time.monotonic() - t0

    t = threading.Thread(target=ask)
    t.start()
    time.sleep(0.5)                 # the request waits on the paused Redis
    redis_server.kill9()
    t.join(20)
    assert result["r"].status_code == 502, result["r"].text
    assert result["r"].json()["errcode"] == "M_UNKNOWN"
    assert result["t"] < 5          # the lost connection, not the timeout

    # while Redis is down: a clean error, nothing hangs
    r = get_status(nginx)
    assert r.status_code == 502

    redis_server.restart()
    put_room(redis_server.client())
    r = status_once_up(nginx)
    assert r.status_code == 200, r.text     # no nginx reload needed
    assert ROOM in r.json()["rooms"]
    assert "connection lost" in nginx.log_text()


def test_redis_down_at_start(nginx):
    rs = RedisServer()              # its port is free: nothing listens yet
    try:
        nginx.write_conf(status_conf(rs.address))
        nginx.start()
        r = get_status(nginx)
        assert r.status_code == 502
        assert r.json()["errcode"] == "M_UNKNOWN"

        rs.start()
        assert status_once_up(nginx).status_code == 200, "never reconnected"
    finally:
        rs.cleanup()


def test_client_gone_before_reply(nginx, redis_server):
    put_room(redis_server.client())
    nginx.write_conf(status_conf(redis_server.address,
                                 "matrix_redis_timeout 5s;"))
    nginx.start()
    assert get_status(nginx).status_code == 200

    redis_server.pause(1500)
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", nginx.port))
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
    time.sleep(2.0)                 # the replies arrive for requests gone
    r = get_status(nginx)
    assert r.status_code == 200
    assert ROOM in r.json()["rooms"]


@pytest.mark.no_valgrind     # one process (master_process off) quits at once
def test_graceful_quit_completes_request_in_flight(nginx, redis_server):
    put_room(redis_server.client())
    nginx.write_conf(status_conf(redis_server.address,
                                 "matrix_redis_timeout 5s;"))
    nginx.start()
    assert get_status(nginx).status_code == 200

    redis_server.pause(1500)
    result = {}
    t = threading.Thread(
        target=lambda: result.setdefault("r", get_status(nginx, timeout=20)))
    t.start()
    time.sleep(0.3)
    nginx.signal(signal.SIGQUIT)
    t.join(20)
    assert result["r"].status_code == 200, result["r"].text
    assert ROOM in result["r"].json()["rooms"]
    nginx.proc.wait(timeout=15)


def test_script_cache_flushed(nginx, redis_server):
    """NOSCRIPT: the script is sent again with EVAL."""
    c = redis_server.client()
    put_room(c)
    nginx.write_conf(status_conf(redis_server.address))
    nginx.start()
    assert get_status(nginx, "?room_id=" + ROOM).status_code == 200
    c.script_flush()
    r = get_status(nginx, "?room_id=" + ROOM)
    assert r.status_code == 200, r.text
    assert "script not cached" in nginx.log_text()
    assert get_status(nginx, "?room_id=" + ROOM).status_code == 200


def test_unknown_schema_is_refused(nginx, redis_server):
    c = redis_server.client()
    put_room(c)
    c.set(PREFIX + "schema", "2")
    nginx.write_conf(status_conf(redis_server.address))
    nginx.start()
    deadline = time.monotonic() + 5
    while True:
        r = get_status(nginx)
        if r.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 503, r.text
    assert "schema" in r.json()["error"]
    assert 'unsupported schema version "2"' in nginx.log_text()


def test_prefix_auth_and_db(nginx):
    """matrix_redis_prefix, matrix_redis_password, matrix_redis_db."""
    rs = RedisServer(password="s3cret").start()
    n = nginx
    try:
        c = rs.client(db=3)
        put_room(c, prefix="other:")
        n.write_conf(status_conf(rs.address, """
            matrix_redis_prefix other:;
            matrix_redis_password s3cret;
            matrix_redis_db 3;
            """))
        n.start()
        r = get_status(n)
        assert r.status_code == 200, r.text
        assert ROOM in r.json()["rooms"]
    finally:
        rs.cleanup()


def test_wrong_password(nginx):
    rs = RedisServer(password="s3cret").start()
    try:
        nginx.write_conf(status_conf(rs.address,
                                     "matrix_redis_password wrong;"))
        nginx.start()
        r = get_status(nginx)
        assert r.status_code == 502, r.text
        assert "AUTH failed" in nginx.log_text()
    finally:
        rs.cleanup()


def test_unix_socket(nginx, tmp_path):
    import os
    import subprocess
    import tempfile
    d = tempfile.mkdtemp(prefix="mxj-redis-unix-")
    os.chmod(d, 0o755)
    sock = os.path.join(d, "redis.sock")
    proc = subprocess.Popen(["/usr/bin/redis-server", "--port", "0",
                             "--unixsocket", sock, "--unixsocketperm", "777",
                             "--save", "", "--dir", d],
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not os.path.exists(sock):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        import redis
        put_room(redis.Redis(unix_socket_path=sock))
        nginx.write_conf(status_conf("unix:" + sock))
        nginx.start()
        r = get_status(nginx)
        assert r.status_code == 200, r.text
        assert ROOM in r.json()["rooms"]
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.parametrize("conf,expect", [
    ("""server { listen 127.0.0.1:$PORT;
                 location /s { matrix_status; } }""", "matrix_redis"),
    ("matrix_redis nohost;", "invalid Redis address"),
    ("matrix_redis unix:relative.sock;", "absolute path"),
    ("matrix_redis 127.0.0.1:6379; matrix_redis_prefix \"a{b\";",
     "invalid Redis key prefix"),
])
def test_configuration_errors(nginx, conf, expect):
    nginx.write_conf(conf)
    rc, out = nginx.test_config()
    assert rc != 0 and expect in out, out
