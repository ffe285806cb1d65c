"""matrix-join-ctl sync following the homeserver event by event
(docs/sync.md, "Following the homeserver"): the stand-in homeserver
(t/lib/mxj_homeserver.py) pushes every event of the room as Synapse 1.67
does (the legacy path {url}/transactions/{txnId}, the hs_token as the
access_token parameter, client-format events: no prev_events, no
signatures); sync fetches each non-state event with /event, checks it and
moves the forward extremities in Redis; the edge (Debian's nginx with the
module, its fallback a Recorder, so that an answer of the module is told
from a handed-over one) names them in its next template.

The unhappy paths are the point: pushes out of order, twice, with a gap,
for a room no longer cached, a PDU fetch that fails and a forged PDU
(the room stale, then recovered), a burst, the homeserver down while
pushes queue, and edge joins interleaved with the homeserver's messages,
every send_join answer judged by the independent joiner
(t/lib/mxj_joiner.py) against the state at its prev_events. Expected
values come from the generated room, never from the code under test."""

import json
import subprocess
import time

import pytest

from test_sync import (REMOTE, daemons, edges, hs_factory, key,  # noqa: F401
                       meta_of, wait_for)
from mxj_nginx import CTL, free_port
import mxj_joiner
from mxj_joiner import Joiner, View

pytestmark = pytest.mark.timeout(240)


class Live:
    """sync --every 1h with the Application Service (its first pass done,
    the stand-in pushing every change), and the edge."""

    def __init__(self, nginx, redis_server, hs, edges, daemons, tmp_path,
                 every="1h"):
        self.hs = hs
        self.room = hs.room
        self.rid = hs.room.room_id
        self.client = redis_server.client()
        self.port = free_port()
        reg = tmp_path / "registration.yaml"
        self.d = daemons(redis_server, hs, tmp_path, "--every", every,
                         "--appservice-listen", f"127.0.0.1:{self.port}",
                         "--registration", reg, self.rid).start()
        wait_for("the first pass", lambda: self.meta().get("generation")
                 or not self.d.running(), 60)
        assert self.d.running(), self.d.log()
        hs.use_registration(reg, auto_push=True)
        self.edge = edges(nginx, redis_server, hs, fallback="recorder")
        self.edge.start()
        self.user = f"@live{free_port()}:{REMOTE}"

    def meta(self):
        return meta_of(self.client, self.rid)

    def log(self):
        return self.d.err_path.read_text(errors="replace")

    def extrem(self):
        return sorted(k.decode() for k in
                      self.client.hkeys(key(self.rid, "extrem")))

    def template(self):
        """The edge's template, or None when handed over (or refused)."""
        status, doc = self.edge.make_join(self.room, self.user)
        if status != 200 or not isinstance(doc, dict) or "event" not in doc:
            return None
        return doc["event"]

    def wait_named(self, ids, timeout=10):
        """The first module template whose prev_events are ids."""
        want = sorted(ids)
        got = []

        def named():
            t = self.template()
            got[:] = [t and sorted(t["prev_events"])]
            return t is not None and sorted(t["prev_events"]) == want
        wait_for(f"a template naming {want} (last {got})", named, timeout,
                 step=0.01)

    def wait_fresh(self, timeout=30):
        wait_for("not stale", lambda: self.meta().get("stale") != "1",
                 timeout, step=0.01)


@pytest.fixture
def live(nginx, redis_server, hs_factory, edges,  # noqa: F811
         daemons, tmp_path):  # noqa: F811
    hs = hs_factory(members=20, servers=3, extremities=1)
    return Live(nginx, redis_server, hs, edges, daemons, tmp_path)


def passes(lv):
    return lv.log().count(f"room={lv.rid} synced from")


# -- messages -----------------------------------------------------------------

def test_a_message_is_named_by_the_next_template(live):
    """One message: an /event and a script, no pass; the template names
    it; the push came as Synapse 1.67 sends it."""
    n0 = passes(live)
    mark = live.hs.mark()
    m = live.hs.message("one")[0]
    live.wait_named([m])
    live.wait_fresh()
    hits = live.hs.hits_since(mark)
    ends = [h.endpoint for h in hits]
    assert ends.count("event") == 1, ends
    assert not {"state", "state_ids", "make_join"} & set(ends), ends
    assert passes(live) == n0
    txn, status, _, _, events = live.hs.pushes[-1]
    assert status == 200
    assert "prev_events" not in events[0] and \
        "signatures" not in events[0]
    meta = live.meta()
    assert meta.get("live_events") == "1"
    assert meta.get("extremities") == "1"
    assert int(meta["max_depth"]) == live.room.events[m]["depth"]
    assert live.extrem() == [m]


def test_a_merge_of_the_homeserver_extremities_takes_a_pass(
        nginx, redis_server, hs_factory, edges, daemons,  # noqa: F811
        tmp_path):
    """Two forward extremities at the snapshot (the snapshot holds the
    deepest, E): a message naming both merges branches whose states the
    edge never compared, so one pass (no state resolution here); the
    messages after it are followed live."""
    hs = hs_factory(members=20, servers=3, extremities=2)
    assert len(hs.room.extremity_ids) == 2
    lv = Live(nginx, redis_server, hs, edges, daemons, tmp_path)
    n0 = passes(lv)
    m1 = hs.message("merge")[0]
    wait_for("a pass", lambda: passes(lv) > n0, 60)
    assert "is not known to the snapshot (a gap)" in lv.log()
    lv.wait_named([m1])
    m2 = hs.message("then live")[0]
    lv.wait_named([m2])
    assert passes(lv) == n0 + 1
    assert lv.meta().get("live_events") == "1"


def test_messages_pushed_twice_and_out_of_order(live):
    """Three messages pushed in one transaction last first, then the same
    ones again: each applied once (the second time, nothing is fetched),
    the last the only extremity."""
    hs = live.hs
    hs.auto_push = False
    ids = [hs.message(f"m{i}")[0] for i in range(3)]
    n0 = passes(live)
    st, _, _ = hs.push([(live.room, e) for e in reversed(ids)])
    assert st == 200
    live.wait_named([ids[-1]])
    live.wait_fresh()
    mark = hs.mark()
    st, _, _ = hs.push([(live.room, e) for e in ids])
    assert st == 200
    # known already (edge records): not queued, not fetched, not stale
    time.sleep(0.5)
    assert [h.endpoint for h in hs.hits_since(mark)] == []
    assert live.extrem() == [ids[-1]]
    assert live.meta().get("live_events") == "3"
    assert passes(live) == n0
    assert "stale" not in live.meta()


def test_a_gap_takes_a_pass(live):
    """m2 pushed, m1 never: m2's prev_event is unknown, so no guess: the
    room stale (why said), a pass, then m2 named."""
    hs = live.hs
    hs.auto_push = False
    m1 = hs.message("lost")[0]
    m2 = hs.message("pushed")[0]
    n0 = passes(live)
    hs.push([(live.room, m2)])
    wait_for("a pass", lambda: passes(live) > n0, 60)
    assert f"room={live.rid} stale: pushed event {m2}: its prev_event " \
        f"{m1} is not known to the snapshot (a gap)" in live.log()
    live.wait_named([m2])
    assert m1 not in live.extrem()


def test_a_fetch_that_fails_stale_then_recovered(live):
    """/event answers 500: the room stale, its pass fails too (the same
    event); requests go to the fallback. Once the homeserver answers, the
    next event's push brings the room back."""
    hs = live.hs
    hs.auto_push = False
    m1 = hs.message("unfetchable")[0]
    hs.fail_events.add(m1)
    hs.push([(live.room, m1)])
    wait_for("the pass failed", lambda: f"room={live.rid} failed"
             in live.log(), 60)
    meta = live.meta()
    assert meta.get("stale") == "1"
    assert m1 in meta.get("stale_reason", ""), meta
    assert live.template() is None
    assert live.edge.rec.requests, "not handed over to the fallback"
    hs.fail_events.clear()
    hs.auto_push = True
    m2 = hs.message("after")[0]
    live.wait_named([m2], timeout=60)
    live.wait_fresh()


def test_a_forged_pdu_is_refused(live):
    """The PDU behind a pushed ID does not verify: refused (never an
    extremity), the room stale with the reason; the fallback answers."""
    hs = live.hs
    hs.auto_push = False
    m1 = hs.message("forged")[0]
    hs.forge(m1, "signature")
    hs.push([(live.room, m1)])
    wait_for("stale, said", lambda: "signature" in
             live.meta().get("stale_reason", ""), 30)
    wait_for("the pass failed", lambda: f"room={live.rid} failed"
             in live.log(), 60)
    assert m1 not in live.extrem()
    assert live.meta().get("stale") == "1"
    assert live.template() is None


def test_a_room_no_longer_cached(live):
    """The snapshot deleted: a push is not queued (nothing to follow) and
    nothing breaks; the next periodic pass loads the room again."""
    live.client.delete(key(live.rid, "meta"))
    live.hs.message("nobody follows")
    time.sleep(0.5)
    assert live.meta() == {}
    assert live.d.running()


def test_a_state_event_takes_a_pass(live):
    """A topic (a state event other than a membership): the room stale
    until a pass has loaded it."""
    n0 = passes(live)
    eid = live.hs.add_state("m.room.topic", "", {"topic": "passed"})[0]
    wait_for("a pass", lambda: passes(live) > n0, 60)
    live.wait_fresh()
    sid = live.client.hget(key(live.rid, "state"), '["m.room.topic",""]')
    assert sid == eid.encode()
    live.wait_named([eid])


# -- member events, applied in place -----------------------------------------

def member_of(lv, user):
    v = lv.client.hget(key(lv.rid, "member"), user)
    return v.decode() if v is not None else None


def state_id(lv, user):
    v = lv.client.hget(key(lv.rid, "state"),
                       json.dumps(["m.room.member", user],
                                  separators=(",", ":")))
    return v.decode() if v is not None else None


class Story:
    """Edge joins and the homeserver's events into one room, each send_join
    answer judged by the independent joiner against the state at its
    prev_events (mxj_joiner.View, told of each homeserver event). The
    stand-in never sees the edge joins (they are not forwarded here): its
    room is put back after each."""

    def __init__(self, lv):
        self.lv = lv
        self.hs = lv.hs
        self.room = lv.room
        self.keys = lv.hs.verify_keys()
        self.view = View(self.room)
        self.save()

    def save(self):
        r = self.room
        self.saved = (list(r.extremity_ids), dict(r.state), r.last)

    def hs_event(self, ids, member=None):
        """After a homeserver event (the IDs its method returned): the view
        follows it (member: its state_key, for a member event)."""
        eid = ids[0]
        prev = mxj_joiner.ref_ids(self.room.events[eid]["prev_events"])
        self.view.follow(eid, prev, member=member)
        self.save()
        return eid

    def join(self, name, prev=None, status=200):
        lv, room = self.lv, self.room
        code, doc = lv.edge.make_join(room, f"@{name}:{REMOTE}")
        assert code == 200, (code, doc)
        tpl = doc["event"]
        if prev is not None:
            tpl["prev_events"] = prev
            tpl["depth"] = max(room.events[p]["depth"] for p in prev) + 1
        j = Joiner(lv.edge.remote, name)
        sent, eid, code, body = lv.edge.send_join(room, j, tpl)
        assert code == status, body[:300]
        if code != 200:
            return eid, tpl, body
        mxj_joiner.check_answer(room, self.view, sent, json.loads(body),
                                self.keys)
        self.view.accept(sent)
        room.extremity_ids, room.last = list(self.saved[0]), self.saved[2]
        room.state = dict(self.saved[1])
        return eid, tpl, body


def test_a_new_member_is_applied_in_place(live):
    """A join on the homeserver: one /event and one script, no pass and no
    /state; the next template names it, the member index, the counts and
    the directory's servers follow, and the next send_join answer holds
    it (judged by the joiner)."""
    story = Story(live)
    hs, room = live.hs, live.room
    n0 = passes(live)
    m0 = int(live.meta()["members"])
    user = f"@fresh:{REMOTE}"
    assert REMOTE not in json.loads(live.meta()["servers"])
    mark = hs.mark()
    eid = story.hs_event(hs.add_members(users=[user]), member=user)
    live.wait_named([eid])
    live.wait_fresh()
    ends = [h.endpoint for h in hs.hits_since(mark)]
    assert ends.count("event") == 1, ends
    assert not {"state", "state_ids", "make_join"} & set(ends), ends
    assert passes(live) == n0
    assert member_of(live, user) == "join"
    assert state_id(live, user) == eid
    meta = live.meta()
    assert int(meta["members"]) == m0 + 1
    assert REMOTE in json.loads(meta["servers"])
    assert meta.get("live_events") == "1"
    handed = len(live.edge.rec.requests)   # (stale while it was applied)
    story.join("after1")
    assert passes(live) == n0
    assert len(live.edge.rec.requests) == handed


def test_a_leave_and_a_ban_are_applied_in_place(live):
    """A snapshot member leaves (their join is not in the snapshot's auth
    chain: the answers' auth chain must now carry it), a user of the
    joining server is banned: both applied without a pass; the banned
    user's make_join and a send_join made from a template before the ban
    are refused by the module (403, nothing handed over), as the
    homeserver would refuse them; the leaver's server count drops."""
    story = Story(live)
    hs, room = live.hs, live.room
    n0 = passes(live)
    m0 = int(live.meta()["members"])
    creator = room.creator
    victim = next(u for u in room.users if u != creator
                  and room.events[room.state[("m.room.member", u)]]
                  ["content"].get("membership") == "join")
    leave = story.hs_event(hs.leave(victim), member=victim)
    live.wait_named([leave])
    assert member_of(live, victim) == "leave"
    assert int(live.meta()["members"]) == m0 - 1
    story.join("afterleave")

    # a template for the user, then the ban, then their send_join
    banned = f"@banned:{REMOTE}"
    code, doc = live.edge.make_join(room, banned)
    assert code == 200, doc
    early = doc["event"]
    ban = story.hs_event(hs.ban(banned), member=banned)
    wait_for("the ban applied", lambda: member_of(live, banned) == "ban", 10)
    live.wait_fresh()
    handed = len(live.edge.rec.requests)
    code, doc = live.edge.make_join(room, banned)
    assert code == 403, (code, doc)
    assert doc["errcode"] == "M_FORBIDDEN", doc
    j = Joiner(live.edge.remote, "banned")
    _, _, code, body = live.edge.send_join(room, j, early)
    assert code == 403, body[:300]
    err = json.loads(body)
    assert err["errcode"] == "M_FORBIDDEN" and "banned" in err["error"], err
    assert len(live.edge.rec.requests) == handed
    assert passes(live) == n0
    assert ban in live.extrem()


def test_members_and_edge_joins_interleaved(live):
    """Edge joins, homeserver joins and leaves in one room, some joins
    naming an older extremity: every answer is exactly the state at its
    prev_events (the homeserver's member events before it in, those after
    it out), its auth chain closed and exact; no pass."""
    story = Story(live)
    hs, room = live.hs, live.room
    n0 = passes(live)
    j1, _, _ = story.join("mix1")
    a_user = f"@mixed:{REMOTE}"
    a = story.hs_event(hs.add_members(users=[a_user]), member=a_user)
    live.wait_named([j1, a])
    j2, t2, _ = story.join("mix2")
    assert sorted(t2["prev_events"]) == sorted([j1, a])
    gone = next(u for u in reversed(room.users) if u != room.creator
                and room.events[room.state[("m.room.member", u)]]
                ["content"].get("membership") == "join")
    b = story.hs_event(hs.leave(gone), member=gone)
    live.wait_named([j2, b])
    # before the leave (and before j2): the leaver still joined there
    story.join("mix3", prev=[a])
    # the same user again on the homeserver (a rejoin supersedes the leave)
    c = story.hs_event(hs.add_members(users=[gone]), member=gone)
    m = story.hs_event(hs.message("between"))
    assert c and m
    wait_for("applied", lambda: m in live.extrem(), 10)
    story.join("mix4")
    assert member_of(live, gone) == "join"
    assert passes(live) == n0
    assert live.d.running()


def test_a_burst_takes_one_pass(live):
    """200 messages pushed one transaction each: nothing dropped (each
    applied or covered by a pass), the homeserver asked fewer requests
    than events, the last message named."""
    hs = live.hs
    mark = hs.mark()
    ids = [hs.message(f"b{i}")[0] for i in range(200)]
    live.wait_named([ids[-1]], timeout=120)
    live.wait_fresh(60)
    hits = hs.hits_since(mark)
    assert len(hits) < len(ids), [h.endpoint for h in hits][:50]
    assert all(st == 200 for _, st, _, _, _ in hs.pushes[-200:])
    assert live.d.running()


def test_homeserver_down_while_pushes_queue(live):
    """The homeserver's federation answers fail while messages are
    pushed: stale, the edge hands over; back up, the next push brings the
    room back."""
    hs = live.hs
    hs.auto_push = False
    ids = [hs.message(f"d{i}")[0] for i in range(3)]
    for e in ids:
        hs.fail_events.add(e)
    for e in ids:
        hs.push([(live.room, e)])
    wait_for("stale", lambda: live.meta().get("stale") == "1", 10)
    wait_for("the pass failed", lambda: f"room={live.rid} failed"
             in live.log(), 60)
    hs.fail_events.clear()
    hs.auto_push = True
    m = hs.message("back")[0]
    live.wait_named([m], timeout=60)


# -- edge joins and the homeserver's messages ---------------------------------

def test_edge_joins_and_messages_interleaved(live):
    """Two edge joins and three messages of the homeserver (which never
    sees the joins: they are not forwarded here): every template names
    the joins and messages that are extremities, and every send_join
    answer is exactly the state at its prev_events, judged by the joiner
    (the joins behind a message are ancestors through it)."""
    hs = live.hs
    room = live.room
    keys = hs.verify_keys()
    view = View(room)
    saved = (list(room.extremity_ids), dict(room.state), room.last)

    def join(name, prev=None):
        status, doc = live.edge.make_join(room, f"@{name}:{REMOTE}")
        assert status == 200, (status, doc)
        tpl = doc["event"]
        if prev is not None:
            tpl["prev_events"] = prev
            tpl["depth"] = max(room.events[p]["depth"] for p in prev) + 1
        j = Joiner(live.edge.remote, name)
        sent, eid, status, body = live.edge.send_join(room, j, tpl)
        assert status == 200, body[:300]
        mxj_joiner.check_answer(room, view, sent, json.loads(body), keys)
        view.accept(sent)
        # the homeserver does not have the join: its room is as before
        room.extremity_ids, room.last = list(saved[0]), saved[2]
        room.state = dict(saved[1])
        return eid, tpl

    def message(body):
        m = hs.message(body)[0]
        view.follow(m, mxj_joiner.ref_ids(room.events[m]["prev_events"]))
        saved[0][:] = list(room.extremity_ids)
        return m

    j1, t1 = join("inter1")
    assert t1["prev_events"] == saved[0]
    m1 = message("first")
    # j1 and m1 (on the snapshot's extremity) are both extremities
    live.wait_named([j1, m1])
    j2, t2 = join("inter2")
    assert sorted(t2["prev_events"]) == sorted([j1, m1])
    m2 = message("second")
    live.wait_named([j2, m2])
    # a join naming m2 alone: neither edge join is its ancestor
    j3, _ = join("inter3", prev=[m2])
    m3 = message("third")
    live.wait_named([j2, j3, m3])
    # the last: every edge join is an ancestor (through m2 and m3 too)
    join("inter4")
    assert live.d.running()


# -- the safety net and what it reports --------------------------------------

def test_drift_found_by_the_periodic_pass_and_reported(
        nginx, redis_server, hs_factory, edges, daemons,  # noqa: F811
        tmp_path):
    """One message applied live, then one whose push is lost: the next
    periodic pass (--every 2s) finds the homeserver's extremity the edge
    never had, counts it and catches up. matrix_status and show report
    the counts."""
    hs = hs_factory(members=20, servers=3, extremities=1)
    lv = Live(nginx, redis_server, hs, edges, daemons, tmp_path,
              every="2s")
    m1 = hs.message("pushed")[0]
    lv.wait_named([m1])
    hs.auto_push = False
    m2 = hs.message("lost")[0]
    wait_for("drift", lambda: lv.meta().get("drift") == "1", 30)
    assert f"room={lv.rid} drift: the homeserver's extremity {m2} was " \
        "never pushed" in lv.log()
    lv.wait_named([m2])
    st = lv.edge.status(lv.room)
    assert st["drift"] == 1 and st["passes"] >= 2, st
    assert "live_age_ms" in st or st.get("live_events") is None, st
    out = subprocess.run([str(CTL), "show", "--redis",
                          redis_server.address, lv.rid],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "drift: 1\n" in out.stdout, out.stdout
    assert "passes: " in out.stdout


def test_status_reports_live_events_and_stale_reason(live):
    """matrix_status: live_events and live_age_ms after a message;
    stale and stale_reason while a fetch fails."""
    m = live.hs.message("counted")[0]
    live.wait_named([m])
    st = live.edge.status(live.room)
    assert st["live_events"] == 1 and 0 <= st["live_age_ms"] < 60000, st
    live.hs.auto_push = False
    m2 = live.hs.message("unfetchable")[0]
    live.hs.fail_events.add(m2)
    time.sleep(1.1)                 # a quiet room: its push makes it stale
    live.hs.push([(live.room, m2)])
    wait_for("stale", lambda: live.edge.status(live.room).get("stale")
             == 1, 30)
    wait_for("the pass failed", lambda: f"room={live.rid} failed"
             in live.log(), 60)
    st = live.edge.status(live.room)
    assert m2 in st["stale_reason"], st
