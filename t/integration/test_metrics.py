"""matrix_metrics against docs/directives.md "matrix_metrics": the real
nginx with 2 workers and a real redis-server; requests that go each way
(answered, handed over to the fallback, refused), then scrapes. Every
expected count is what this test sent, never a value read back from the
module. The counters are the machine's: every scrape, whichever worker
answers it, says the same, and a reload keeps them. Each scrape is also
checked by Debian's promtool (t/tools/promtool)."""

import re
import subprocess
import time

import pytest

from mxj_nginx import TOP, free_port
from test_make_join import MJ, Edge, mj_target, new_room, send

pytestmark = pytest.mark.timeout(120)

KS = "/_matrix/key/v2/server"
ERRCODES = ("M_FORBIDDEN", "M_UNAUTHORIZED", "M_NOT_FOUND", "M_LIMIT_EXCEEDED",
            "M_BAD_JSON", "M_NOT_JSON", "M_TOO_LARGE", "M_INVALID_PARAM",
            "M_UNRECOGNIZED", "M_INCOMPATIBLE_ROOM_VERSION",
            "M_UNABLE_TO_AUTHORISE_JOIN", "M_UNABLE_TO_GRANT_JOIN",
            "M_UNKNOWN", "other", "none")
REASONS = ("snapshot", "redis", "undecided")
FETCHES = ("fetched", "failed", "rate_limited", "too_many")
ENDPOINTS = ("make_join", "send_join", "directory", "key_server", "state",
             "event")
OUTCOMES = ("answered", "handed_over", "refused", "error")
LINE = re.compile(r'^(matrix_join_[a-z_]+)(?:\{([^}]*)\})? ([0-9]+)$')
LABEL = re.compile(r'([a-z_]+)="([^"]*)"(?:,|$)')
# a labelled counter's key in parse(): its first word, then label values
KEYS = {"matrix_join_requests_total": ("requests", "endpoint", "outcome"),
        "matrix_join_error_answers_total": ("errcode", "endpoint", "errcode"),
        "matrix_join_handed_over_total": ("handed_over", "endpoint",
                                          "reason"),
        "matrix_join_key_fetches_total": ("key_fetch", "result")}


def promtool():
    p = subprocess.run([str(TOP / "t" / "tools" / "promtool")],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        pytest.fail("promtool is needed (Debian's prometheus package, "
                    "downloaded by t/tools/promtool) and could not be had:\n"
                    + p.stderr)
    return p.stdout.strip()


def parse(text, zone=False):
    """{("requests", endpoint, outcome) | name: value}; every sample line
    must be one the documentation lists. The send_join cache's gauges
    (test_chunk_zone.py checks them) only with zone."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or line.startswith(DURATION):
            continue        # parse_durations() reads the histogram
        m = LINE.match(line)
        assert m, f"unexpected line {line!r}"
        name, labels, v = m.groups()
        if "_send_join_cache_" in name and not zone:
            continue
        lab = dict(LABEL.findall(labels or ""))
        if name in KEYS:
            first, *names = KEYS[name]
            assert sorted(lab) == sorted(names), line
            key = (first,) + tuple(lab[n] for n in names)
        elif lab:
            assert list(lab) == ["state"], line
            key = (name, lab["state"])
        else:
            key = name
        assert key not in out, f"{key} twice"
        out[key] = int(v)
    return out


DURATION = "matrix_join_request_duration_seconds"
HIST = re.compile(r'^' + DURATION + r'_(bucket|sum|count)\{endpoint="([a-z_]+)"'
                  r'(?:,le="([0-9.]+|\+Inf)")?\} ([0-9.]+)$')
BOUNDS = ["0.001", "0.002", "0.005", "0.010", "0.025", "0.050", "0.100",
          "0.250", "0.500", "1.000", "2.500", "10.000", "+Inf"]


def parse_durations(text):
    """{endpoint: {"le": [(bound, n)], "sum": s, "count": n}} of the
    histogram, each line checked."""
    out = {}
    for line in text.splitlines():
        if not line.startswith(DURATION):
            continue
        m = HIST.match(line)
        assert m, f"unexpected line {line!r}"
        kind, ep, le, v = m.groups()
        h = out.setdefault(ep, {"le": []})
        if kind == "bucket":
            h["le"].append((le, int(v)))
        else:
            h[kind] = float(v) if kind == "sum" else int(v)
    return out


def expected(base, more=(), **changes):
    """base with the counts the test sent added; keys as parse()'s:
    endpoint__outcome=n for matrix_join_requests_total, more for the
    others ({key: n})."""
    want = dict(base)
    for k, n in changes.items():
        ep, oc = k.split("__")
        want[("requests", ep, oc)] += n
    for k, n in dict(more).items():
        want[k] += n
    return want


class MetricsEdge(Edge):
    """test_make_join's edge (make_join, a fallback, Redis) plus a second
    server: matrix_metrics and the key server, on a port with reuseport so
    that the kernel spreads connections over both workers."""

    def start(self, **kw):
        self.mport = free_port()
        self.nginx.workers = 2
        return super().start(http_extra=f"""
            log_format mxjm '$pid $status $request_uri';
            server {{
                listen 127.0.0.1:{self.mport} reuseport;
                access_log $PREFIX/logs/metrics.log mxjm;
                location = /metrics {{
                    matrix_metrics;
                }}
                location = {KS} {{
                    matrix_key_server;
                }}
            }}
            """, **kw)

    def mget(self, target, method="GET"):
        import mxj_http
        return mxj_http.send(self.mport, method, target, self.our,
                             timeout=10)

    def scrape(self):
        rep = self.mget("/metrics")
        assert rep.status == 200, rep
        assert rep.header("content-type") == \
            "text/plain; version=0.0.4; charset=utf-8", rep.headers
        return rep.body.decode()

    def scrape_all(self, n=20, want=None):
        """n scrapes, each on a new connection: all the same; returns the
        parsed counts, the text, and the workers that answered. With
        want, first until a scrape counts want: a request is counted in
        its log phase, after its answer went out, so the scrape that
        follows it at once may reach the other worker first (bounded: a
        wrong count still fails, after 10 s)."""
        deadline = time.monotonic() + 10
        while want is not None and parse(self.scrape()) != want \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        log = self.nginx.prefix / "logs" / "metrics.log"
        before = len(log.read_text().splitlines()) if log.exists() else 0
        texts = [self.scrape() for _ in range(n)]
        assert len(set(texts)) == 1, "scrapes differ:\n" + "\n".join(
            sorted(set(texts)))
        deadline = time.monotonic() + 5
        while True:
            lines = log.read_text().splitlines()[before:]
            if len(lines) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        pids = {ln.split()[0] for ln in lines if "/metrics" in ln}
        return parse(texts[0]), texts[0], pids


@pytest.fixture
def medge(nginx, redis_server, tmp_path):
    e = MetricsEdge(nginx, redis_server, tmp_path)
    yield e
    e.stop()


def check_promtool(text, tmp_path):
    p = subprocess.run([promtool(), "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_counts_are_per_machine_exact_and_survive_reload(medge, tmp_path):
    room = new_room()
    medge.load(room)
    medge.start()

    base, text, _ = medge.scrape_all(4)
    check_promtool(text, tmp_path)
    # every series is there from the start, at 0
    assert set(k for k in base if isinstance(k, tuple)) == {
        ("requests", e, o) for e in ENDPOINTS for o in OUTCOMES} | {
        ("errcode", e, c) for e in ENDPOINTS for c in ERRCODES} | {
        ("handed_over", e, w) for e in ENDPOINTS for w in REASONS} | {
        ("key_fetch", f) for f in FETCHES}
    assert all(v == 0 for v in base.values()), base

    # answered: make_join of a cached room, key server GETs
    for _ in range(2):
        rep = medge.make_join(room.room_id)
        assert rep.status == 200, rep
    for _ in range(5):
        rep = medge.mget(KS)
        assert rep.status == 200, rep
    # handed over: make_join of rooms the cache does not hold
    for i in range(3):
        rep = medge.make_join(f"!uncached{i}:elsewhere.test")
        assert rep.status == 200 and rep.json() == {"from": "homeserver"}, \
            rep
    # refused: no X-Matrix authorization; a key server POST (405)
    for _ in range(4):
        rep = send(medge.port, mj_target(room.room_id, "@joiner:remote.test"))
        assert rep.status == 401, rep
    rep = medge.mget(KS, method="POST")
    assert rep.status == 405, rep

    want = expected(base, make_join__answered=2, key_server__answered=5,
                    make_join__handed_over=3, make_join__refused=4,
                    key_server__refused=1, more={
                        # no X-Matrix: 401; a POST to the key server: 405
                        ("errcode", "make_join", "M_UNAUTHORIZED"): 4,
                        ("errcode", "key_server", "M_UNRECOGNIZED"): 1,
                        # rooms the cache does not hold
                        ("handed_over", "make_join", "snapshot"): 3,
                        # the joiner's key, for every signed make_join
                        ("key_fetch", "fetched"): 1})
    assert medge.keys.count() == 1, "the key server answered one fetch"
    got, text, pids = medge.scrape_all(20, want)
    assert got == want
    assert len(pids) == 2, f"the scrapes reached workers {pids} only"
    check_promtool(text, tmp_path)
    # every request counted is in its endpoint's duration histogram once
    durations = parse_durations(text)
    assert sorted(durations) == sorted(ENDPOINTS), durations
    for ep, h in durations.items():
        sent = sum(want[("requests", ep, o)] for o in OUTCOMES)
        assert [b for b, _ in h["le"]] == BOUNDS, h
        counts = [n for _, n in h["le"]]
        assert counts == sorted(counts), h       # cumulative
        assert counts[-1] == h["count"] == sent, (ep, h, sent)
    # the homeserver saw the three handed over, nothing else
    assert len(medge.rec.requests) == 3, medge.rec.requests

    # a reload keeps the zone, and the counting goes on
    medge.nginx.reload()
    got, _, pids = medge.scrape_all(20)
    assert got == want
    rep = medge.mget(KS)
    assert rep.status == 200, rep
    rep = medge.make_join(room.room_id)
    assert rep.status == 200, rep
    want = expected(want, key_server__answered=1, make_join__answered=1)
    got, text, _ = medge.scrape_all(10, want)
    assert got == want
    check_promtool(text, tmp_path)


def test_metrics_method_and_redis_errors(medge, tmp_path):
    medge.start()
    rep = medge.mget("/metrics", method="POST")
    assert rep.status == 405, rep
    # a make_join while Redis is gone is handed over (the edge cannot
    # decide) and counts Redis errors
    medge.redis.stop()
    rep = medge.make_join("!any:elsewhere.test")
    assert rep.status == 200 and rep.json() == {"from": "homeserver"}, rep
    got, text, _ = medge.scrape_all(6)
    assert got[("requests", "make_join", "handed_over")] == 1
    assert {w: got[("handed_over", "make_join", w)] for w in REASONS} == \
        {"snapshot": 0, "redis": 1, "undecided": 0}
    assert got["matrix_join_redis_errors_total"] >= 1
    check_promtool(text, tmp_path)
