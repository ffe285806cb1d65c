"""Two edges of one homeserver sharing one Redis (issue 18, "Two nginx
instances (separate prefixes and ports) sharing one Redis, both accepting
joins into the same room at once: every join in the outbox once, in
order, states exact").

Two Debian nginx processes with the module, each with its own prefix,
port and worker, the same server name and signing key (two machines of
one homeserver), one redis-server. The joiners (t/lib/mxj_joiner.py,
signedjson) take templates from either edge and send their joins to
either edge at the same moment; every answer is judged by
mxj_joiner.check_answer against the generated room and the joins it
accepted, never against values read back from the code under test."""

import json

import pytest

from mxj_nginx import Nginx
from test_send_join import (EDGE, Edge, answer_of, at_once, judged_template,
                            new_room, send_and_check)

import mxj_joiner  # noqa: E402  (t/lib, on the path through test_send_join)
from mxj_joiner import Joiner, View  # noqa: E402

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.no_valgrind(reason="two nginx instances")]


@pytest.fixture
def edges(nginx, redis_server, tmp_path):
    """Edge A (the suite's nginx fixture) and edge B (a second nginx,
    stopped and checked for alerts here), one Redis, one signing key."""
    second = Nginx()
    a = Edge(nginx, redis_server, tmp_path)
    b = Edge(second, redis_server, tmp_path)
    b.keys.stop()
    b.rec.stop()
    b.keys, b.rec = a.keys, a.rec          # one key server, one homeserver
    b.remotes = a.remotes
    b.joiner, b.joiner2, b.joiner3 = a.joiner, a.joiner2, a.joiner3
    yield a, b
    try:
        second.stop()
        bad = second.bad_log_lines()
        log = second.log_text()
    finally:
        second.cleanup()
        a.stop()
    assert not bad, "edge B's error log has alerts:\n" + "\n".join(bad) \
        + "\n--- full log ---\n" + log


def start_both(a, b, room):
    a.load(room).start()
    b.start(key=a.key_file.read_text())
    assert a.our_key().verify_key.encode() == b.our_key().verify_key.encode()


def outbox_ids(edge, room):
    return [f[b"event_id"].decode() for _, f in edge.outbox(room)]


def edge_seq(edge, room, eid):
    """The acceptance number the accept script gave eid (its edge record):
    the outbox must list the joins in this order."""
    rec = edge.r.hget(edge.key(room, "edge"), eid)
    assert rec is not None, eid
    return json.loads(rec)["s"]


def test_joins_at_once_through_two_edges(edges):
    """Twelve joiners, templates from A and B alternately, the send_joins
    at one moment, half to each edge: every one 200 and judged exact (the
    state at its prev_events, none of the others' joins), each in the
    outbox once, in the order Redis accepted them; then a second round
    through the other edge builds on all twelve: both edges' templates
    name the same extremities, and those answers hold the first twelve."""
    a, b = edges
    room = new_room("10")
    start_both(a, b, room)
    view = View(room)
    both = (a, b)
    joiners = [Joiner(a.remotes[k % 3], f"two{k}") for k in range(12)]
    evs = []
    for k, j in enumerate(joiners):
        tpl = both[k % 2].template(room, j)
        ev = j.fill("10", tpl)
        judged_template(a, room, j, tpl, ev)
        evs.append(ev)
    ids = [mxj_joiner.event_id("10", ev) for ev in evs]
    results = at_once(len(joiners), lambda k: both[(k + 1) % 2].send_join(
        room, joiners[k], evs[k]), timeout=120)
    for k, s in enumerate(results):
        assert s is not None, f"join {k} did not finish"
        doc = answer_of(s.rep, 2)
        got = mxj_joiner.check_answer(room, view, evs[k], doc,
                                      a.judge_keys(room), EDGE, a.our_key())
        for other in joiners:
            assert ("m.room.member", other.user) not in got["state"], \
                f"join {k}'s state holds a join made at the same time"
    for ev in evs:
        view.accept(ev)

    out = outbox_ids(a, room)
    assert sorted(out) == sorted(ids), "each join in the outbox once"
    seqs = [edge_seq(a, room, eid) for eid in out]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), \
        "the outbox is in the order the joins were accepted"
    ext = {k.decode() for k in a.r.hkeys(a.key(room, "extrem"))}
    assert ext == set(ids)

    # second round: each edge's template names the same extremities
    # (at most 10 of the 12, the deepest first, as Synapse lists them)
    ta = a.template(room, a.joiner)
    tb = b.template(room, a.joiner2)
    pa = sorted(mxj_joiner.ref_ids(ta["prev_events"]))
    pb = sorted(mxj_joiner.ref_ids(tb["prev_events"]))
    assert pa == pb and set(pa) <= set(ids) and len(pa) == 10, (pa, pb)
    for edge, j in ((b, a.joiner), (a, a.joiner2)):
        # a template fresh from the other edge (the join before moved the
        # extremities: a template made earlier would fork the room)
        tpl = (a if edge is b else b).template(room, j)
        ev = j.fill("10", tpl)
        judged_template(a, room, j, tpl, ev)
        s, doc, got = send_and_check(edge, room, view, j, ev)
        named = set(mxj_joiner.ref_ids(tpl["prev_events"]))
        for k, other in enumerate(joiners):
            key = ("m.room.member", other.user)
            if ids[k] in named:
                assert got["state"].get(key) == ids[k], \
                    f"the state at the template lacks join {k}"
    assert len(outbox_ids(a, room)) == 14
    assert len(set(outbox_ids(b, room))) == 14


def test_same_join_to_both_edges_at_once(edges):
    """One join sent to A and B at the same moment (a joining server
    retrying at another address): both 200 with the same state, one
    outbox entry."""
    a, b = edges
    room = new_room("10")
    start_both(a, b, room)
    view = View(room)
    j = a.joiner
    ev = j.fill("10", a.template(room, j))
    out = at_once(6, lambda k: (a, b)[k % 2].send_join(room, j, ev))
    states = set()
    for s in out:
        assert s is not None
        doc = answer_of(s.rep, 2)
        got = mxj_joiner.check_answer(room, view, ev, doc, a.judge_keys(room))
        states.add(tuple(sorted(got["state"].values())))
    assert len(states) == 1
    assert outbox_ids(a, room) == [mxj_joiner.event_id("10", ev)]
