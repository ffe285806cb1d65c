"""docs/operations.md and README.md stay true to the code: every complete
nginx configuration in them passes `nginx -t` with the module (its files
replaced by test ones) and routes each kind of request where the document
says (recording upstreams stand in for the homeserver's processes), the
documented limit_req limits, every matrix_* directive they name is
documented in docs/directives.md (a metric: there or in docs/cli.md),
and every matrix-join-ctl command and
option they use is in `matrix-join-ctl help`."""

import http.client
import re
import ssl
import subprocess
import sys

import pytest

from mxj_nginx import CTL, TOP, Nginx, free_port

sys.path.insert(0, str(TOP / "t" / "lib"))
from mxj_remote import Recorder  # noqa: E402

pytestmark = pytest.mark.timeout(120)

DOCS = [TOP / "docs" / "operations.md", TOP / "README.md"]
OPERATIONS = TOP / "docs" / "operations.md"

# options of other programs that the documents use, by program
OTHER_OPTIONS = {
    "--add-module": "nginx's configure", "--with-compat": "nginx's configure",
    "--add-dynamic-module": "nginx's configure",
    "--resolve": "curl", "--scan": "redis-cli", "--pattern": "redis-cli",
    "--now": "systemctl", "--once": "t/run and matrix-join-ctl forward",
    "--asan": "t/build and t/test", "--jobs": "t/test",
    "--seconds": "t/fuzz/run",
    "--runs": "t/fuzz/run",
    "--help": "t/run", "--user": "t/lib/mxj_demo.py join",
}


def blocks(path, lang):
    text = path.read_text()
    return re.findall(r"```" + lang + r"\n(.*?)```", text, re.S)


def ctl_help():
    return subprocess.run([str(CTL), "help"], capture_output=True,
                          text=True, timeout=30).stdout


def configs():
    """operations.md's two, then README's minimal one."""
    return [b for path in (OPERATIONS, TOP / "README.md")
            for b in blocks(path, "nginx") if "server {" in b]


def test_operations_has_both_configurations():
    cs = configs()
    assert len(cs) == 3, f"{len(cs)} complete configurations"
    assert "synapse_federation" in cs[1]


def with_test_files(conf, tmp_path):
    """conf with its files replaced by test ones made in tmp_path."""
    key = tmp_path / "signing.key"
    key.write_text(subprocess.run([str(CTL), "keygen", "example.org"],
                                  capture_output=True, text=True,
                                  check=True).stdout)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=matrix.example.org",
                    "-keyout", str(tmp_path / "privkey.pem"),
                    "-out", str(tmp_path / "fullchain.pem")],
                   capture_output=True, check=True, timeout=60)
    conf = conf.replace("/etc/matrix-synapse/homeserver.signing.key",
                        str(key))
    conf = re.sub(r"/etc/letsencrypt/live/[^/]+/", str(tmp_path) + "/", conf)
    conf = conf.replace("/var/log/nginx/", str(tmp_path) + "/")
    assert "/etc/" not in conf, "a path the test did not replace"
    return conf


@pytest.mark.parametrize("which", [0, 1, 2])
def test_configuration_passes_nginx_t(which, tmp_path):
    n = Nginx()
    try:
        n.write_conf(with_test_files(configs()[which], tmp_path))
        rc, out = n.test_config()
        assert rc == 0, out + "\n" + n.conf_path.read_text()
    finally:
        n.cleanup()


def get(port, method, target, origin="r.test", times=1):
    """The statuses of times requests, one after the other on one
    keep-alive connection (one TLS handshake for all of them)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=20,
                                       context=ctx)
    statuses = []
    try:
        for _ in range(times):
            conn.request(method, target,
                         body=b"{}" if method == "PUT" else None,
                         headers={"Authorization": f'X-Matrix origin='
                                  f'"{origin}",key="ed25519:k",sig="AAAA"'})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
    finally:
        conn.close()
    return statuses[0] if times == 1 else statuses


class DocumentedEdge:
    """A configuration of the document on a loopback port: each upstream
    a Recorder, the fallback location's upstream one of its own
    ("fallback"), Redis unreachable (so the module sends every join
    request to the fallback)."""

    def __init__(self, which, tmp_path):
        conf = with_test_files(configs()[which], tmp_path)
        self.names = re.findall(r"^upstream (\w+) \{", conf, re.M)
        fb = re.search(r"location @homeserver \{\s*proxy_pass "
                       r"http://(\w+);", conf)
        assert fb, "no location @homeserver that proxies to an upstream"
        conf = conf.replace(fb.group(0), fb.group(0).replace(
            f"http://{fb.group(1)};", "http://fallback;"))
        conf = "upstream fallback {\n}\n" + conf
        self.recorders = {k: Recorder() for k in self.names + ["fallback"]}
        self.nginx = n = Nginx()
        for name, rec in self.recorders.items():
            conf = re.sub(r"(upstream " + name + r" \{)(.*?)(\})",
                          lambda m: f"{m.group(1)}\n    server "
                                    f"{rec.address};\n{m.group(3)}",
                          conf, flags=re.S)
        listens = re.findall(r"\n\s*listen [^;]*;", conf)
        assert listens, "no listen"
        conf = conf.replace(listens[0],
                            f"\n    listen 127.0.0.1:{n.port} ssl;")
        for extra in listens[1:]:
            conf = conf.replace(extra, "")
        assert "listen 127.0.0.1:" in conf
        conf = conf.replace("matrix_redis         127.0.0.1:6379;",
                            f"matrix_redis         127.0.0.1:{free_port()};")
        n.write_conf(conf)

    def __enter__(self):
        self.nginx.start()
        return self

    def __exit__(self, *exc):
        self.nginx.stop()
        self.nginx.cleanup()
        for r in self.recorders.values():
            r.stop()

    def counts(self):
        return {k: len(r.requests) for k, r in self.recorders.items()}


# where Synapse's worker routing sends each request (docs/operations.md,
# section 4); the join endpoints and the state reads reach the module,
# which sends rooms it has not cached (here: every room, Redis being
# down) to the fallback
ROUTES = [
    ("GET", "/_matrix/federation/v1/make_join/%21a%3Ab.c/%40u%3Ar.test"
            "?ver=10", "fallback"),
    ("PUT", "/_matrix/federation/v2/send_join/%21a%3Ab.c/%24e", "fallback"),
    ("PUT", "/_matrix/federation/v1/send_join/%21a%3Ab.c/%24e", "fallback"),
    ("GET", "/_matrix/federation/v1/query/directory?room_alias=%23a%3Ab.c",
     "fallback"),
    ("PUT", "/_matrix/federation/v1/send/txn1", "synapse_inbound"),
    ("PUT", "/_matrix/federation/v1/send_leave/%21a%3Ab.c/%24e",
     "synapse_federation"),
    ("GET", "/_matrix/federation/v1/state/%21a%3Ab.c?event_id=%24e",
     "fallback"),
    ("GET", "/_matrix/federation/v1/state_ids/%21a%3Ab.c?event_id=%24e",
     "fallback"),
    ("GET", "/_matrix/federation/v1/event/%24e", "fallback"),
    ("GET", "/_matrix/federation/v1/backfill/%21a%3Ab.c?v=%24e",
     "synapse_federation"),
    ("GET", "/_matrix/federation/v1/version", "synapse_federation"),
    ("GET", "/_matrix/key/v2/query/r.test", "synapse_federation"),
    ("GET", "/_matrix/federation/v1/media/download/x", "synapse_media"),
    ("GET", "/_matrix/key/v2/server", "synapse_main"),
    ("GET", "/_matrix/client/versions", "synapse_main"),
    ("GET", "/_synapse/client/pick_idp", "synapse_main"),
]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_documented_routing(which, tmp_path):
    """Each request reaches the upstream the document means, with the raw
    URI (nothing re-encoded), through the module's fallback for the join
    endpoints."""
    with DocumentedEdge(which, tmp_path) as e:
        for method, target, where in ROUTES:
            if where not in e.recorders:
                where = e.names[0]      # one homeserver: the rest of it
            before = e.counts()
            status = get(e.nginx.port, method, target)
            got = [k for k, c in e.counts().items() if c > before[k]]
            assert got == [where], f"{method} {target}: {status}, went to " \
                                   f"{got}, not {where}"
            assert e.recorders[where].requests[-1].target == target


@pytest.mark.no_valgrind    # under valgrind 40 requests outlast the rate
@pytest.mark.serial         # and so they do on a loaded machine
@pytest.mark.parametrize("which", [0, 1])
def test_documented_rate_limit(which, tmp_path):
    """limit_req on the claimed origin: one origin sending make_join
    requests faster than rate and burst gets 429s; another origin at the
    same time does not."""
    target = "/_matrix/federation/v1/make_join/%21a%3Ab.c/%40u%3Aa.test"
    with DocumentedEdge(which, tmp_path) as e:
        # 40 requests on one connection: 1 + burst 20 pass, the rest come
        # faster than 10 r/s refills unless the machine is very slow
        statuses = get(e.nginx.port, "GET", target, origin="a.test",
                       times=40)
        assert 429 in statuses and statuses[0] == 200, statuses
        assert get(e.nginx.port, "GET", target, origin="b.test") == 200


def test_directives_named_exist():
    directives = (TOP / "docs" / "directives.md").read_text()
    documented = set(re.findall(r"^### (matrix_[a-z_]+)$", directives, re.M))
    # the metrics, from the table of "matrix_metrics" and cli.md's of
    # forward --metrics and sync --metrics
    for text in (directives, (TOP / "docs" / "cli.md").read_text()):
        documented |= set(re.findall(r"^\| `(matrix_join_[a-z_]+)", text,
                                     re.M))
    variables = {"matrix_origin", "matrix_key_fetch_server",
                 "matrix_key_fetch_key_id"}
    for path in DOCS:
        named = set(re.findall(r"(?<![\w$])matrix_[a-z_]+",
                               path.read_text()))
        unknown = sorted(named - documented - variables)
        assert not unknown, f"{path.name}: not in directives.md: {unknown}"


def test_ctl_commands_and_options_exist():
    helptext = ctl_help()
    commands = set(re.findall(r"^  ([a-z]+) ", helptext, re.M))
    assert {"sync", "forward", "load"} <= commands, helptext
    for path in DOCS:
        text = path.read_text()
        for cmd in re.findall(r"matrix-join-ctl (?:`)?([a-z]+)", text):
            assert cmd in commands, f"{path.name}: matrix-join-ctl {cmd}"
        for opt in set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text)):
            assert opt in helptext or opt in OTHER_OPTIONS, \
                f"{path.name}: {opt} is in no help text"
