#!/usr/bin/python3
"""A manual check of mxj_cluster.ClusterSet (not a pytest test): start a
cluster, write keys, compare slots, kill -9 a master and wait for the
failover, move a slot live, clean up, and make sure no node is left.
Prints the times. Run: /usr/bin/python3 t/fault/cluster_selfcheck.py
[password]"""

import os
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "t" / "integration"))
sys.path.insert(0, str(TOP / "t" / "fault"))

from mxj_cluster import ClusterSet  # noqa: E402


def main():
    password = sys.argv[1] if len(sys.argv) > 1 else None
    cs = ClusterSet(password=password)
    pids = []
    try:
        t0 = time.monotonic()
        cs.start()
        pids = [n.proc.pid for n in cs.nodes]
        print(f"start: {time.monotonic() - t0:.2f} s  {cs.address}")
        assert cs.address.startswith("cluster:127.0.0.1:")
        assert len(cs.masters()) == 3
        assert all(len(cs.replicas_of(m)) == 1 for m in cs.masters())

        c = cs.client(decode_responses=True)
        keys = [f"mxj:{{!room{i}:example.org}}:meta" for i in range(100)]
        for i, k in enumerate(keys):
            c.set(k, f"v{i}")
        assert cs.keyslot("{x}a") == cs.keyslot("{x}b")
        assert cs.keyslot(keys[0]) == cs.keyslot("{!room0:example.org}")
        print(f"keyslot {{x}}a = {cs.keyslot('{x}a')}")

        key = keys[7]
        old = cs.master_of(key)
        victim = cs.kill9(old)
        dt = cs.wait_failover(victim)
        new = cs.master_of(key)
        assert new is not old and new in victim.replicas_at_kill
        print(f"failover of {victim}: {dt:.2f} s -> {new}"
              f"  nudged {cs.nudged}")
        c = cs.client(decode_responses=True)
        assert c.get(key) == "v7", c.get(key)
        assert all(c.get(k) == f"v{i}" for i, k in enumerate(keys))

        key = keys[3]
        slot = cs.keyslot(key)
        src = cs.master_of(key)
        to = next(m for m in cs.masters() if m is not src)
        t0 = time.monotonic()
        moved = cs.move_slot(slot, to, pause=0.05, batch=1)
        print(f"move_slot {slot} ({moved} keys) {src} -> {to}: "
              f"{time.monotonic() - t0:.2f} s")
        assert cs.master_of(key) is to
        c = cs.client(decode_responses=True)
        assert c.get(key) == "v3"
        assert to.client(decode_responses=True).get(key) == "v3"
        assert all(c.get(k) == f"v{i}" for i, k in enumerate(keys))

        t0 = time.monotonic()
        a, b = cs.masters()[:2]
        cs.reshard(10, a, b)
        print(f"reshard 10 slots: {time.monotonic() - t0:.2f} s")
        assert all(c.get(k) == f"v{i}" for i, k in enumerate(keys))

        m = cs.masters()[-1]
        cs.stop_node(m)
        cs.cont_node(m)
    finally:
        root = cs.root
        cs.cleanup()
        cs.cleanup()
    left = [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert not left, f"left running: {left}"
    assert not root.exists()
    print("clean: no node left, folder removed")


if __name__ == "__main__":
    main()
