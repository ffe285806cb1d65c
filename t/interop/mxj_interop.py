"""The interop world (docs/interop.md), made once per pytest session:

    A      Synapse behind the edge: server name localhost:<edge port>, plain
           HTTP on 127.0.0.1 (operations.md's homeserver.yaml block)
    edge   Debian's nginx with the module, operations.md's section 3
           configuration (TLS with a self-signed certificate, A's own
           signing key file, the fallback proxying to A)
    redis  a private redis-server (AOF)
    sync   `matrix-join-ctl sync` against A, its Application Service
           registration loaded into A (A restarted once to read it)
    fwd    `matrix-join-ctl forward` replaying into A
    B, C   Synapses with their own TLS federation listeners, joining A's
           rooms through the edge

Only the test's own values replace the document's (ports, paths, names);
everything else is the document's text.
"""

import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "t" / "lib"))
sys.path.insert(0, str(TOP / "t" / "integration"))

import requests  # noqa: E402

from mxj_nginx import CTL, Nginx  # noqa: E402
from mxj_redis import RedisServer  # noqa: E402
from mxj_remote import RemoteServer  # noqa: E402
from mxj_synapse import (Synapse, doc_exec_start, doc_nginx_single,  # noqa
                         free_port, poll, q, self_signed)
from unpaddedbase64 import decode_base64  # noqa: E402

# the rooms A makes before sync starts: name -> createRoom arguments and
# whether sync caches it
VERSIONS = [str(v) for v in range(1, 11)]
UNSTABLE_VERSION = "org.matrix.msc2176"

# users of B and C, one or more per scenario (a server already in a room
# joins further users itself, without the edge)
B_USERS = ["bob", "bert", "uma", "rita", "rosa", "kim", "bart", "dora",
           "ursula", "fay", "stella", "sam", "mia"]
C_USERS = ["carol"]


def rooms_plan():
    plan = [(f"v{v}", dict(version=v), True) for v in VERSIONS]
    plan += [
        ("main", dict(), True),
        ("uncached", dict(), False),
        ("allowed", dict(), True),
        ("allowed-uncached", dict(), False),
        ("knock", dict(join_rule="knock"), True),
        ("ban", dict(), True),
        ("extremities", dict(), True),
        ("fork", dict(), True),
        ("marker", dict(), True),
        ("rejoin", dict(), True),
        ("second", dict(), True),
        ("down", dict(), True),
        ("reads", dict(), True),
        ("loaded", dict(), True),
        ("counted", dict(), True),
        # a version Synapse offers and the edge does not: sync refuses it
        ("unstable", dict(version=UNSTABLE_VERSION), True),
    ]
    return plan


class Proc:
    """A matrix-join-ctl process with its log file."""

    def __init__(self, label, argv, d):
        self.label = label
        self.argv = argv
        self.log_path = Path(d) / f"{label}.log"
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.logf,
                                     stderr=subprocess.STDOUT)

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


ACCESS = re.compile(r'origin=(\S+) upstream=(.+?) "(\S+) (\S+) [^"]*" '
                    r'(\d+) ')


class World:
    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mxj-interop-"))
        self.tmp.chmod(0o755)
        self.timings = []
        self.t0 = time.monotonic()
        self.procs = []
        self.synapses = []
        self.edge = None
        self.redis = None

    def mark(self, what):
        self.timings.append((what, time.monotonic() - self.t0))

    # -- setup -----------------------------------------------------------
    def start(self):
        self.edge = Nginx(workers=2)
        self.name = f"localhost:{self.edge.port}"
        self.a = Synapse("A", self.tmp / "a", server_name=self.name,
                         behind_edge=True)
        self.b = Synapse("B", self.tmp / "b")
        self.c = Synapse("C", self.tmp / "c")
        self.synapses = [self.a, self.b, self.c]
        gens = [s.generate_keys() for s in self.synapses]
        self.redis = RedisServer(aof=True).start()
        self.edge_cert, self.edge_key = self_signed(self.tmp, "localhost")
        for s, g in zip(self.synapses, gens):
            _, err = g.communicate(timeout=120)
            assert g.returncode == 0, f"{s.label} --generate-keys: {err}"
        self.mark("signing keys (Synapse --generate-keys, in parallel)")
        for s in self.synapses:
            s.start()
        self.start_edge()
        for s in self.synapses:
            s.wait_up()
        self.mark("Synapses A, B, C up (in parallel)")
        self.alice = self.a.register("alice", admin=True)
        self.users = {}
        for hs, names in ((self.b, B_USERS), (self.c, C_USERS)):
            for n in names:
                self.users[n] = hs.register(n)
        self.bob, self.bert = self.users["bob"], self.users["bert"]
        self.carol = self.users["carol"]
        self.rooms = {}
        cached = []
        plan = rooms_plan()
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda p: self.alice.create_room(
                alias=p[0], **p[1]), plan))
        for (name, kw, in_cache), room_id in zip(plan, ids):
            self.rooms[name] = room_id
            if in_cache:
                cached.append(name)
        # restricted rooms, each allowing members of one public room
        self.rooms["restricted"] = self.alice.create_room(
            alias="restricted", join_rule="restricted",
            allow=[self.rooms["allowed"]])
        self.rooms["restricted-uncached"] = self.alice.create_room(
            alias="restricted-uncached", join_rule="restricted",
            allow=[self.rooms["allowed-uncached"]])
        cached += ["restricted", "restricted-uncached"]
        self.cached = cached            # names: sync is given their aliases
        self.mark(f"users and {len(self.rooms)} rooms made on A")
        self.start_sync()
        self.mark("sync's first pass of every cached room")
        self.a.stop()
        self.a.app_service_files = [self.registration]
        a_log_mark = len(self.a.log_text())
        self.a.start().wait_up()
        self.mark("A restarted with sync's registration")
        self.fwd = self.ctl("forward", self.doc_args("forward"))
        self.mark("forward started")
        self.settle_pushes(a_log_mark)
        self.mark("A's first pushes handled")

    def settle_pushes(self, a_log_mark):
        """A, reading the registration for the first time, pushes the
        managed rooms' history (create, power levels, join rules: each
        marks its room stale, and sync passes it again). The scenarios
        start once that is over: a ban in the room "marker", made now,
        is pushed after the history (A pushes in stream order); once sync
        has it, or A's log shows that its pushes fail, and no cached room
        is stale, the world is quiet."""
        room = self.rooms["marker"]
        self.alice.ban(room, f"@marker:{self.b.server_name}")
        mark = re.compile(r"appservice: txn=\S+ room=" + re.escape(room)
                          + r" m\.room\.member")

        def pushed():
            if mark.search(self.sync.log_text()):
                return "delivered"
            if re.search(r"push_bulk to \S+ received code=",
                         self.a.log_text()[a_log_mark:]):
                return "refused"
            return None

        self.push_state = poll("A's push of the marker ban", pushed,
                               timeout=120)
        if self.push_state != "delivered":
            return
        r = self.redis.client()
        poll("every cached room fresh again after A's first pushes",
             lambda: not any(r.hexists(f"mxj:{{{self.rooms[n]}}}:meta",
                                       "stale") for n in self.cached),
             timeout=120)

    def start_edge(self):
        conf = doc_nginx_single()
        subs = [
            ("server 127.0.0.1:8008;",
             f"server 127.0.0.1:{self.a.http_port};"),
            ("matrix_server_name   example.org;",
             f"matrix_server_name   {self.name};"),
            ("/etc/matrix-synapse/homeserver.signing.key",
             str(self.a.key_path)),
            ("127.0.0.1:6379", self.redis.address),
            ("server_name matrix.example.org;", "server_name localhost;"),
            ("/etc/letsencrypt/live/matrix.example.org/fullchain.pem",
             str(self.edge_cert)),
            ("/etc/letsencrypt/live/matrix.example.org/privkey.pem",
             str(self.edge_key)),
            ("/var/log/nginx/matrix.log",
             str(self.tmp / "edge-access.log")),
        ]
        for old, new in subs:
            assert old in conf, f"operations.md section 3 lost {old!r}"
            conf = conf.replace(old, new)
        listens = re.findall(r"\n\s*listen [^;]*;", conf)
        assert len(listens) == 2, listens
        conf = conf.replace(listens[0],
                            f"\n    listen 127.0.0.1:{self.edge.port} ssl;")
        conf = conf.replace(listens[1], "")
        assert "/etc/" not in conf and "example.org" not in conf, conf
        self.edge.write_conf(conf)
        self.edge.start()
        self.access_log = self.tmp / "edge-access.log"

    def doc_args(self, unit):
        """operations.md section 9's command line of `unit`, with the
        test's addresses, paths and rooms."""
        words = doc_exec_start(unit)
        out = []
        for w in words:
            if w.startswith(("#", "!")):
                continue                  # the document's example rooms
            w = w.replace("/usr/local/bin/matrix-join-ctl", str(CTL))
            w = w.replace("127.0.0.1:6379", self.redis.address)
            w = w.replace("127.0.0.1:8008", f"127.0.0.1:{self.a.http_port}")
            w = w.replace("/etc/matrix-synapse/homeserver.signing.key",
                          str(self.a.key_path))
            w = w.replace("/var/lib/matrix-join/registration.yaml",
                          str(self.tmp / "registration.yaml"))
            w = w.replace("127.0.0.1:9010", f"127.0.0.1:{self.as_port}")
            w = w.replace("%H", "interop")
            if w == "example.org":
                w = self.name
            assert "example.org" not in w and "/etc/" not in w, w
            out.append(w)
        return out[1:]

    def ctl(self, label, args):
        p = Proc(label, [str(CTL)] + args, self.tmp)
        self.procs.append(p)
        return p

    def start_sync(self):
        self.as_port = free_port()
        self.registration = self.tmp / "registration.yaml"
        args = self.doc_args("sync") + ["--user", self.alice.user_id]
        args += [f"#{name}:{self.name}" for name in self.cached]
        self.sync = self.ctl("sync", args)
        for name in self.cached:
            room = self.rooms[name]
            outcome = "failed" if name == "unstable" else "(synced|unchanged)"
            poll(f"sync's first pass of {name} {room}",
                 lambda: self.sync.proc.poll() is None and re.search(
                     r"room=" + re.escape(room) + " " + outcome,
                     self.sync.log_text()) or self.sync_died(),
                 timeout=120)
        assert self.registration.exists()

    def sync_died(self):
        if self.sync.proc.poll() is not None:
            raise AssertionError("sync exited:\n" + self.sync.log_text())
        return False

    # -- evidence --------------------------------------------------------
    def access(self):
        """[(method, path, status, answered_by_module)] of the edge."""
        out = []
        for line in self.access_log.read_text().splitlines():
            m = ACCESS.search(line)
            if m:
                out.append((m.group(3), m.group(4), int(m.group(5)),
                            m.group(2) == "-", m.group(1)))
        return out

    def access_for(self, kind, room_id=None, since=0):
        """Requests of one kind (make_join, send_join, directory,
        make_knock, ...) for room_id (quoted in the path)."""
        rows = self.access()[since:]
        out = []
        for method, path, status, module, origin in rows:
            if kind == "directory":
                if "/query/directory" not in path:
                    continue
            elif f"/{kind}/" not in path:
                continue
            if room_id and q(room_id) not in path and room_id not in path:
                continue
            out.append((method, path, status, module, origin))
        return out

    def remote(self, synapse):
        """A signer of X-Matrix requests as that Synapse (its own key
        file's seed)."""
        version, seed = synapse.key_line()
        return RemoteServer(synapse.server_name, key_version=version,
                            seed=decode_base64(seed))

    def federation_get(self, as_synapse, base, path):
        """A GET signed as as_synapse to base (the edge, or A directly)."""
        r = self.remote(as_synapse)
        hdr = r.auth_header("GET", path, self.name)
        return requests.get(base + path, headers={"Authorization": hdr},
                            verify=False, timeout=60)

    def a_extremities(self, room_id):
        """A's forward extremities of room_id, as A's own make_join (asked
        directly, signed as B, for a user not in the room) names them."""
        vers = "&".join(f"ver={v}" for v in VERSIONS)
        path = (f"/_matrix/federation/v1/make_join/{q(room_id)}/"
                f"{q('@nobody:' + self.b.server_name)}?{vers}")
        r = self.federation_get(self.b, self.a.url, path)
        assert r.status_code == 200, r.text
        refs = r.json()["event"]["prev_events"]
        return [x[0] if isinstance(x, list) else x for x in refs]

    @property
    def edge_url(self):
        return f"https://127.0.0.1:{self.edge.port}"

    # -- teardown --------------------------------------------------------
    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        for s in self.synapses:
            s.stop()
        if self.edge:
            self.edge.stop()
        if self.redis:
            self.redis.cleanup()

    def cleanup(self):
        if self.edge:
            self.edge.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- what the scenarios check -----------------------------------------------

HANDSHAKE = ("query/directory", "make_join", "send_join")


def handshake_rows(world, since):
    """{kind: [(status, answered by the module, path)]} of the join
    handshake's requests at the edge since access row `since`."""
    kinds = {}
    for method, path, status, module, origin in world.access()[since:]:
        for kind in HANDSHAKE + ("make_knock", "send_knock", "make_leave",
                                 "send_leave"):
            if f"/{kind}" in path:
                kinds.setdefault(kind, []).append((status, module, path))
    return kinds


def join_through_edge(world, user, room_name, expect=200):
    """user (of B or C) joins #room_name:A through the edge; returns
    (room_id, handshake_rows)."""
    since = len(world.access())
    alias = f"#{room_name}:{world.name}"
    status, body = user.join(alias)
    rows = handshake_rows(world, since)
    assert status == expect, \
        f"{user.user_id} join {alias}: {status} {body}; at the edge: {rows}"
    room_id = world.rooms[room_name]
    if expect == 200:
        assert body["room_id"] == room_id
    return room_id, rows


def assert_module_answered(rows, kinds=HANDSHAKE):
    for kind in kinds:
        assert rows.get(kind), f"no {kind} at the edge: {rows}"
        for status, module, path in rows[kind]:
            assert status == 200 and module, \
                f"{kind} {path}: {status}, " \
                f"{'answered by the module' if module else 'proxied'}"


def assert_handed_over(rows, kinds=("make_join", "send_join")):
    for kind in kinds:
        assert rows.get(kind), f"no {kind} at the edge: {rows}"
        for status, module, path in rows[kind]:
            assert status == 200 and not module, \
                f"{kind} {path}: {status}, " \
                f"{'answered by the module' if module else 'proxied'}"


def replay_lands(world, room_id, user_id, timeout=60):
    """The user is joined on A (A's /members)."""
    return poll(f"{user_id} joined on A", lambda: world.alice.members(
        room_id).get(user_id) == "join", timeout=timeout)


__all__ = ["World", "poll", "q", "VERSIONS", "UNSTABLE_VERSION"]
