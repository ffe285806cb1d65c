"""The fault matrix (issue 10, "Fault matrix under load"): one row is a
private edge (Debian's nginx with the module, 2 workers; redis-server with
appendonly yes + appendfsync always; a key server for the joining servers;
a recording homeserver, t/lib/mxj_upstream.py; a running `matrix-join-ctl
forward`), a steady load of make_join and send_join requests for several
rooms, and one fault in the middle of the load.

The joins are genuine and distinct: for each room one make_join template
is asked for, and each join is that template made into the join of a new
user (sender and state_key replaced, then filled in and signed as
t/lib/mxj_joiner.py's Joiner does), all signed before the load starts.
Their prev_events are the snapshot's forward extremities, which the edge
accepts for as long as that snapshot is loaded (docs/directives.md,
"matrix_send_join").

After the load: the fault is undone, the running forwarder stopped,
`forward --once` run to the end, and the row judged:

  lost     a send_join answered 200 whose request (target, Authorization,
           body bytes) did not reach the homeserver answered 2xx, or is
           not still in its room's outbox;
  bad      an answer that is neither 200 nor a Matrix JSON error with a
           5xx status (a connection reset or refused counts as bad except
           in the rows that kill a worker or stop nginx);
  hangs    a request with no answer within the client's bound
           (HANG_S, far above matrix_redis_timeout);
  log      [alert]/[emerg]/[crit]/"exited on signal" in nginx's error
           log, except the exit of the worker killed on purpose;
  forward  the final `forward --once` exits non-zero or leaves dead
           letters.

Recorded, not judged: max latency; `redelivered`, the events the
homeserver answered 2xx more than once (delivery is at-least-once: an
entry whose acknowledgement was lost is sent again, and the homeserver
answers a repeated send_join 200); `acks_in_outage`, deliveries answered
2xx while Redis was down (their XACK/XDEL cannot have happened, so each
must be delivered again). Nothing here asserts time.

Rows may carry options (ROW_OPTIONS): a rate they are run at (at most),
a large first room (`members`).
"""

import copy
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "t" / "integration"))
sys.path.insert(0, str(TOP / "t" / "lib"))

import mxj_forwarder as fw  # noqa: E402
import mxj_joiner  # noqa: E402
import mxj_room  # noqa: E402
from mxj_joiner import Joiner, send_join_target  # noqa: E402
from mxj_nginx import CTL, Nginx  # noqa: E402
from mxj_redis import RedisServer  # noqa: E402
from mxj_sentinel import SentinelSet  # noqa: E402
from mxj_cluster import ClusterSet  # noqa: E402
from mxj_remote import KeyServer, RemoteServer  # noqa: E402
from mxj_upstream import Answer, Hang, Upstream  # noqa: E402

EDGE = "s0.example.org"
ORIGINS = ("remote.test", "remote2.test")
MJ = "/_matrix/federation/v1/make_join/"
STATUS = "/_mxj/status"
VERSIONS = ("10", "11", "6")    # one room of each
REDIS_TIMEOUT = "1s"            # matrix_redis_timeout
FWD_TIMEOUT_MS = 2000           # forward --timeout
HANG_S = 30.0                   # a client waits this long for an answer


def remote_server(name):
    seed = hashlib.sha256(f"mxj-fault:{name}".encode()).digest()
    return RemoteServer(name, seed=seed)


class Req:
    """A pre-signed request: method, target, Authorization, body."""

    __slots__ = ("kind", "method", "target", "auth", "body", "event_id",
                 "room_id")

    def __init__(self, kind, method, target, auth, body=None, event_id=None,
                 room_id=None):
        self.kind = kind
        self.method = method
        self.target = target
        self.auth = auth
        self.body = body
        self.event_id = event_id
        self.room_id = room_id


class Result:
    __slots__ = ("req", "status", "body", "error", "latency", "size", "end")

    def __init__(self, req, status, body, error, latency):
        self.req = req
        self.status = status
        self.size = len(body)
        # a 200's body is not judged, and a big room's is megabytes
        self.body = b"" if status == 200 else body
        self.error = error
        self.latency = latency
        self.end = time.monotonic()


def send(port, req, timeout=HANG_S):
    """(status, body, error): error is None, 'hang', 'reset', 'refused',
    'truncated' (the connection closed before the whole body) or another
    exception's name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(req.method, req.target, skip_host=True,
                        skip_accept_encoding=True)
        conn.putheader("Host", EDGE)
        conn.putheader("Authorization", req.auth)
        if req.body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(req.body)))
        conn.endheaders(req.body)
        resp = conn.getresponse()
        return resp.status, resp.read(), None
    except socket.timeout:
        return None, b"", "hang"
    except ConnectionRefusedError:
        return None, b"", "refused"
    except (ConnectionResetError, BrokenPipeError,
            http.client.RemoteDisconnected):
        return None, b"", "reset"
    except http.client.IncompleteRead:
        return None, b"", "truncated"
    except http.client.HTTPException as e:
        return None, b"", type(e).__name__
    except OSError as e:
        return None, b"", type(e).__name__
    finally:
        conn.close()


def matrix_5xx(status, body):
    """A Matrix error: JSON object with a string errcode, status 5xx."""
    if status is None or not 500 <= status <= 599:
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("errcode"), str)


class Edge:
    """nginx + Redis (AOF always) + key server + recording homeserver +
    a running forwarder, with rooms loaded."""

    def __init__(self, workers=2, rooms=3, seed=0, http_extra="",
                 server_extra="", main_extra="", key_server=KeyServer,
                 forwarder=True, worker_connections=1024, members=None,
                 sentinel=False, cluster=False):
        self.worker_connections = worker_connections
        self.http_extra = http_extra
        self.server_extra = server_extra
        self.main_extra = main_extra
        self.with_forwarder = forwarder
        self.tmp = Path(tempfile.mkdtemp(prefix="mxj-fault-"))
        # sentinel: a master, two replicas and three sentinels instead
        # cluster: three masters and three replicas
        self.redis = (SentinelSet() if sentinel
                      else ClusterSet() if cluster
                      else RedisServer(aof=True)).start()
        self.nginx = Nginx(workers=workers)
        self.remotes = [remote_server(n) for n in ORIGINS]
        self.keys = key_server(*self.remotes, avoid=[self.nginx.port])
        vk = {rs.name: {kid: mxj_room.get_verify_key(k)
                        for kid, k in rs.keys.items()}
              for rs in self.remotes}
        self.upstream = Upstream(verify_keys=vk, destination=EDGE,
                                 avoid=[self.nginx.port])
        # members: the first room that large (the others 6 members)
        self.rooms = [mxj_room.Room(VERSIONS[i % len(VERSIONS)],
                                    members=members if members and i == 0
                                    else 6,
                                    servers=20 if members and i == 0 else 2,
                                    seed=7100 + seed * 10 + i)
                      for i in range(rooms)]
        self.forwarder = None
        self.fwd_runs = 0
        self.killed_workers = []
        self.generation = 0
        self.redis_down = []        # [monotonic kill, monotonic up or None]
        self.down_rooms = None      # a cluster's: the rooms Redis was down for
        self.notes = []             # what a fault saw, for the problems

    # -- setup ---------------------------------------------------------------

    def load_rooms(self):
        for room in self.rooms:
            path = self.tmp / "snap.json"
            room.write(path)
            p = subprocess.run([str(CTL), "load", "--redis",
                                self.redis.address, str(path)],
                               capture_output=True, text=True, timeout=120)
            if p.returncode != 0:
                raise RuntimeError(p.stderr)

    def conf(self, extra=""):
        return f"""
            matrix_server_name {EDGE};
            matrix_signing_key signing.key;
            matrix_redis {self.redis.address};
            matrix_redis_timeout {REDIS_TIMEOUT};
            matrix_key_fetch /_mxj_keys/;
            {self.http_extra}
            server {{
                listen 127.0.0.1:$PORT;
                {self.server_extra}
                {extra}
                location {MJ} {{
                    matrix_make_join;
                }}
                location ~ ^/_matrix/federation/v[12]/send_join/ {{
                    matrix_send_join;
                }}
                location = {STATUS} {{
                    matrix_status;
                }}
                location /_mxj_keys/ {{
                    internal;
                    proxy_pass http://127.0.0.1:{self.keys.port}/_matrix/key/v2/query/;
                    subrequest_output_buffer_size 64k;
                }}
            }}
            """

    def start(self):
        self.load_rooms()
        key = subprocess.run([str(CTL), "keygen", EDGE], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        self.nginx.write_file("signing.key", key, mode=0o600)
        self.write_conf(self.conf())
        self.nginx.start()
        if self.with_forwarder:
            self.start_forwarder()
        return self

    def write_conf(self, body):
        self.nginx.write_conf(body, main_extra=self.main_extra)
        p = self.nginx.conf_path
        p.write_text(p.read_text().replace(
            "worker_connections 1024;",
            f"worker_connections {self.worker_connections};"))

    def reconfigure(self):
        """A changed configuration (another Redis timeout, a header added)
        and `nginx -s reload`."""
        self.generation += 1
        self.write_conf(
            self.conf(f"add_header X-Mxj-Generation {self.generation};")
            .replace(f"matrix_redis_timeout {REDIS_TIMEOUT};",
                     "matrix_redis_timeout 2s;"))
        self.nginx.reload()

    def stop(self):
        if self.forwarder is not None:
            self.forwarder.stop()
        try:
            self.nginx.stop()
        finally:
            self.upstream.stop()
            self.keys.stop()
            self.redis.cleanup()

    def cleanup(self):
        self.nginx.cleanup()
        subprocess.run(["rm", "-rf", str(self.tmp)])

    # -- the forwarder -------------------------------------------------------

    def fwd(self, *args):
        self.fwd_runs += 1
        return fw.Forwarder(self.redis.address,
                            f"http://127.0.0.1:{self.upstream.port}",
                            "--consumer", "fault", "--claim-idle", "2000",
                            "--timeout", str(FWD_TIMEOUT_MS), *args,
                            workdir=self.tmp, name=f"fwd{self.fwd_runs}")

    def start_forwarder(self):
        self.forwarder = self.fwd().start()

    def stop_forwarder(self):
        """SIGTERM (deliveries in flight finish or time out), bounded."""
        f = self.forwarder
        if f is not None and f.running():
            f.signal(signal.SIGTERM)
            try:
                f.wait(FWD_TIMEOUT_MS / 1000 + 20)
            except AssertionError:
                pass
        self.forwarder = None

    def forward_once(self):
        """`forward --once` to the end: (exit code, log excerpt)."""
        f = self.fwd("--once")
        f.start()
        try:
            rc = f.wait(90)
        except AssertionError as e:
            return None, str(e)[-2000:]
        return rc, f.excerpt(2000)

    # -- nginx workers -------------------------------------------------------

    def workers(self):
        pid = self.nginx.proc.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def kill_worker(self):
        pid = self.workers()[0]
        self.killed_workers.append(pid)
        self.nginx.allowed_log.append(
            f"worker process {pid} exited on signal 9")
        os.kill(pid, signal.SIGKILL)

    # -- Redis ---------------------------------------------------------------

    # An outage is timed conservatively: from after the kill was reaped
    # to before the restart began, when Redis was surely down.

    def kill_redis(self):
        self.redis.kill9()
        self.redis_down.append([time.monotonic(), None])

    def restart_redis(self):
        if self.redis_down and self.redis_down[-1][1] is None:
            self.redis_down[-1][1] = time.monotonic()
        self.redis.restart()

    def in_outage(self, t):
        return any(a <= t and (b is None or t < b)
                   for a, b in self.redis_down)

    # -- pre-signed requests ---------------------------------------------------

    def make_join_req(self, room, remote, localpart):
        user = f"@{localpart}:{remote.name}"
        target = MJ + urllib.parse.quote(room.room_id, safe="") + "/" \
            + urllib.parse.quote(user, safe="") + "?ver=" + room.version
        return Req("make_join", "GET", target,
                   remote.auth_header("GET", target, EDGE),
                   room_id=room.room_id)

    def template(self, room):
        req = self.make_join_req(room, self.remotes[0], "tmpl")
        status, body, err = send(self.nginx.port, req)
        if status != 200:
            raise RuntimeError(f"make_join for a template: {status} {err} "
                               f"{body[:300]!r}")
        return json.loads(body)["event"]

    def presign(self, joins_per_room, make_joins_per_room=16):
        """([make_join Req], {room ID: [send_join Req]}): distinct joins,
        one new user each, v1 and v2 send_join alternately."""
        mjs, sjs = [], {}
        for room in self.rooms:
            tmpl = self.template(room)
            for k in range(make_joins_per_room):
                mjs.append(self.make_join_req(
                    room, self.remotes[k % 2], f"mj{k}"))
            out = sjs[room.room_id] = []
            for k in range(joins_per_room):
                remote = self.remotes[k % 2]
                joiner = Joiner(remote, f"f{k}")
                t = copy.deepcopy(tmpl)
                t["sender"] = t["state_key"] = joiner.user
                ev = joiner.fill(room.version, t)
                eid = mxj_joiner.event_id(room.version, ev)
                target = send_join_target(room.room_id, eid, v=1 + k % 2)
                data = mxj_joiner.body_bytes(ev)
                out.append(Req("send_join", "PUT", target,
                               joiner.auth("PUT", target, data, EDGE),
                               body=data, event_id=eid,
                               room_id=room.room_id))
        return mjs, sjs


class Load:
    """Threads sending a steady mix (half make_join, half send_join, the
    rooms in turn) at about `rate` requests/s; each send_join is sent once.
    """

    def __init__(self, port, mjs, sjs, rate=120, threads=8):
        self.port = port
        self.mjs = mjs
        self.queues = [list(q) for q in sjs.values()]
        self.rate = rate
        self.threads = threads
        self.results = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._n = 0
        self._ts = []

    def _next(self):
        with self._lock:
            n = self._n
            self._n += 1
            if n % 2 == 0:
                return self.mjs[(n // 2) % len(self.mjs)]
            q = self.queues[(n // 2) % len(self.queues)]
            return q.pop() if q else self.mjs[n % len(self.mjs)]

    def _run(self, i):
        interval = self.threads / self.rate
        t_next = time.monotonic() + i * interval / self.threads
        while not self._stop.is_set():
            delay = t_next - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                if self._stop.is_set():
                    break
            t_next = max(t_next + interval, time.monotonic() - interval)
            req = self._next()
            t0 = time.monotonic()
            status, body, err = send(self.port, req)
            r = Result(req, status, body, err, time.monotonic() - t0)
            with self._lock:
                self.results.append(r)

    def start(self):
        self._ts = [threading.Thread(target=self._run, args=(i,),
                                     daemon=True)
                    for i in range(self.threads)]
        for t in self._ts:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._ts:
            t.join(HANG_S + 5)

    def remaining(self):
        return sum(len(q) for q in self.queues)

    def wait_recovered(self, quiet, timeout):
        """Until the last `quiet` seconds hold a send_join answered 200 and
        no failed answer; at most `timeout` seconds. True when recovered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            with self._lock:
                recent = [x for x in self.results if x.end >= now - quiet]
            if (recent and all(x.status == 200 for x in recent)
                    and any(x.req.kind == "send_join" for x in recent)):
                return True
            time.sleep(0.1)
        return False


# -- faults ------------------------------------------------------------------
# Each fault is (begin, end): begin(edge) at the fault time, end(edge)
# `hold` seconds later (or at once when hold is 0).

def _nothing(edge):
    pass


def _redis_kill(edge):
    edge.kill_redis()


def _redis_restart(edge):
    edge.restart_redis()


# the Sentinel rows: joins count as answered again after this long without a
# failed answer; the load gives up waiting for that after the limit
RECOVERED_S = 1.5
RECOVERY_LIMIT_S = 20.0

ACK_DELAY = 0.3     # redis-kill-ack: the homeserver's 200 comes this late


def _redis_kill_ack(edge):
    """The homeserver answers 200 after ACK_DELAY, so that deliveries are
    in flight; once two are (at most 5 s), Redis is killed: their 2xx
    comes while Redis is down, and the forwarder cannot XACK/XDEL."""
    edge.upstream.on(Answer(200, {}, delay=ACK_DELAY))
    time.sleep(1.0)
    try:
        edge.upstream.wait_for(lambda u: u.in_flight >= 2, 5.0)
    except AssertionError:
        edge.notes.append("redis-kill-ack: fewer than 2 deliveries in "
                          "flight after 5 s; Redis killed anyway")
    edge.kill_redis()


def _redis_restart_fast(edge):
    """Restarted; the homeserver answers at once again."""
    edge.restart_redis()
    edge.upstream.clear_rules()


def _redis_kill_repeat(edge):
    """kill -9, 2 s down, restart, 2 s up, twice; the third kill's restart
    is the fault's end."""
    for _ in range(2):
        edge.kill_redis()
        time.sleep(2.0)
        edge.restart_redis()
        time.sleep(2.0)
    edge.kill_redis()


def _compound(edge):
    """kill -9 of Redis, of one nginx worker and of the forwarder at the
    same instant (the three signals sent back to back, then reaped)."""
    pid = edge.workers()[0]
    edge.killed_workers.append(pid)
    edge.nginx.allowed_log.append(
        f"worker process {pid} exited on signal 9")
    os.kill(edge.redis.proc.pid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    os.kill(edge.forwarder.pid, signal.SIGKILL)
    edge.redis.proc.wait()
    edge.redis_down.append([time.monotonic(), None])
    edge.forwarder.kill9()      # reaps it (the signal again is harmless)


def _compound_end(edge):
    edge.restart_redis()
    edge.start_forwarder()


def _redis_pause(edge):
    edge.redis.pause(3000)


def _redis_sigstop(edge):
    edge.redis.proc.send_signal(signal.SIGSTOP)


def _redis_sigcont(edge):
    edge.redis.proc.send_signal(signal.SIGCONT)


def _sentinel_failover(edge):
    """Until the sentinels name another master (the outage ends)."""
    old = edge.redis.down[-1] if edge.redis.down else edge.redis.master0
    edge.notes_failover = edge.redis.wait_failover(old)
    if edge.redis_down and edge.redis_down[-1][1] is None:
        edge.redis_down[-1][1] = time.monotonic()


def _sentinel_stop(edge):
    m = edge.redis.master_node()
    edge.redis.down.append(m)
    m.proc.send_signal(signal.SIGSTOP)
    edge.redis_down.append([time.monotonic(), None])


def _sentinel_cont(edge):
    """After the failover, the old master is let run again: the sentinels
    make it a replica of the new one (what it alone held is dropped)."""
    _sentinel_failover(edge)
    edge.redis.down[-1].proc.send_signal(signal.SIGCONT)


def _cluster_master(edge):
    """The master of the first room's slot (the one under load most)."""
    return edge.redis.master_of(edge.rooms[0].room_id)


def _cluster_down_rooms(edge, node):
    """A cluster's outage is its master's rooms' only."""
    edge.down_rooms = {r.room_id for r in edge.rooms
                       if edge.redis.master_of(r.room_id) is node}


def _cluster_take_down(edge, how):
    """how (kill9 or stop_node) to the master of the first room's slot;
    the outage begins, for that master's rooms."""
    node = _cluster_master(edge)
    _cluster_down_rooms(edge, node)
    how(node)
    edge.redis_down.append([time.monotonic(), None])


def _cluster_kill(edge):
    _cluster_take_down(edge, edge.redis.kill9)


def _cluster_failover(edge):
    """Until a replica serves the lost master's slots (the outage ends)."""
    edge.notes_failover = edge.redis.wait_failover(edge.redis.down[-1])
    if edge.redis_down and edge.redis_down[-1][1] is None:
        edge.redis_down[-1][1] = time.monotonic()


def _cluster_failover_restart(edge):
    """After the failover the killed node is started again: it comes back
    as a replica of its successor, which has none until then (one replica
    per master), so WAIT 1 refuses that shard's joins until it does."""
    _cluster_failover(edge)
    edge.redis.restart_node(edge.redis.down[-1])


def _cluster_stop(edge):
    _cluster_take_down(edge, edge.redis.stop_node)


def _cluster_cont(edge):
    """After the failover the old master runs again: the cluster makes it
    a replica of the new one (what it alone held is dropped)."""
    _cluster_failover(edge)
    edge.redis.cont_node(edge.redis.down[-1])


def _cluster_move(edge):
    """The first room's slot moved to another master, its keys a few at a
    time (MIGRATE, 50 ms apart: the ASK window) under the load."""
    slot = edge.redis.keyslot(edge.rooms[0].room_id)
    src = _cluster_master(edge)
    to = [m for m in edge.redis.masters() if m is not src][0]
    edge.notes_moved = edge.redis.move_slot(slot, to, pause=0.05, batch=5)


def _cluster_reshard(edge):
    """Every slot of the first room's master moved to another master by
    redis-cli --cluster reshard (slot by slot, as operators do it) under
    the load; notes the slots moved."""
    src = _cluster_master(edge)
    to = [m for m in edge.redis.masters() if m is not src][0]
    n = len(edge.redis.view()[src.id]["slots"])
    edge.redis.reshard(n, src, to)
    if _cluster_master(edge) is not to:
        edge.notes.append("cluster-reshard: the room did not move")
    edge.notes_moved_slots = n


def _reload(edge):
    edge.reconfigure()


def _worker_kill(edge):
    edge.kill_worker()


def _nginx_quit(edge):
    edge.nginx.stop()


def _nginx_start(edge):
    edge.nginx.start()


def _fwd_kill(edge):
    edge.forwarder.kill9()


def _fwd_start(edge):
    edge.start_forwarder()


def _up_500(edge):
    edge.upstream.on(Answer(500, {"errcode": "M_UNKNOWN",
                                  "error": "failing on purpose"}))


def _up_hang(edge):
    edge.upstream.on(Hang(limit=60))


def _up_clear(edge):
    edge.upstream.clear_rules()
    edge.upstream.release()


def _up_down(edge):
    edge.upstream.down()


def _up_up(edge):
    edge.upstream.up()


# name: (begin, end, hold seconds, connection errors allowed, what)
FAULTS = {
    "none": (_nothing, _nothing, 0, False, "no fault (baseline)"),
    "redis-kill": (_redis_kill, _redis_restart, 2, False,
                   "kill -9 of redis-server, restarted 2 s later "
                   "(appendfsync always)"),
    "redis-pause": (_redis_pause, _nothing, 0, False,
                    "CLIENT PAUSE 3000 ALL"),
    "redis-stop": (_redis_sigstop, _redis_sigcont, 3, False,
                   "SIGSTOP of redis-server for 3 s (TCP up, nothing "
                   "read)"),
    "reload": (_reload, _nothing, 0, False,
               "nginx -s reload with a changed config"),
    "quit-start": (_nginx_quit, _nginx_start, 1, True,
                   "nginx -s quit, started again 1 s later"),
    "worker-kill": (_worker_kill, _nothing, 0, True,
                    "kill -9 of one nginx worker"),
    "forwarder-kill": (_fwd_kill, _fwd_start, 2, False,
                       "kill -9 of the forwarder, restarted 2 s later"),
    "upstream-500": (_up_500, _up_clear, 5, False,
                     "homeserver answers 500 for 5 s"),
    "upstream-hang": (_up_hang, _up_clear, 5, False,
                      "homeserver hangs for 5 s (forward --timeout 2 s)"),
    "upstream-refuse": (_up_down, _up_up, 5, False,
                        "homeserver refuses connections for 5 s"),
    "redis-kill-ack": (_redis_kill_ack, _redis_restart_fast, 2, False,
                       "kill -9 of redis-server while deliveries are in "
                       "flight (homeserver answers 200 after 300 ms), "
                       "restarted 2 s later"),
    "redis-kill-repeat": (_redis_kill_repeat, _redis_restart, 2, False,
                          "kill -9 of redis-server 3 times, each restarted "
                          "2 s later, 2 s apart"),
    "compound": (_compound, _compound_end, 2, True,
                 "kill -9 of redis-server, one nginx worker and the "
                 "forwarder at once; Redis and the forwarder restarted "
                 "2 s later"),
    "sentinel-kill": (_redis_kill, _sentinel_failover, 0, False,
                      "Sentinel (1 master, 2 replicas, 3 sentinels), "
                      "matrix_redis_wait 1 100ms: kill -9 of the master, "
                      "not restarted"),
    "sentinel-stop": (_sentinel_stop, _sentinel_cont, 3, False,
                      "Sentinel, matrix_redis_wait 1 100ms: SIGSTOP of the "
                      "master until the failover, then SIGCONT (it comes "
                      "back as a replica)"),
    "cluster-kill": (_cluster_kill, _cluster_failover_restart, 0, False,
                     "Redis Cluster (3 masters, 3 replicas), "
                     "matrix_redis_wait 1 100ms: kill -9 of the master of "
                     "the busiest room's slot, restarted after the failover "
                     "(it comes back as a replica)"),
    "cluster-stop": (_cluster_stop, _cluster_cont, 3, False,
                     "Redis Cluster, matrix_redis_wait 1 100ms: SIGSTOP of "
                     "that master until the failover, then SIGCONT (it "
                     "comes back as a replica)"),
    "cluster-move": (_cluster_move, _nothing, 0, False,
                     "Redis Cluster: the busiest room's slot moved to "
                     "another master under the load (MIGRATE 5 keys at a "
                     "time, 50 ms apart)"),
    "cluster-reshard": (_cluster_reshard, _nothing, 0, False,
                        "Redis Cluster: every slot of the busiest room's "
                        "master moved to another by redis-cli --cluster "
                        "reshard under the load"),
    "big-room": (_redis_kill, _redis_restart, 2, False,
                 "one room of {members} members (send_join answers of "
                 "{answer_mb:.0f} MB), kill -9 of redis-server restarted "
                 "2 s later; {rate} requests/s"),
}

# Options of a row: "rate", the most requests/s it is run at; "members",
# the size of its first room (ROW_OPTIONS's or run_row's members=).
ROW_OPTIONS = {
    # 20,000 members: each send_join answer of that room is about 14 MB;
    # 60/s is half the default, for a 2-CPU machine shared with other work
    # (120/s was carried too, max latency 43 ms, on 2026-11-27)
    "big-room": {"rate": 60, "members": 20000},
    # Sentinel rows (t/fault/mxj_sentinel.py): WAIT 1 before each 200
    "sentinel-kill": {"sentinel": True, "wait": "1 100ms"},
    "sentinel-stop": {"sentinel": True, "wait": "1 100ms"},
    # Cluster rows (t/fault/mxj_cluster.py): WAIT 1 on the room's master
    "cluster-kill": {"cluster": True, "wait": "1 100ms"},
    "cluster-stop": {"cluster": True, "wait": "1 100ms"},
    "cluster-move": {"cluster": True},
    "cluster-reshard": {"cluster": True},
}

# Rows in which a worker is killed on purpose (one must have been).
WORKER_KILLS = ("worker-kill", "compound")


def run_row(fault, seconds=20.0, fault_at=None, rate=120, threads=8,
            seed=0, members=None):
    """One row: returns a dict (fault, requests, ok200, lost, redelivered,
    bad, hangs, errors, max_latency, problems [strings])."""
    begin, end, hold, conn_ok, what = FAULTS[fault]
    opts = ROW_OPTIONS.get(fault, {})
    rate = min(rate, opts.get("rate", rate))
    members = members or opts.get("members")
    fault_at = seconds / 3 if fault_at is None else fault_at
    # a failover (Sentinel's or a cluster's) takes as long as it takes
    sentinel = opts.get("sentinel", False) or opts.get("cluster", False)
    edge = Edge(seed=seed, members=members,
                sentinel=opts.get("sentinel", False),
                cluster=opts.get("cluster", False),
                http_extra=f"matrix_redis_wait {opts['wait']};"
                if opts.get("wait") else "")
    problems = []
    row = {"fault": fault, "what": what, "rate": rate, "seconds": seconds}
    if members:
        row["members"] = members
    try:
        edge.start()
        # (the Sentinel rows may run 10 s longer: see below)
        per_room = int(rate * (seconds + (RECOVERY_LIMIT_S + 2 if sentinel
                                              else 0)) / 2
                       / len(edge.rooms) * 1.3) + 20
        mjs, sjs = edge.presign(per_room)
        load = Load(edge.nginx.port, mjs, sjs, rate=rate,
                    threads=threads).start()
        t0 = time.monotonic()
        time.sleep(fault_at)
        t_fault = time.monotonic()
        begin(edge)
        if hold:
            time.sleep(hold)
        end(edge)
        # a failover takes as long as it takes, and so does the edge's
        # return to the new master (the sentinels' reconfiguration of the
        # remaining replica, which WAIT needs): the Sentinel rows keep the
        # load until joins are answered again, then stop
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        if sentinel:
            load.wait_recovered(quiet=RECOVERED_S,
                                timeout=RECOVERY_LIMIT_S)
        load.stop()
        if load.remaining() == 0:
            problems.append("ran out of pre-signed joins (raise the count)")

        # undo every fault, then deliver what is left
        _up_clear(edge)
        edge.upstream.up()
        if edge.forwarder is not None and not edge.forwarder.running():
            problems.append(f"the forwarder exited: "
                            f"{edge.forwarder.excerpt(1500)}")
        fwd_log = edge.forwarder.log() if edge.forwarder else ""
        edge.stop_forwarder()
        problems.extend(edge.notes)
        rc, log = edge.forward_once()
        if rc != 0:
            problems.append(f"forward --once exited {rc}: {log}")
        r = edge.redis.client()
        dead = sum(len(fw.dead_entries(r, room.room_id))
                   for room in edge.rooms)
        if dead:
            problems.append(f"{dead} dead letters")
        outbox = {}
        for room in edge.rooms:
            for _, f in fw.outbox_entries(r, room.room_id):
                outbox[f[b"event_id"].decode()] = f

        # judge the answers
        results = load.results
        ok = [x for x in results if x.status == 200]
        # until joins are answered again: the last failed answer after
        # the fault (0 when none failed), and 200s after it
        failed = [x.end for x in results
                  if x.status != 200 and x.end >= t_fault]
        answered_again = max(failed, default=t_fault) - t_fault
        if sentinel and failed and not any(x.end > max(failed) for x in ok
                              if x.req.kind == "send_join"):
            problems.append("no send_join answered 200 after the last "
                            "failed answer: the edge did not recover")
        sj_ok = [x for x in ok if x.req.kind == "send_join"]
        bad, hangs, errors = [], 0, {}
        for x in results:
            if x.status == 200:
                continue
            key = x.error or str(x.status)
            errors[key] = errors.get(key, 0) + 1
            if x.error == "hang":
                hangs += 1
                bad.append(x)
            elif x.error in ("reset", "refused") and conn_ok:
                pass
            elif x.error is not None or not matrix_5xx(x.status, x.body):
                bad.append(x)
        for x in bad[:5]:
            problems.append(f"bad answer to {x.req.kind} {x.req.target}: "
                            f"{x.status} {x.error} {x.body[:200]!r}")

        # nothing acknowledged is lost: delivered exactly as sent, or kept
        delivered = {}
        for s in edge.upstream.requests():
            if s.ok:
                delivered.setdefault(s.event_id, []).append(s)
        redelivered = sum(1 for v in delivered.values() if len(v) > 1)
        # answered 2xx while Redis was down: the acknowledgement cannot
        # have happened, so each must reach the homeserver again (or be
        # left in the outbox)
        in_outage = {s.event_id for v in delivered.values() for s in v
                     if edge.in_outage(s.answered_mono)
                     and (edge.down_rooms is None
                          or s.room_id in edge.down_rooms)}
        # ... unless its acknowledgement is on record after the answer:
        # the outage window is conservative (it ends when the test saw
        # the failover complete, the forwarder may see the new master
        # first) and the record is written with the XACK, on the master
        acked = {}
        for room in edge.rooms:
            acked.update(fw.delivered_record(r, room.room_id))
        not_again = [e for e in in_outage
                     if len(delivered[e]) < 2 and e not in outbox
                     and not (e in acked and acked[e] >=
                              delivered[e][0].answered_ms)]
        if not_again:
            problems.append(f"{len(not_again)} events answered 2xx while "
                            f"Redis was down were neither delivered again, "
                            f"nor acknowledged after the answer, nor left "
                            f"in the outbox: {not_again[:3]}")
        if fault == "redis-kill-ack" and not in_outage:
            problems.append("no delivery was answered 2xx while Redis was "
                            "down: the row did not test a lost "
                            "acknowledgement")
        xbad = [s for s in edge.upstream.requests()
                if s.xmatrix not in (None, "ok")]
        if xbad:
            problems.append(f"{len(xbad)} deliveries failed X-Matrix: "
                            f"{xbad[0].xmatrix}")
        lost = []
        for x in sj_ok:
            q = x.req
            exact = any(s.method == "PUT" and s.target == q.target
                        and s.body == q.body
                        and s.header("Authorization") == [q.auth]
                        for s in delivered.get(q.event_id, []))
            kept = q.event_id in outbox and \
                outbox[q.event_id][b"body"] == q.body
            if not (exact or kept):
                lost.append(q)
        for q in lost[:5]:
            problems.append(f"lost: {q.event_id} ({q.target}) "
                            f"delivered={len(delivered.get(q.event_id, []))}"
                            f" in_outbox={q.event_id in outbox}")

        edge.stop()
        for line in edge.nginx.bad_log_lines()[:5]:
            problems.append(f"nginx log: {line}")
        if fault in WORKER_KILLS and not edge.killed_workers:
            problems.append("no worker was killed")
        sizes = [x.size for x in sj_ok
                 if x.req.room_id == edge.rooms[0].room_id]
        if "{" in row["what"]:
            row["what"] = row["what"].format(
                members=f"{members:,}" if members else 6, rate=rate,
                answer_mb=max(sizes, default=0) / 1e6)
        row.update(
            requests=len(results),
            make_join=sum(1 for x in results if x.req.kind == "make_join"),
            send_join=sum(1 for x in results if x.req.kind == "send_join"),
            ok200=len(sj_ok),
            mj200=len(ok) - len(sj_ok),
            lost=len(lost),
            redelivered=redelivered,
            acks_in_outage=len(in_outage),
            redis_reconnects=fwd_log.count("connected again"),
            max_answer_bytes=max((x.size for x in sj_ok), default=0),
            big_answers=sum(1 for x in sj_ok if x.size >= 1000000),
            left_in_outbox=len(outbox),
            delivered=len(delivered),
            bad=len(bad), hangs=hangs, errors=errors,
            max_latency=max((x.latency for x in results), default=0.0),
            answered_again_s=answered_again,
            failover_s=getattr(edge, "notes_failover", None),
            moved_keys=getattr(edge, "notes_moved", None),
            moved_slots=getattr(edge, "notes_moved_slots", None),
            # a failover the sentinels were asked for (late on their own)
            failover_nudged_s=(edge.redis.nudged[0]
                               if getattr(edge.redis, "nudged", None)
                               else None),
            problems=problems)
        return row
    except Exception:
        try:
            edge.stop()
        except Exception:
            pass
        raise
    finally:
        if not os.environ.get("MXJ_FAULT_KEEP"):
            edge.cleanup()


def table(rows):
    out = ["| fault | requests | send_join 200 | lost | redelivered "
           "| make_join 200 | other answers | max latency | verdict |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) \
            or "—"
        out.append(f"| {r['what']} | {r['requests']} | {r['ok200']} | "
                   f"{r['lost']} | {r.get('redelivered', 0)} | "
                   f"{r['mj200']} | {errs} | "
                   f"{r['max_latency'] * 1000:.0f} ms | "
                   f"{'ok' if not r['problems'] else 'FAILED'} |")
    return "\n".join(out)
