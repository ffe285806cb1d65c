"""When the edge cannot decide, the homeserver does: docs/directives.md
"When the edge cannot decide". A restricted room whose allowed room the
edge does not cache (or whose snapshot may not answer), or Redis failing
before anything was stored, hands make_join and send_join to
matrix_join_fallback unchanged (method, URI, body, Authorization), as a
room that is not cached at all; without a fallback the answer stays a
Matrix error. The cases the edge keeps (the homeserver would answer the
same) are pinned here too: a key it could not fetch stays 401.

The rooms come from t/lib/mxj_room.py, the joins are signed by
t/lib/mxj_joiner.py; the fallback is the Recorder of test_send_join's
edge, which records each request byte for byte."""

import sys

import pytest

from mxj_nginx import TOP

sys.path.insert(0, str(TOP / "t" / "lib"))
import mxj_authcheck as judge  # noqa: E402
from mxj_remote import headers_named, now_ms  # noqa: E402
from test_send_join import (EDGE, assert_error, edge,  # noqa: E402,F401
                            mj_target, new_room, restricted_rules, send)

pytestmark = pytest.mark.timeout(120)

NOT_CACHED = "!notcached:elsewhere.test"


def make_join(edge, room, joiner):
    """make_join for joiner: (target, Authorization value, reply)."""
    target = mj_target(room.room_id, joiner.user)
    auth = joiner.remote.auth_header("GET", target, edge.our)
    return target, auth, send(edge.port, "GET", target, auth=[auth])


def forwarded(edge, method, target, auth, body, rep):
    """The reply is the fallback's, which got the request exactly once
    and unchanged."""
    assert rep.status == 200 and rep.json() == edge.rec.body, rep
    reqs = edge.rec.requests
    assert [(q.method, q.target) for q in reqs] == [(method, target)], reqs
    assert reqs[0].body == body
    assert headers_named(reqs[0], "Authorization") == [auth]


def restricted_join(edge, room, joiner):
    """A join of joiner (not invited, in no cached allowed room) naming
    our authoriser, as a joining server builds it after a make_join the
    homeserver answered."""
    ev = judge.build_join(room, joiner.user, authoriser="@admin:" + EDGE,
                          ts=now_ms())
    ev["origin"] = joiner.server
    joiner.sign(room.version, ev)
    return ev


def allowed_room(edge, joiner):
    a = new_room("10")
    a.add_member(joiner.user, "join")
    edge.load(a)
    return a


# -- an allowed room the edge does not cache ----------------------------------

@pytest.mark.parametrize("version", ["8", "10"])
def test_make_join_allowed_room_not_cached_goes_to_fallback(edge, version):
    room = new_room(version, join_rules=restricted_rules(version,
                                                         NOT_CACHED))
    edge.load(room).start()
    target, auth, rep = make_join(edge, room, edge.joiner)
    forwarded(edge, "GET", target, auth, b"", rep)


def test_send_join_allowed_room_not_cached_goes_to_fallback(edge):
    room = new_room("10", join_rules=restricted_rules("10", NOT_CACHED))
    edge.load(room).start()
    before = edge.digest(room)
    s = edge.send_join(room, edge.joiner,
                       restricted_join(edge, room, edge.joiner))
    forwarded(edge, "PUT", s.target, s.auth, s.body, s.rep)
    edge.untouched(room, before)


def test_one_allowed_room_met_needs_no_fallback(edge):
    """An allowed room met in the cache decides, whatever the others."""
    a = allowed_room(edge, edge.joiner)
    room = new_room("10", join_rules=restricted_rules("10", NOT_CACHED,
                                                      a.room_id))
    edge.load(room).start()
    _, _, rep = make_join(edge, room, edge.joiner)
    assert rep.status == 200, rep
    assert edge.rec.requests == []


# -- an allowed room whose snapshot may not answer ----------------------------

@pytest.mark.parametrize("how", ["stale", "old"])
def test_allowed_room_not_answerable_goes_to_fallback(edge, how):
    """The user is joined to the allowed room in its snapshot, but that
    snapshot is marked stale or older than matrix_join_max_age: the edge
    cannot tell, make_join and send_join go to the fallback."""
    a = allowed_room(edge, edge.joiner)
    room = new_room("10", join_rules=restricted_rules("10", a.room_id))
    edge.load(room)
    meta = edge.key(a, "meta")
    if how == "stale":
        edge.r.hset(meta, "stale", "1")
        edge.start()
    else:
        edge.r.hset(meta, "loaded_at", str(now_ms() - 3_600_000))
        edge.start(http_extra="matrix_join_max_age 10m;")
    target, auth, rep = make_join(edge, room, edge.joiner)
    forwarded(edge, "GET", target, auth, b"", rep)
    edge.rec.log.clear()
    before = edge.digest(room)
    s = edge.send_join(room, edge.joiner,
                       restricted_join(edge, room, edge.joiner))
    forwarded(edge, "PUT", s.target, s.auth, s.body, s.rep)
    edge.untouched(room, before)


def test_allowed_room_stale_without_fallback(edge):
    a = allowed_room(edge, edge.joiner)
    room = new_room("10", join_rules=restricted_rules("10", a.room_id))
    edge.load(room)
    edge.r.hset(edge.key(a, "meta"), "stale", "1")
    edge.start(fallback=False)
    _, _, rep = make_join(edge, room, edge.joiner)
    assert_error(rep, 400, "M_UNABLE_TO_AUTHORISE_JOIN")
    before = edge.digest(room)
    s = edge.send_join(room, edge.joiner,
                       restricted_join(edge, room, edge.joiner))
    assert_error(s.rep, 400, "M_UNABLE_TO_AUTHORISE_JOIN")
    edge.untouched(room, before)


# -- Redis failing before anything is stored ----------------------------------
# A key of the wrong type makes the script's command fail with WRONGTYPE:
# Redis answers an error exactly at the step under test.

def test_allowed_room_check_failing_goes_to_fallback(edge):
    a = allowed_room(edge, edge.joiner)
    room = new_room("10", join_rules=restricted_rules("10", a.room_id))
    edge.load(room).start()
    meta = edge.key(a, "meta")
    edge.r.delete(meta)
    edge.r.set(meta, "not a hash")
    target, auth, rep = make_join(edge, room, edge.joiner)
    forwarded(edge, "GET", target, auth, b"", rep)


def test_join_rate_failing_goes_to_fallback(edge):
    room = new_room("10")
    edge.load(room).start(rate="10r/s")
    edge.r.set(edge.key(room, "rate"), "not a hash")
    target, auth, rep = make_join(edge, room, edge.joiner)
    forwarded(edge, "GET", target, auth, b"", rep)


def test_join_rate_failing_without_fallback(edge):
    room = new_room("10")
    edge.load(room).start(rate="10r/s", fallback=False)
    edge.r.set(edge.key(room, "rate"), "not a hash")
    _, _, rep = make_join(edge, room, edge.joiner)
    assert_error(rep, 500, "M_UNKNOWN")
    assert edge.rec.requests == []


def test_send_join_state_failing_goes_to_fallback(edge):
    """The state read of send_join fails (nothing is stored before the
    accept script): the homeserver takes the join."""
    room = new_room("10")
    edge.load(room).start()
    j = edge.joiner
    ev = j.fill("10", edge.template(room, j))
    extrem = edge.key(room, "extrem")
    edge.r.rename(extrem, extrem + ".saved")
    edge.r.set(extrem, "not a hash")
    s = edge.send_join(room, j, ev)
    forwarded(edge, "PUT", s.target, s.auth, s.body, s.rep)
    assert edge.outbox(room) == []


# -- what the edge keeps: the homeserver would answer the same ----------------

def test_unfetchable_key_stays_401(edge):
    """The joining server's key cannot be fetched: 401, not the fallback
    (the key is fetched through the homeserver's own notary, see
    directives.md)."""
    room = new_room("10")
    edge.load(room).start()
    edge.keys.down()
    _, _, rep = make_join(edge, room, edge.joiner)
    assert_error(rep, 401, "M_UNAUTHORIZED")
    assert edge.rec.requests == []


def test_no_local_user_can_authorise_stays_refused(edge):
    """The user is in a cached allowed room but none of our users can
    invite: the homeserver has the same state, 400 M_UNABLE_TO_GRANT_JOIN
    at the edge."""
    a = allowed_room(edge, edge.joiner)
    pl = {"users": {"@u1:s1.example.org": 100}, "invite": 50}
    room = new_room("10", join_rules=restricted_rules("10", a.room_id),
                    power_levels=pl)
    edge.load(room).start()
    _, _, rep = make_join(edge, room, edge.joiner)
    assert_error(rep, 400, "M_UNABLE_TO_GRANT_JOIN")
    assert edge.rec.requests == []
