"""A homeserver stand-in for the forwarder tests: the upstream that
`matrix-join-ctl forward` replays accepted send_joins to.

    Upstream    an HTTP server on 127.0.0.1 (mxj_remote's threaded server)
                that records every request exactly (method, raw target,
                every header, body bytes, arrival time) with the room and
                event ID of its path, and answers as the test tells it:
                by rules (per event ID or for any request, a number of
                times or always) that answer a status and a body, hang
                (no answer until the connection is given up), answer after
                a delay, or drop the connection unanswered; down()/up()
                make it refuse connections for a while. With verify_keys
                it checks every X-Matrix signature as the homeserver
                would (destination: the edge's server name) and answers
                401 to one that does not verify.

    Order       judges the requests against the outbox order: no entry of
                a room is sent before every earlier entry of that room was
                answered 2xx (docs/forwarder.md "Strictly in outbox order
                per room"), and no room ever has two requests in flight.

Nothing here runs our C code; the forwarder is judged by what reaches
this server.
"""

import collections
import json
import threading
import time
import urllib.parse

import mxj_joiner
from mxj_remote import _Base, headers_named

def now_ms():
    return int(time.time() * 1000)


def path_ids(target):
    """(room ID, event ID) of a send_join target (.../send_join/{room}/
    {event}, after any path prefix), or (None, None)."""
    segs = target.partition("?")[0].split("/")
    if len(segs) >= 3 and segs[-3] == "send_join":
        return (urllib.parse.unquote(segs[-2]),
                urllib.parse.unquote(segs[-1]))
    return None, None


class Answer:
    """An answer: status and a JSON object (or raw bytes), after delay
    seconds."""

    def __init__(self, status=200, body=None, delay=0.0, headers=()):
        self.status = status
        self.body = {} if body is None else body
        self.delay = delay
        self.headers = list(headers)

    def bytes(self):
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()

    def __repr__(self):
        return f"<Answer {self.status} delay={self.delay}>"


class Hang:
    """No answer: the request is held until release() or stop() (at most
    `limit` seconds), then the connection is closed unanswered."""

    def __init__(self, limit=120.0):
        self.limit = limit

    def __repr__(self):
        return "<Hang>"


class Drop:
    """The connection is closed as soon as the request is read."""

    def __repr__(self):
        return "<Drop>"


class Seen:
    """One request as it reached the upstream, and what it was answered."""

    def __init__(self, req, wall_ms):
        self.method = req.method
        self.target = req.target
        self.headers = req.headers
        self.body = req.body
        self.arrived_mono = req.received_at
        self.arrived_ms = wall_ms
        self.room_id, self.event_id = path_ids(req.target)
        self.action = None
        self.status = None          # the status answered (None: none)
        self.answered_mono = None   # when the answer was about to be sent
        self.answered_ms = None
        self.xmatrix = None         # None (not checked), "ok" or the error

    def header(self, name):
        return headers_named(self, name)

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    def __repr__(self):
        return (f"<Seen {self.method} {self.event_id} -> {self.status} "
                f"at {self.arrived_ms}>")


class Upstream(_Base):
    """See the module docstring. Rules are tried in the order added; the
    first that matches answers (and counts down its `times`); without one
    the default answer (200 {}) is sent."""

    def __init__(self, default=None, verify_keys=None, destination=None,
                 port=0, avoid=()):
        self.default = default or Answer(200, {})
        self.verify_keys = verify_keys  # {server: {key ID: VerifyKey}}
        self.destination = destination
        self.rules = []                     # [match, action, times left]
        self.seen = []                      # Seen, in order of arrival
        self.in_flight = 0
        self.max_in_flight = 0
        self.room_in_flight = collections.Counter()
        self.max_room_in_flight = 0
        self._release = threading.Event()
        self._cond = threading.Condition()
        super().__init__(port, avoid)

    # -- what to answer ----------------------------------------------------

    def on(self, action, event_id=None, room_id=None, times=None):
        """Answer requests for event_id (or of room_id, or any request)
        with action, `times` times (None: always)."""
        def match(s):
            return (event_id is None or s.event_id == event_id) and \
                (room_id is None or s.room_id == room_id)
        with self._cond:
            self.rules.append([match, action, times])

    def clear_rules(self):
        with self._cond:
            self.rules = []

    def release(self):
        """Ends every Hang now (and the ones still to come)."""
        self._release.set()

    def stop(self):
        self._release.set()
        super().stop()

    def _pick(self, s):
        for rule in self.rules:
            match, action, times = rule
            if times is not None and times <= 0:
                continue
            if match(s):
                if times is not None:
                    rule[2] -= 1
                return action
        return self.default

    def _check_xmatrix(self, s):
        """Every Authorization header verifies for the request as it came
        (verify_keys: {server: {key ID: VerifyKey}})."""
        auths = s.header("Authorization")
        if not auths:
            return "no Authorization header"
        try:
            for a in auths:
                p = mxj_joiner.parse_xmatrix(a)
                vk = self.verify_keys[p["origin"]][p["key"]]
                mxj_joiner.xmatrix_verifies(a, s.method, s.target, s.body,
                                            self.destination,
                                            {p["origin"]: vk})
        except (AssertionError, KeyError, ValueError) as e:
            return f"{type(e).__name__}: {e}"
        return "ok"

    # called by the handler thread (mxj_remote._Handler)
    def _record(self, req):
        s = Seen(req, now_ms())
        with self._cond:
            self.seen.append(s)
            self._cond.notify_all()
        return s

    def _answer(self, req):
        s = self._record(req)
        if self.verify_keys is not None and s.body is not None:
            s.xmatrix = self._check_xmatrix(s)
        with self._cond:
            action = self._pick(s)
            if s.xmatrix not in (None, "ok"):
                action = Answer(401, {"errcode": "M_UNAUTHORIZED",
                                      "error": s.xmatrix})
            s.action = action
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if s.room_id is not None:
                self.room_in_flight[s.room_id] += 1
                self.max_room_in_flight = max(
                    self.max_room_in_flight, self.room_in_flight[s.room_id])
        try:
            if isinstance(action, Hang):
                deadline = time.monotonic() + action.limit
                while not self._release.is_set() and \
                        not self._stop.is_set() and \
                        time.monotonic() < deadline:
                    self._release.wait(0.05)
                return None, [], b""
            if isinstance(action, Drop):
                return None, [], b""
            if action.delay:
                self.wait(action.delay)
            with self._cond:
                s.status = action.status
                s.answered_mono = time.monotonic()
                s.answered_ms = now_ms()
                self._cond.notify_all()
            return action.status, [("Content-Type", "application/json")] \
                + action.headers, action.bytes()
        finally:
            with self._cond:
                self.in_flight -= 1
                if s.room_id is not None:
                    self.room_in_flight[s.room_id] -= 1
                self._cond.notify_all()

    # -- what came ---------------------------------------------------------

    def requests(self, event_id=None):
        with self._cond:
            return [s for s in self.seen
                    if event_id is None or s.event_id == event_id]

    def delivered(self, room_id=None):
        """Event IDs answered 2xx, in the order of the answers (an event
        answered 2xx twice is listed twice)."""
        with self._cond:
            done = sorted((s for s in self.seen if s.ok and
                           (room_id is None or s.room_id == room_id)),
                          key=lambda s: s.answered_mono)
            return [s.event_id for s in done]

    def wait_for(self, pred, timeout, what="the upstream"):
        """Waits until pred(self) is true (checked on every request and
        answer); AssertionError after timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {what}; "
                        f"seen: {self.seen}")
                self._cond.wait(min(left, 0.1))

    def wait_requests(self, n, timeout, event_id=None):
        self.wait_for(lambda u: len([s for s in u.seen if event_id is None
                                     or s.event_id == event_id]) >= n,
                      timeout, f"{n} requests for {event_id or 'any event'}")

    def wait_delivered(self, event_ids, timeout):
        want = set(event_ids)
        self.wait_for(lambda u: want <= {s.event_id for s in u.seen
                                         if s.ok},
                      timeout, f"2xx answers for {sorted(want)}")


def order_violations(seen, outbox_order, skip=()):
    """What breaks the per-room order: outbox_order is {room: [event IDs
    in outbox order]}; seen the Upstream's requests. An attempt at entry k
    is out of order when an earlier entry of its room had not yet been
    answered 2xx (docs/forwarder.md: the next entry is always the oldest
    undelivered one); an earlier entry in `skip` (a dead letter, done
    without a 2xx) counts as done at its last answer. Returns a list of
    messages (empty: in order)."""
    pos = {}
    for room, ids in outbox_order.items():
        for k, e in enumerate(ids):
            pos[e] = (room, k)
    out = []
    done_at = {}   # event -> its first 2xx (a skipped one: its last answer)
    for s in seen:
        if s.answered_mono is None:
            continue
        if s.event_id in skip:
            done_at[s.event_id] = max(done_at.get(s.event_id, 0),
                                      s.answered_mono)
        elif s.ok and (s.event_id not in done_at or
                       s.answered_mono < done_at[s.event_id]):
            done_at[s.event_id] = s.answered_mono
    for s in seen:
        if s.event_id not in pos:
            out.append(f"a request for an event not in any outbox: "
                       f"{s.target}")
            continue
        room, k = pos[s.event_id]
        for j, earlier in enumerate(outbox_order[room][:k]):
            t = done_at.get(earlier)
            if t is None or t > s.arrived_mono:
                out.append(f"room {room}: entry {k} ({s.event_id}) sent "
                           f"at {s.arrived_ms} before entry {j} "
                           f"({earlier}) was "
                           + ("dead-lettered" if earlier in skip
                              else "answered 2xx"))
                break
    return out
