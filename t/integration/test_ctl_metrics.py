"""`matrix-join-ctl forward --metrics` and `sync --metrics` against
docs/cli.md ("--metrics") and docs/operations.md (section 10, "Metrics"),
and the module's send_join and directory counters against
docs/directives.md ("matrix_metrics").

The work is real: joining servers (t/lib/mxj_joiner.py) ask the real edge
(Debian's nginx with the module, redis-server, on 127.0.0.1) for
templates, sign joins and send them; the forwarder replays them to the
stand-in homeserver of test_forwarder.py (t/lib/mxj_upstream.py), which
answers as each test tells it; sync pulls a room from the stand-in of
test_sync.py (t/lib/mxj_homeserver.py), which pushes its changes through
the Application Service API. Every expected count is what the test sent
or what the stand-ins recorded, never a value read back from the code
under test. Every scrape is also checked by Debian's promtool
(t/tools/promtool)."""

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from mxj_nginx import CTL, TOP, free_port
from test_forwarder import FwdEdge, fw, new_room, request, why  # noqa: F401
from test_metrics import promtool
from test_sync import (REMOTE, daemons, hs_factory, key,  # noqa: F401
                       meta_of, wait_for)

pytestmark = pytest.mark.timeout(180)

DIR = "/_matrix/federation/v1/query/directory"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# -- reading a scrape ---------------------------------------------------------

def parse(text):
    """{(name, ((label, value), ...)): float} of every sample, and the
    {name: type} of the TYPE lines. A sample twice is an error."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, _, labels, value = m.groups()
        lab = tuple(sorted((k, v.replace('\\"', '"').replace("\\\\", "\\"))
                           for k, v in LABEL.findall(labels or "")))
        k = (name, lab)
        assert k not in samples, f"{k} twice"
        samples[k] = float(value)
    return samples, types


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == CONTENT_TYPE, r.headers
        return r.read().decode()


def check_promtool(text):
    p = subprocess.run([promtool(), "check", "metrics"], input=text,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr + "\n" + text


class Scrape:
    def __init__(self, text):
        self.text = text
        self.samples, self.types = parse(text)

    def get(self, name, **labels):
        k = (name, tuple(sorted(labels.items())))
        assert k in self.samples, f"no sample {k} in:\n{self.text}"
        return self.samples[k]

    def series(self, name):
        """{labels dict as a tuple: value} of one metric."""
        return {lab: v for (n, lab), v in self.samples.items() if n == name}

    def rooms(self, name):
        return {dict(lab)["room"]: v for lab, v in self.series(name).items()}


def scraped(port, path="/metrics"):
    text = scrape(port, path)
    check_promtool(text)
    return Scrape(text)


def http_status(port, method, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def status_classes(statuses):
    """{"2xx": n, ...} of HTTP statuses (None: no answer: "none")."""
    out = {c: 0 for c in ("1xx", "2xx", "3xx", "4xx", "5xx", "none")}
    for s in statuses:
        out["none" if not s else f"{s // 100}xx"] += 1
    return out


# -- the edge with matrix_metrics and the directory ---------------------------

EDGE_LOCATIONS = f"""
    location = {DIR} {{
        matrix_directory;
    }}
    location = /_mxj/metrics {{
        matrix_metrics;
    }}
"""


@pytest.fixture
def medge(nginx, redis_server, tmp_path):
    e = FwdEdge(nginx, redis_server, tmp_path)
    yield e
    e.stop()


def edge_scrape(edge):
    status, body = request(edge.port, "GET", "/_mxj/metrics")
    assert status == 200, (status, body[:300])
    text = body.decode()
    check_promtool(text)
    return Scrape(text)


def directory(edge, alias, signed=True):
    target = DIR + "?room_alias=" + urllib.parse.quote(alias, safe="")
    remote = edge.remotes[0]
    auth = [remote.auth_header("GET", target, "s0.example.org")] \
        if signed else []
    return request(edge.port, "GET", target, auth=auth)


def test_edge_counts_send_join_and_directory_then_forward_delivers_them(
        medge):
    """The module's counters after known requests: 4 joins accepted at the
    edge (make_join and send_join answered 4 times each), one of them sent
    again (answered, not accepted again), one send_join refused (no
    X-Matrix), directory queries answered (a cached alias), handed over
    (an alias the cache does not hold) and refused (unsigned). Then the
    forwarder, with --metrics, delivers the 4 joins to the stand-in
    homeserver: delivered_total is 4, every attempt a 2xx, the lag
    histogram holds 4 observations, each room's outbox at 0."""
    room = new_room("10")
    medge.load(room).start(locations=EDGE_LOCATIONS)
    base = edge_scrape(medge)

    sent = medge.joins(room, 4)
    # the same send_join again: the join is answered, not accepted twice
    again = sent[-1]
    status, _ = request(medge.port, "PUT", again.target, auth=[again.auth],
                        body=again.body)
    assert status == 200
    # a send_join without X-Matrix: refused
    status, _ = request(medge.port, "PUT", sent[0].target, body=sent[0].body)
    assert status == 401
    # the directory: answered, handed over, refused
    for _ in range(3):
        status, body = directory(medge, room.alias)
        assert status == 200 and json.loads(body)["room_id"] == \
            room.room_id, body[:300]
    for _ in range(2):
        status, body = directory(medge, "#nowhere:elsewhere.test")
        assert status == 200 and json.loads(body) == {"from": "fallback"}
    status, _ = directory(medge, room.alias, signed=False)
    assert status == 401

    got = edge_scrape(medge)

    def delta(endpoint, outcome):
        n = "matrix_join_requests_total"
        return got.get(n, endpoint=endpoint, outcome=outcome) - \
            base.get(n, endpoint=endpoint, outcome=outcome)

    assert delta("make_join", "answered") == 4
    assert delta("send_join", "answered") == 5
    assert delta("send_join", "refused") == 1
    assert delta("send_join", "handed_over") == 0
    assert delta("send_join", "error") == 0
    assert delta("directory", "answered") == 3
    assert delta("directory", "handed_over") == 2
    assert delta("directory", "refused") == 1
    assert delta("directory", "error") == 0
    assert got.get("matrix_join_send_join_accepted_total") - \
        base.get("matrix_join_send_join_accepted_total") == 4
    assert len(fw.outbox_ids(medge.r, room.room_id)) == 4

    # the forwarder delivers them; its scrape says so
    mport = free_port()
    f = medge.forwarder("--metrics", f"127.0.0.1:{mport}")
    f.start()
    try:
        medge.upstream.wait_delivered([s.event_id for s in sent], 30)
        wait_for("the outbox looked at empty", lambda: scraped(mport).rooms(
            "matrix_join_forward_outbox_entries").get(room.room_id) == 0,
            10, step=0.05)
        wait_for("four deliveries counted", lambda: scraped(mport).get(
            "matrix_join_forward_delivered_total") >= 4, 10, step=0.05)
        s = scraped(mport)
        seen = medge.upstream.requests()
        assert len(seen) == 4, why(f, seen)
        assert s.get("matrix_join_forward_delivered_total") == 4
        assert s.get("matrix_join_forward_dead_letters_total") == 0
        assert s.get("matrix_join_forward_retries_total") == 0
        for cls, n in status_classes(x.status for x in seen).items():
            assert s.get("matrix_join_forward_attempts_total",
                         status_class=cls) == n, cls
        assert s.get("matrix_join_forward_delivery_lag_seconds_count") == 4
        assert s.get("matrix_join_forward_delivery_lag_seconds_bucket",
                     le="+Inf") == 4
        assert s.get("matrix_join_forward_redis_errors_total") == 0
        assert s.rooms("matrix_join_forward_outbox_oldest_age_seconds") \
            .get(room.room_id) == 0
        assert s.types["matrix_join_forward_delivered_total"] == "counter"
        assert s.types["matrix_join_forward_outbox_entries"] == "gauge"
        assert s.types["matrix_join_forward_delivery_lag_seconds"] == \
            "histogram"
        # only GET /metrics
        assert http_status(mport, "GET", "/other") == 404
        assert http_status(mport, "POST", "/metrics") == 405
    finally:
        f.stop()


def test_forward_metrics_retries_dead_letters_and_outbox_gauges(medge):
    """Room A: 3 joins delivered at once. Room B: its first join refused
    (403) every time: with --max-attempts 2 one retry, then a dead letter;
    its second join delivered. Room C: its first join answered 500 once,
    retried, delivered, then its second. The counts are the stand-in's
    record of what it answered. Then room D's joins are answered 500 for
    ever: its outbox gauge says 2 entries, and the oldest one's age lies
    between what the test measured around its send_join and the scrape.
    Redis stopped: Redis errors are counted."""
    a, b, c, d = (new_room("10") for _ in range(4))
    medge.load(a, b, c, d).start()
    sa = medge.joins(a, 3)
    sb = medge.joins(b, 2)
    sc = medge.joins(c, 2)
    from mxj_upstream import Answer
    medge.upstream.on(Answer(403, {"errcode": "M_FORBIDDEN",
                                   "error": "refused on purpose"}),
                      event_id=sb[0].event_id)
    medge.upstream.on(Answer(500, {"errcode": "M_UNKNOWN"}),
                      event_id=sc[0].event_id, times=1)
    mport = free_port()
    f = medge.forwarder("--metrics", f"127.0.0.1:{mport}",
                        "--max-attempts", "2")
    f.start()
    try:
        ok = [x.event_id for x in sa + sb[1:] + sc]
        medge.upstream.wait_delivered(ok, 60)
        wait_for("the dead letter", lambda: len(fw.dead_entries(
            medge.r, b.room_id)) == 1, 30)
        wait_for("every outbox looked at empty", lambda: all(
            v == 0 for v in scraped(mport).rooms(
                "matrix_join_forward_outbox_entries").values()), 10,
            step=0.05)
        wait_for("six deliveries counted", lambda: scraped(mport).get(
            "matrix_join_forward_delivered_total") >= 6, 10, step=0.05)
        s = scraped(mport)
        seen = medge.upstream.requests()
        assert len(seen) == 3 + 2 + 1 + 3, why(f, seen)
        assert s.get("matrix_join_forward_delivered_total") == 6
        assert s.get("matrix_join_forward_dead_letters_total") == 1
        # B's first 403 and C's 500 were followed by another attempt
        assert s.get("matrix_join_forward_retries_total") == 2
        want = status_classes(x.status for x in seen)
        assert want["2xx"] == 6 and want["4xx"] == 2 and want["5xx"] == 1
        for cls, n in want.items():
            assert s.get("matrix_join_forward_attempts_total",
                         status_class=cls) == n, cls
        assert s.get("matrix_join_forward_delivery_lag_seconds_count") == 6
        assert set(s.rooms("matrix_join_forward_outbox_entries")) == \
            {a.room_id, b.room_id, c.room_id, d.room_id}

        # D: answered 500 for ever, its two entries stay
        medge.upstream.on(Answer(500, {"errcode": "M_UNKNOWN"}),
                          room_id=d.room_id)
        sd = medge.joins(d, 2)
        wait_for("D's outbox looked at", lambda: scraped(mport).rooms(
            "matrix_join_forward_outbox_entries").get(d.room_id) == 2, 10,
            step=0.05)
        t0 = time.time() * 1000
        s = scraped(mport)
        t1 = time.time() * 1000
        age = s.rooms("matrix_join_forward_outbox_oldest_age_seconds")[
            d.room_id] * 1000
        # the entry's ID is Redis's clock during D's first send_join
        assert t0 - sd[0].t1 - 1 <= age <= t1 - sd[0].t0 + 1, \
            (age, t0 - sd[0].t1, t1 - sd[0].t0)
        assert s.get("matrix_join_forward_delivered_total") == 6

        medge.redis.stop()
        wait_for("Redis errors counted", lambda: scraped(mport).get(
            "matrix_join_forward_redis_errors_total") >= 1, 20, step=0.1)
    finally:
        f.stop()


def test_forward_delivers_while_scrapers_hang(medge):
    """As many scrapers as the listener takes (8), each stopped halfway
    through its request head: joins made meanwhile are delivered all the
    same (the listener is a thread of its own), and once the scrapers go
    a scrape counts them."""
    room = new_room("10")
    medge.load(room).start()
    mport = free_port()
    f = medge.forwarder("--metrics", f"127.0.0.1:{mport}")
    f.start()
    socks = []
    try:
        def listening():
            try:
                return scrape(mport) != ""
            except urllib.error.URLError:
                return False
        wait_for("the listener", lambda: listening() or not f.running(), 20)
        assert f.running(), why(f)
        for _ in range(8):
            c = socket.create_connection(("127.0.0.1", mport), timeout=10)
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(c)
        sent = medge.joins(room, 3)
        medge.upstream.wait_delivered([x.event_id for x in sent], 30)
        for c in socks:
            c.close()
        socks = []
        wait_for("a scrape again", lambda: listening(), 20, step=0.1)
        # the homeserver's 200 comes before the forwarder has counted and
        # acknowledged the entry: as the other tests, until the outbox
        # reads empty
        wait_for("the outbox looked at empty", lambda: scraped(mport).rooms(
            "matrix_join_forward_outbox_entries").get(room.room_id) == 0,
            10, step=0.05)
        wait_for("three deliveries counted", lambda: scraped(mport).get(
            "matrix_join_forward_delivered_total") >= 3, 10, step=0.05)
        assert scraped(mport).get("matrix_join_forward_delivered_total") == 3
    finally:
        for c in socks:
            c.close()
        f.stop()


def test_forward_metrics_port_taken_exits_1(redis_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = subprocess.run([str(CTL), "forward", "--redis",
                            redis_server.address, "--upstream",
                            "http://127.0.0.1:1", "--metrics",
                            f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p.stderr
    assert f"cannot listen on 127.0.0.1:{port} (--metrics)" in p.stderr


# -- sync ---------------------------------------------------------------------

def as_put(port, token, txn, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/_matrix/app/v1/transactions/{txn}",
        data=body, method="PUT",
        headers={"Authorization": f"Bearer {token}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def hs_classes(hs):
    return status_classes(h.status for h in hs.hits_since(0))


def test_sync_metrics_after_a_pass_pushes_and_a_stale_mark(
        redis_server, hs_factory, daemons, tmp_path):
    """sync --every 1h with the Application Service and --metrics: after
    its first pass, one pass loaded, the room's snapshot loaded once,
    not stale, nothing pending, its age no more than the time since the
    test started sync; every request the stand-in homeserver recorded,
    by status class. Then the stand-in posts 3 messages, each pushed in
    its own transaction: 3 transactions accepted, 3 events, 3 events
    applied in place. A transaction sent again is counted repeated, one
    that is not JSON refused. The room marked stale in Redis: the gauge
    follows. Redis stopped: Redis errors are counted."""
    # one forward extremity: each message follows the snapshot's
    hs = hs_factory(members=20, servers=3, extremities=1)
    rid = hs.room.room_id
    client = redis_server.client()
    as_port, mport = free_port(), free_port()
    reg = tmp_path / "registration.yaml"
    started = time.time()
    dmn = daemons(redis_server, hs, tmp_path, "--every", "1h",
                  "--appservice-listen", f"127.0.0.1:{as_port}",
                  "--registration", reg, "--metrics", f"127.0.0.1:{mport}",
                  rid).start()

    def loaded():
        try:
            return scraped(mport).get("matrix_join_sync_passes_total",
                                      outcome="loaded") == 1
        except urllib.error.URLError:      # not listening yet
            return False

    wait_for("the first pass", lambda: loaded() or not dmn.running(), 60,
             step=0.1)
    assert dmn.running(), dmn.log()
    assert meta_of(client, rid).get("generation"), dmn.log()
    registration = hs.use_registration(reg, auto_push=True)

    s = scraped(mport)
    assert s.get("matrix_join_sync_passes_total", outcome="unchanged") == 0
    assert s.get("matrix_join_sync_passes_total", outcome="failed") == 0
    assert s.get("matrix_join_sync_pass_duration_seconds_count") == 1
    assert s.rooms("matrix_join_sync_snapshot_loads_total") == {rid: 1}
    assert s.rooms("matrix_join_sync_snapshot_stale") == {rid: 0}
    assert s.rooms("matrix_join_sync_live_pending") == {rid: 0}
    assert s.rooms("matrix_join_sync_edge_joins") == {rid: 0}
    age = s.rooms("matrix_join_sync_snapshot_age_seconds")[rid]
    assert 0 <= age <= time.time() - started, age
    for cls, n in hs_classes(hs).items():
        assert s.get("matrix_join_sync_homeserver_requests_total",
                     status_class=cls) == n, (cls, hs.hits_since(0))
    assert sum(s.series("matrix_join_sync_homeserver_requests_total")
               .values()) == hs.count()
    assert s.get("matrix_join_sync_appservice_transactions_total",
                 outcome="accepted") == 0
    assert s.get("matrix_join_sync_redis_errors_total") == 0
    assert s.types["matrix_join_sync_pass_duration_seconds"] == "histogram"
    assert s.types["matrix_join_sync_snapshot_age_seconds"] == "gauge"

    # three messages, each pushed: applied in place, no pass
    for i in range(3):
        hs.message(body=f"m{i}")
    pushes = [p for p in hs.pushes]
    assert len(pushes) == 3 and all(p[1] == 200 for p in pushes), pushes
    try:
        wait_for("3 events applied", lambda: scraped(mport).get(
            "matrix_join_sync_live_events_applied_total") == 3, 30,
            step=0.05)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{scrape(mport)}\n{dmn.log()}")
    s = scraped(mport)
    assert s.get("matrix_join_sync_appservice_transactions_total",
                 outcome="accepted") == 3
    assert s.get("matrix_join_sync_appservice_events_total") == \
        sum(len(p[4]) for p in pushes) == 3
    assert s.get("matrix_join_sync_passes_total", outcome="loaded") == 1
    for cls, n in hs_classes(hs).items():
        assert s.get("matrix_join_sync_homeserver_requests_total",
                     status_class=cls) == n, (cls, hs.hits_since(0))

    # the same transaction again; one that is not JSON
    token = registration["hs_token"]
    body = json.dumps({"events": pushes[0][4]}).encode()
    assert as_put(as_port, token, pushes[0][0], body) == 200
    assert as_put(as_port, token, "garbage-1", b"{not json") == 400
    s = scraped(mport)
    assert s.get("matrix_join_sync_appservice_transactions_total",
                 outcome="repeated") == 1
    assert s.get("matrix_join_sync_appservice_transactions_total",
                 outcome="refused") == 1
    assert s.get("matrix_join_sync_appservice_transactions_total",
                 outcome="accepted") == 3

    # the gauges follow Redis (read by sync's loop every second)
    client.hset(key(rid, "meta"), mapping={"stale": "1", "edge_joins": "7"})
    wait_for("stale seen", lambda: scraped(mport).rooms(
        "matrix_join_sync_snapshot_stale").get(rid) == 1, 10, step=0.1)
    assert scraped(mport).rooms("matrix_join_sync_edge_joins") == {rid: 7}

    redis_server.stop()
    wait_for("Redis errors counted", lambda: scraped(mport).get(
        "matrix_join_sync_redis_errors_total") >= 1, 20, step=0.1)


# -- the documents name only what a scrape has --------------------------------

DOCS = TOP / "docs"
METRIC = re.compile(r"\bmatrix_join_[a-z_]+\b")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def documented_metrics():
    """The metric names of the tables of directives.md (matrix_metrics)
    and cli.md (--metrics)."""
    names = set()          # the rows of a metric: name, then its type
    for doc in ("directives.md", "cli.md"):
        names |= {n for n, _ in re.findall(
            r"^\| `(matrix_join_[a-z_]+)[^`]*` \| (counter|gauge|histogram) "
            r"\|", (DOCS / doc).read_text(), re.M)}
    return names


def rule_blocks():
    text = (DOCS / "operations.md").read_text()
    return [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S)
            if b.startswith("groups:")]


def check_rules(text, tmp_path, name):
    path = tmp_path / name
    path.write_text(text)
    p = subprocess.run([promtool(), "check", "rules", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr + "\n" + text


def test_documented_metrics_dashboard_and_alerts_name_scraped_metrics(
        medge, hs_factory, daemons, tmp_path):  # noqa: F811
    """A real scrape of each of the three targets (the edge's
    matrix_metrics, forward --metrics, sync --metrics, each with a room):
    the metrics the documents' tables list are exactly the ones scraped
    (a histogram by its name); every metric the alert rules of
    operations.md and the PromQL of docs/grafana-dashboard.json name is
    scraped; promtool accepts the rules, and the dashboard's expressions
    as rules too (its $__rate_interval as 5m); the dashboard is an
    importable one (schemaVersion, panels with a position and a
    Prometheus data source from its __inputs)."""
    room = new_room("10")
    medge.load(room).start(locations=EDGE_LOCATIONS)
    medge.joins(room, 1)
    fport = free_port()
    f = medge.forwarder("--metrics", f"127.0.0.1:{fport}")
    f.start()
    hs = hs_factory(members=10, servers=2)
    sport = free_port()
    dmn = daemons(medge.redis, hs, tmp_path, "--every", "1h", "--metrics",
                  f"127.0.0.1:{sport}", hs.room.room_id).start()
    try:
        def ready():
            try:
                return (scraped(sport).get("matrix_join_sync_passes_total",
                                           outcome="loaded") == 1
                        and room.room_id in scraped(fport).rooms(
                            "matrix_join_forward_outbox_entries"))
            except urllib.error.URLError:
                return False
        wait_for("sync's pass and the forwarder's look", lambda: ready()
                 or not dmn.running() or not f.running(), 60, step=0.1)
        assert dmn.running(), dmn.log()
        assert f.running(), why(f)
        scrapes = [edge_scrape(medge), scraped(fport), scraped(sport)]
    finally:
        f.stop()
    produced = {name for s in scrapes for (name, _) in s.samples}
    types = {}
    for s in scrapes:
        types.update(s.types)
    # a histogram's samples are its _bucket, _sum and _count
    for name, typ in types.items():
        if typ == "histogram":
            assert {name + x for x in HIST_SUFFIXES} <= produced, name
    bases = {n for n in produced
             if not (n.endswith(HIST_SUFFIXES) and n.rsplit("_", 1)[0]
                     in types)} | set(types)
    assert documented_metrics() == bases, \
        (sorted(documented_metrics() - bases),
         sorted(bases - documented_metrics()))

    # the alert rules
    blocks = rule_blocks()
    assert blocks, "operations.md has no alert rules"
    alerts = []
    for i, b in enumerate(blocks):
        check_rules(b, tmp_path, f"rules{i}.yml")
        for g in yaml.safe_load(b)["groups"]:
            for r in g["rules"]:
                named = set(METRIC.findall(r["expr"]))
                assert named <= produced, (r["alert"],
                                           sorted(named - produced))
                alerts.append(r["expr"])
    alerts = "\n".join(alerts)
    for name in ("matrix_join_sync_snapshot_age_seconds",
                 "matrix_join_forward_outbox_oldest_age_seconds",
                 "matrix_join_forward_dead_letters_total",
                 "matrix_join_requests_total"):
        assert name in alerts, name

    # the dashboard
    d = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert isinstance(d["schemaVersion"], int) and d["title"] and d["uid"]
    (ds,) = [i for i in d["__inputs"] if i["type"] == "datasource"]
    assert ds["pluginId"] == "prometheus"
    exprs = []
    graphs = [p for p in d["panels"] if p["type"] != "row"]
    assert graphs
    for p in d["panels"]:
        assert set(p["gridPos"]) == {"h", "w", "x", "y"}, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${" + ds["name"] + "}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            named = set(METRIC.findall(t["expr"]))
            assert named and named <= produced, \
                (p["title"], sorted(named - produced))
            exprs.append(t["expr"].replace("$__rate_interval", "5m"))
    rules = "groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:expr{i}\n        expr: {json.dumps(e)}\n"
        for i, e in enumerate(exprs))
    check_rules(rules, tmp_path, "dashboard.yml")
    # what the issue asks the dashboard to show
    shown = " ".join(exprs)
    for name in ("matrix_join_forward_outbox_entries",
                 "matrix_join_sync_snapshot_age_seconds",
                 "matrix_join_forward_dead_letters_total",
                 "matrix_join_requests_total"):
        assert name in shown, name
