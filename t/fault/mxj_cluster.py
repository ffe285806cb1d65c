"""A Redis Cluster on loopback for the tests: `masters` masters with
`replicas` replicas each (redis-server --cluster-enabled yes, appendonly
yes + appendfsync always, as the schema assumes for the outbox), on ports
picked here, each node in its own temporary folder, made into a cluster
by `redis-cli --cluster create`. Modelled on mxj_sentinel.SentinelSet.

`address` is the `cluster:host:port host:port ...` seed list that
matrix_redis and --redis take (the initial masters), `client()` a
redis-py RedisCluster, `keyslot()` the slot as the server computes it
(the independent judge of our CRC16), `master_of()` the node that owns a
key's slot now, `kill9()` / `wait_failover()` a master's death and its
replica's promotion, `stop_node()` / `cont_node()` SIGSTOP / SIGCONT,
`move_slot()` a live slot migration by the documented manual steps (with
`pause` between MIGRATE batches, to catch the slot mid-migration: ASK
redirections), `reshard()` the same by redis-cli. With password, every
node requires it and replicates with it.

Every wait is bounded; everything binds 127.0.0.1 only. Each node's
cluster bus gets a port of its own (--cluster-port) rather than
port + 10000, which may be out of range or taken."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis as redis_py
from redis.cluster import ClusterNode, RedisCluster

import mxj_sentinel
from mxj_nginx import free_port

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1000  # cluster-node-timeout
NSLOTS = 16384

_ERR = (redis_py.exceptions.RedisError, OSError)


class Server(mxj_sentinel.Server):
    """One cluster node: mxj_sentinel's data node (its folder, port,
    client, stop) with cluster mode, a bus port and its node id."""

    def __init__(self, root, name, password=None):
        super().__init__(root, name, password=password)
        self.cport = free_port()
        while self.cport == self.port:
            self.cport = free_port()
        self.id = None          # the cluster node id, once started
        self.stopped = False    # SIGSTOPped by stop_node

    def __repr__(self):
        return f"<{self.name} 127.0.0.1:{self.port} {self.id or ''}>"

    def args(self):
        return super().args() + [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.dir / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-port", str(self.cport)]

    def start(self):
        super().start()
        # a restarted node answers LOADING while it reads its AOF
        deadline = time.monotonic() + 30
        while True:
            try:
                self.id = self.client(decode_responses=True) \
                    .execute_command("CLUSTER", "MYID")
                return self
            except redis_py.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def live(self):
        """Alive and not stopped: it will answer."""
        return self.alive() and not self.stopped

    def stop(self):
        self.stopped = False    # SIGCONT first, then SIGTERM
        super().stop()


def _parse_nodes(text):
    """CLUSTER NODES → {id: {port, flags, master, slots}}; slots a set of
    the slots the line says the node serves (importing/migrating marks
    left out)."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 8:
            continue
        slots = set()
        for s in f[8:]:
            if s.startswith("["):
                continue
            a, _, b = s.partition("-")
            slots.update(range(int(a), int(b or a) + 1))
        addr = f[1].split("@")[0]
        out[f[0]] = {"port": int(addr.rsplit(":", 1)[1] or 0),
                     "flags": set(f[2].split(",")),
                     "master": None if f[3] == "-" else f[3],
                     "slots": slots}
    return out


class ClusterSet:
    def __init__(self, masters=3, replicas=1, password=None):
        self.root = Path(tempfile.mkdtemp(prefix="mxj-cluster-"))
        self.nmasters = masters
        self.nreplicas = replicas
        self.password = password
        self.nodes = [Server(self.root, f"node{i}", password=password)
                      for i in range(masters * (1 + replicas))]
        self.seeds = self.nodes[:masters]   # the initial masters
        self.down = []      # what was killed or stopped, for the notes
        self.nudged = []    # when wait_failover asked for a failover
        self.times = {}     # measured: "start", "failover" (seconds)
        self._cleaned = False

    # -- the set as a whole ------------------------------------------------

    @property
    def address(self):
        """`cluster:127.0.0.1:P1 127.0.0.1:P2 ...`: the initial masters."""
        return "cluster:" + " ".join(f"127.0.0.1:{s.port}"
                                     for s in self.seeds)

    def _cli(self, *args, timeout=120):
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if self.password:
            env["REDISCLI_AUTH"] = self.password    # not -a: no warning
        r = subprocess.run([REDIS_CLI, *args], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0 or "[ERR]" in r.stdout:
            raise RuntimeError(f"redis-cli {' '.join(args)} failed "
                               f"({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def start(self, timeout=30.0):
        t0 = time.monotonic()
        for n in self.nodes:
            n.start()
        self._cli("--cluster", "create",
                  *(f"127.0.0.1:{n.port}" for n in self.nodes),
                  "--cluster-replicas", str(self.nreplicas),
                  "--cluster-yes", timeout=timeout + 30)
        self.wait_ok(timeout=timeout)
        roles = [n.client().execute_command("ROLE")[0] for n in self.seeds]
        if any(r != b"master" for r in roles):
            raise RuntimeError(f"redis-cli made other masters: {roles}")
        self.times["start"] = time.monotonic() - t0
        return self

    def live_nodes(self):
        return [n for n in self.nodes if n.live()]

    def by_id(self, node_id):
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise RuntimeError(f"unknown cluster node id {node_id}")

    def by_port(self, port):
        for n in self.nodes:
            if n.port == port:
                return n
        raise RuntimeError(f"unknown cluster port {port}")

    def _any(self, fn):
        """fn(node) on the first live node that answers."""
        err = None
        for n in self.live_nodes():
            try:
                return fn(n)
            except _ERR as e:
                err = e
        raise RuntimeError(f"no cluster node answered: {err}")

    def view(self, node=None):
        """CLUSTER NODES of `node` (default: the first live node), parsed:
        {id: {port, flags, master, slots}}."""
        def get(n):
            return _parse_nodes(n.client(decode_responses=True,
                                         socket_timeout=2)
                                .execute_command("CLUSTER", "NODES"))
        return get(node) if node else self._any(get)

    def info(self, node):
        """CLUSTER INFO of one node as a dict of strings."""
        text = node.client(decode_responses=True, socket_timeout=2) \
            .execute_command("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines()
                    if ":" in line)

    def _slot_owners(self, node):
        """{slot: port} from CLUSTER SLOTS of `node`."""
        owners = {}
        for r in node.client(socket_timeout=2).execute_command(
                "CLUSTER", "SLOTS"):
            for s in range(int(r[0]), int(r[1]) + 1):
                owners[s] = int(r[2][1])
        return owners

    def _ready(self):
        """'' when every live node says cluster_state:ok, knows every
        node, has all slots served and agrees on who serves them, and
        every live replica is in sync; else what is missing."""
        live = self.live_nodes()
        maps = []
        for n in live:
            try:
                i = self.info(n)
                if i.get("cluster_state") != "ok":
                    return f"{n}: cluster_state {i.get('cluster_state')}"
                if int(i.get("cluster_known_nodes", 0)) < len(self.nodes):
                    return f"{n}: knows {i.get('cluster_known_nodes')}"
                if int(i.get("cluster_slots_assigned", 0)) != NSLOTS:
                    return f"{n}: {i.get('cluster_slots_assigned')} slots"
                repl = n.client(socket_timeout=2).info("replication")
                if repl.get("role") == "slave" and (
                        repl.get("master_link_status") != "up"
                        or repl.get("master_sync_in_progress")):
                    return f"{n}: replica not in sync"
                maps.append(self._slot_owners(n))
            except _ERR as e:
                return f"{n}: {e}"
        if any(m != maps[0] for m in maps[1:]):
            return "the nodes disagree on the slot map"
        return ""

    def wait_ok(self, timeout=30.0):
        """Until _ready(); RuntimeError with what was missing on timeout.
        Returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            why = self._ready()
            if not why:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"cluster not ready within "
                                   f"{timeout:.0f} s: {why}")
            time.sleep(0.05)

    # -- clients -----------------------------------------------------------

    def client(self, **kw):
        """A redis.cluster.RedisCluster seeded with the first live master
        (kw passed through; socket_timeout defaults to 5)."""
        m = self.masters()[0]
        kw.setdefault("password", self.password)
        kw.setdefault("socket_timeout", 5)
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", m.port)],
                            **kw)

    def node_client(self, node, **kw):
        """A plain redis.Redis to one node."""
        return node.client(**kw)

    # -- slots and roles ---------------------------------------------------

    def keyslot(self, key):
        """The slot of `key` as the server computes it (CLUSTER KEYSLOT)."""
        return int(self._any(lambda n: n.client(socket_timeout=2)
                             .execute_command("CLUSTER", "KEYSLOT", key)))

    def slot_owner(self, slot):
        """The master serving `slot` now, by CLUSTER SLOTS of a live
        node."""
        port = self._any(lambda n: self._slot_owners(n)).get(slot)
        if port is None:
            raise RuntimeError(f"slot {slot} is served by no node")
        return self.by_port(port)

    def master_of(self, key):
        """The Server that owns `key`'s slot now."""
        return self.slot_owner(self.keyslot(key))

    def masters(self):
        """The live masters that serve slots, by CLUSTER NODES of a live
        node, in the order of self.nodes."""
        v = self.view()
        ids = {i for i, e in v.items() if "master" in e["flags"]
               and "fail" not in e["flags"] and e["slots"]}
        return [n for n in self.nodes if n.id in ids and n.live()]

    def replicas_of(self, node):
        """The nodes that replicate `node`, live or not (by CLUSTER NODES
        of a live node)."""
        v = self.view()
        ids = {i for i, e in v.items() if e["master"] == node.id}
        return [n for n in self.nodes if n.id in ids]

    # -- faults ------------------------------------------------------------

    def kill9(self, node=None):
        """kill -9 `node`, by default the master that serves slot 0 now
        (with the default layout, the first seed until a failover).
        Notes its slots and replicas on it (for wait_failover) and in
        self.down. Returns it."""
        node = node or self.slot_owner(0)
        self._note_at_kill(node)
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        self.down.append(node)
        return node

    def wait_failover(self, old, timeout=30.0, nudge=5.0):
        """Until one of `old`'s replicas serves all of old's slots (as
        every live node's CLUSTER SLOTS says), answers ROLE as a master,
        and the cluster is ready (wait_ok) on the live nodes. Returns the
        seconds waited. If the cluster's own failover is late, after
        `nudge` seconds the first live replica is asked for CLUSTER
        FAILOVER FORCE, noted in self.nudged."""
        t0 = time.monotonic()
        slots = getattr(old, "slots_at_kill", None)
        reps = getattr(old, "replicas_at_kill", None)
        if slots is None or reps is None:
            v = self.view()
            slots = v.get(old.id, {}).get("slots", set())
            reps = [n for n in self.nodes
                    if v.get(n.id, {}).get("master") == old.id]
        if not slots or not reps:
            raise RuntimeError(f"{old} had no slots or no replicas")
        ports = {r.port for r in reps}
        nudged = False
        why = "no answer"
        while True:
            try:
                owners = [self._slot_owners(n) for n in self.live_nodes()]
                if all(m.get(s) in ports for m in owners for s in slots):
                    new = self.by_port(owners[0][min(slots)])
                    if (new.client(socket_timeout=1)
                            .execute_command("ROLE")[0] == b"master"):
                        why = self._ready()
                        if not why:
                            dt = time.monotonic() - t0
                            self.times["failover"] = dt
                            return dt
                else:
                    why = "old's slots not yet served by a replica"
            except _ERR as e:
                why = str(e)
            if not nudged and time.monotonic() - t0 > nudge:
                nudged = True
                self.nudged.append(time.monotonic() - t0)
                for r in reps:
                    if not r.live():
                        continue
                    try:
                        r.client(socket_timeout=2).execute_command(
                            "CLUSTER", "FAILOVER", "FORCE")
                        break
                    except _ERR:
                        continue
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"no failover of {old} within "
                                   f"{timeout:.0f} s: {why}")
            time.sleep(0.05)

    def _note_at_kill(self, node):
        v = self.view()
        node.slots_at_kill = set(v.get(node.id, {}).get("slots", ()))
        node.replicas_at_kill = [n for n in self.nodes
                                 if v.get(n.id, {}).get("master") == node.id]

    def stop_node(self, node):
        """SIGSTOP `node` (noted in self.down, its slots and replicas on
        it as kill9 notes them)."""
        self._note_at_kill(node)
        node.proc.send_signal(signal.SIGSTOP)
        node.stopped = True
        self.down.append(node)
        return node

    def cont_node(self, node):
        """SIGCONT a node stopped by stop_node."""
        node.proc.send_signal(signal.SIGCONT)
        node.stopped = False
        return node

    def restart_node(self, node, timeout=30.0):
        """Starts a killed node again (its folder, its nodes.conf: the same
        node id); a master replaced meanwhile comes back as a replica of
        its successor. Waits until the cluster is ok with it in sync."""
        node.start()
        self.wait_ok(timeout)
        return node

    # -- resharding --------------------------------------------------------

    def move_slot(self, slot, to_node, pause=0.0, batch=10, timeout=60.0):
        """Move `slot` with all its keys to the master `to_node` while
        clients keep running, by the documented manual steps: SETSLOT
        IMPORTING on the target, MIGRATING on the source, GETKEYSINSLOT +
        MIGRATE ... KEYS in batches of `batch` (sleeping `pause` seconds
        after each batch, so that a test may see ASK redirections), then
        SETSLOT NODE on the target, the source and every other master;
        then until every live node's CLUSTER SLOTS names the target.
        Returns the number of keys moved."""
        src = self.slot_owner(slot)
        if src is to_node:
            return 0
        deadline = time.monotonic() + timeout
        s = src.client()
        t = to_node.client()
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING",
                          to_node.id)
        auth = ["AUTH", self.password] if self.password else []
        moved = 0
        while True:
            keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            s.execute_command("MIGRATE", "127.0.0.1", to_node.port, "", 0,
                              5000, "REPLACE", *auth, "KEYS", *keys)
            moved += len(keys)
            if time.monotonic() > deadline:
                raise RuntimeError(f"slot {slot} not moved within "
                                   f"{timeout:.0f} s")
            if pause:
                time.sleep(pause)
        t.execute_command("CLUSTER", "SETSLOT", slot, "NODE", to_node.id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", to_node.id)
        for m in self.masters():
            if m is not src and m is not to_node:
                try:
                    m.client(socket_timeout=2).execute_command(
                        "CLUSTER", "SETSLOT", slot, "NODE", to_node.id)
                except _ERR:
                    pass    # it learns it by gossip then
        while True:
            try:
                if all(self._slot_owners(n).get(slot) == to_node.port
                       for n in self.live_nodes()):
                    return moved
            except _ERR:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the nodes do not agree slot {slot} is "
                                   f"on {to_node} within {timeout:.0f} s")
            time.sleep(0.05)

    def reshard(self, n, from_node, to_node, timeout=120.0):
        """Move n slots from one master to another by redis-cli --cluster
        reshard; then until the cluster is ready again."""
        self._cli("--cluster", "reshard", f"127.0.0.1:{from_node.port}",
                  "--cluster-from", from_node.id,
                  "--cluster-to", to_node.id,
                  "--cluster-slots", str(n), "--cluster-yes",
                  timeout=timeout)
        return self.wait_ok(timeout=30.0)

    # -- the end -----------------------------------------------------------

    def stop(self):
        for n in self.nodes:
            n.stop()

    def cleanup(self):
        """Stop every node and remove the folders; safe to call twice
        (and as a pytest finalizer)."""
        try:
            self.stop()
        finally:
            if not self._cleaned:
                self._cleaned = True
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()
