"""X-Matrix request authentication, remote key fetch, the directory query
and the fallback to the homeserver, against the contract in
docs/directives.md ("Federation requests: authentication, the directory,
the fallback") and reference §3-§4 (shared/reference/matrix-join.md).

The judges are independent of our C code: requests and key documents are
signed by t/lib/mxj_remote.py on matrix-org's python3-signedjson, rooms
come from t/lib/mxj_room.py, the expected directory answer is computed
from the generator's own events, and the homeserver behind the fallback
is a Recorder that shows exactly what nginx passed on. Every server is on
127.0.0.1; every request has a timeout."""

import json
import random
import re
import string
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from mxj_nginx import CTL, TOP

sys.path.insert(0, str(TOP / "t" / "lib"))
import mxj_http  # noqa: E402
import mxj_room  # noqa: E402
from mxj_remote import (DAY_MS, KeyServer, Recorder,  # noqa: E402
                        RemoteServer, format_header, headers_named, now_ms)

pytestmark = pytest.mark.timeout(120)

OUR = "edge.test"                  # our matrix_server_name
ORIGIN = "remote.test"             # the requesting server
PREFIX = "mxj:"
DIR = "/_matrix/federation/v1/query/directory"
NEG_TTL = 3                        # matrix_key_fetch_negative_ttl, seconds

# The location forms of docs/directives.md, matrix_key_fetch. "post" is the
# specification's POST query; the URI is set by a rewrite (see
# test_fetch_post_form_as_documented for the documented proxy_pass).
FETCH_LOCATIONS = {
    "notary": """
        location /_mxj_keys/ {
            internal;
            proxy_pass http://127.0.0.1:%(k)d/_matrix/key/v2/query/;
            subrequest_output_buffer_size 64k;
        }""",
    "direct": """
        location /_mxj_keys/ {
            internal;
            proxy_set_header Host $matrix_key_fetch_server;
            proxy_pass http://127.0.0.1:%(k)d/_matrix/key/v2/server$is_args$args;
            subrequest_output_buffer_size 64k;
        }""",
    "post": """
        location /_mxj_keys/ {
            internal;
            proxy_method POST;
            proxy_set_header Content-Type application/json;
            proxy_set_body '{"server_keys":{"$matrix_key_fetch_server":{"$matrix_key_fetch_key_id":{}}}}';
            rewrite ^ /_matrix/key/v2/query? break;
            proxy_pass http://127.0.0.1:%(k)d;
            subrequest_output_buffer_size 64k;
        }""",
}


def documented_setups():
    """The numbered location examples under matrix_key_fetch in
    docs/directives.md, as written there: {number: text}."""
    text = (TOP / "docs" / "directives.md").read_text()
    sect = text[text.index("### matrix_key_fetch\n"):]
    sect = sect[:sect.index("\n### ", 1)]
    out = {}
    num = None
    for line in sect.splitlines():
        m = re.match(r"(\d)\. ", line)
        if m:
            num = int(m.group(1))
            out[num] = []
        elif num is not None and line.startswith(" " * 8):
            out[num].append(line)
        elif num is not None and out[num] and line.strip():
            num = None           # the block has ended
    return {k: "\n".join(v) for k, v in out.items()}

# -- rooms ------------------------------------------------------------------

_rooms = {}


def room(members=23, servers=5, seed=7):
    """A generated v10 room, cached. 23 members on 5 servers: joined
    counts 5,5,5,4,4 (two tiers, so the order is checked)."""
    key = (members, servers, seed)
    if key not in _rooms:
        _rooms[key] = mxj_room.Room(version="10", members=members,
                                    servers=servers, seed=seed)
    return _rooms[key]


def joined_per_server(r):
    """server -> joined members, from the generator's events."""
    c = Counter()
    for (etype, sk), eid in r.state.items():
        if etype == "m.room.member" and \
                r.events[eid]["content"]["membership"] == "join":
            c[sk.split(":", 1)[1]] += 1
    return c


def dir_uri(alias, safe=""):
    """The directory request target, alias percent-encoded as Synapse
    does (urlencode: '#' and ':' encoded)."""
    return DIR + "?room_alias=" + urllib.parse.quote(alias, safe=safe)


# -- raw HTTP ---------------------------------------------------------------

def send(port, method, target, auth=(), headers=(), body=None, timeout=10):
    """One request, target sent byte for byte, every Authorization value
    in auth sent as its own header."""
    return mxj_http.send(port, method, target, OUR, auth=auth,
                         headers=headers, body=body, timeout=timeout)


def assert_error(rep, status, errcode, *mentions):
    assert rep.status == status, rep
    doc = rep.json()
    assert doc["errcode"] == errcode, rep
    for m in mentions:
        assert m in doc.get("error", ""), (m, rep)
    # a message built with nginx's %V/%s conventions by a libc printf
    assert "%V" not in doc.get("error", ""), rep


# -- the setup --------------------------------------------------------------

class Fed:
    """nginx + Redis + a key server + the homeserver's Recorder."""

    def __init__(self, nginx, redis_server, tmp_path):
        self.nginx = nginx
        self.redis = redis_server
        self.r = redis_server.client()
        self.tmp = tmp_path
        self.our = OUR
        self.remote = RemoteServer(ORIGIN)
        self.remote_port = RemoteServer(ORIGIN + ":1234")
        self.other = RemoteServer("other.test")
        # nginx has picked its port but binds it only at start
        self.keys = KeyServer(self.remote, self.remote_port, self.other,
                              avoid=[nginx.port])
        self.rec = Recorder(body={"room_id": "!fromhs:elsewhere.test",
                                  "servers": ["elsewhere.test"]},
                            headers=[("X-Recorder", "yes")],
                            avoid=[nginx.port])
        key = subprocess.run([str(CTL), "keygen", OUR], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        nginx.write_file("signing.key", key, mode=0o600)

    def stop(self):
        self.keys.stop()
        self.rec.stop()

    @property
    def port(self):
        return self.nginx.port

    def load(self, r):
        """Loads room r with matrix-join-ctl load."""
        path = self.tmp / f"snap-{r.seed}.json"
        r.write(path)
        p = subprocess.run([str(CTL), "load", "--redis", self.redis.address,
                            str(path)], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        return r

    def meta_key(self, r):
        return f"{PREFIX}{{{r.room_id}}}:meta"

    def conf(self, fetch="notary", fallback=True, http_extra="",
             dir_extra="", fetch_location=None, listen=""):
        kloc = fetch_location or (
            FETCH_LOCATIONS[fetch] % {"k": self.keys.port} if fetch else "")
        self.nginx.write_conf(f"""
            matrix_server_name {self.our};
            matrix_signing_key signing.key;
            matrix_redis {self.redis.address};
            {"matrix_key_fetch /_mxj_keys/;" if fetch else ""}
            {"matrix_join_fallback @hs;" if fallback else ""}
            matrix_key_fetch_negative_ttl {NEG_TTL}s;
            {http_extra}
            log_format mxj 'O=[$matrix_origin] S=$status U=$request_uri';
            log_format mxj_pid '$pid $status';
            server {{
                listen 127.0.0.1:$PORT {listen};
                access_log $PREFIX/logs/pid.log mxj_pid;
                access_log $PREFIX/logs/mxj.log mxj;
                location = {DIR} {{
                    matrix_directory;
                    {dir_extra}
                }}
                {kloc}
                location @hs {{
                    proxy_pass http://127.0.0.1:{self.rec.port};
                }}
            }}
            """)
        self.nginx.start()
        return self

    def access_lines(self):
        p = self.nginx.prefix / "logs" / "mxj.log"
        return p.read_text().splitlines() if p.exists() else []

    def last_access(self, n=1):
        """The last line of the access log once it has n lines (nginx
        writes it after the answer has gone out)."""
        deadline = time.monotonic() + 5
        while len(self.access_lines()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        lines = self.access_lines()
        assert len(lines) >= n, lines
        return lines[-1]

    # requests
    def get(self, target, auth=(), **kw):
        return send(self.port, "GET", target, auth=auth, **kw)

    def signed_get(self, target, remote=None, destination=OUR, **kw):
        remote = remote or self.remote
        return self.get(target, auth=[remote.auth_header(
            "GET", target, destination)], **kw)


@pytest.fixture
def fed(nginx, redis_server, tmp_path):
    f = Fed(nginx, redis_server, tmp_path)
    yield f
    f.stop()


@pytest.fixture
def loaded(fed):
    """fed with the default room loaded, nginx not started yet."""
    fed.room = fed.load(room())
    fed.alias = fed.room.alias
    fed.target = dir_uri(fed.alias)
    return fed


# -- the loader's servers set (what the directory reads) --------------------

def test_loader_writes_servers_set(loaded):
    """P{R}:servers: score = minus the joined members per server
    (redis-schema.md); the directory's order depends on it."""
    got = {k.decode(): -int(v) for k, v in loaded.r.zrange(
        f"{PREFIX}{{{loaded.room.room_id}}}:servers", 0, -1,
        withscores=True)}
    assert got == dict(joined_per_server(loaded.room))


# -- the directory: the good answer -----------------------------------------

def check_servers(servers, r, our):
    """our first, then every server with joined members, most first, each
    once, at most 100."""
    counts = joined_per_server(r)
    assert servers[0] == our
    rest = servers[1:]
    assert len(servers) == len(set(servers)), servers
    assert len(servers) <= 100
    want = [s for s in counts if s != our]
    if len(want) + 1 <= 100:
        assert set(rest) == set(want)
    else:
        assert len(servers) == 100 and set(rest) <= set(want)
    # most members first (directives.md), ties by name (redis-schema.md,
    # meta.servers)
    order = sorted(want, key=lambda s: (-counts[s], s))
    assert rest == order[:len(rest)], list(zip(rest, map(counts.get, rest)))


def test_directory_answers_cached_alias(loaded):
    f = loaded.conf()
    rep = f.signed_get(f.target)
    assert rep.status == 200, rep
    doc = rep.json()
    assert doc["room_id"] == f.room.room_id
    check_servers(doc["servers"], f.room, OUR)
    assert f.rec.requests == []
    # the verified origin is $matrix_origin
    assert f.last_access() == f"O=[{ORIGIN}] S=200 U={f.target}"


def test_directory_lists_our_server_once(fed):
    """Our name is also a server of the room (the usual case: the edge
    speaks for the alias's homeserver): it comes first, and only there.
    (The contract says "our server first, then the servers that have
    joined members"; listing it twice would be useless to the caller.)"""
    r = fed.load(room())
    fed.our = r.servers[0]
    nginx = fed.nginx
    nginx.write_file("signing.key", subprocess.run(
        [str(CTL), "keygen", fed.our], capture_output=True, text=True,
        timeout=30, check=True).stdout, mode=0o600)
    fed.conf()
    target = dir_uri(r.alias)
    rep = fed.get(target, auth=[fed.remote.auth_header("GET", target,
                                                       fed.our)])
    assert rep.status == 200, rep
    check_servers(rep.json()["servers"], r, fed.our)


def test_directory_at_most_100_servers(fed):
    r = fed.load(room(members=150, servers=150, seed=8))
    fed.conf()
    rep = fed.signed_get(dir_uri(r.alias))
    assert rep.status == 200, rep
    servers = rep.json()["servers"]
    assert len(servers) == 100
    check_servers(servers, r, OUR)


@pytest.mark.parametrize("encoded", [
    "%23room7%3As0.example.org",          # Synapse's urlencode
    "%23room7:s0.example.org",            # ':' as is
    "%23room7%3as0.example.org",          # lower-case hex
    "".join(f"%{b:02X}" for b in b"#room7:s0.example.org"),   # every byte
])
def test_directory_percent_encoded_alias(loaded, encoded):
    f = loaded.conf()
    target = DIR + "?room_alias=" + encoded
    rep = f.signed_get(target)
    assert rep.status == 200, rep
    assert rep.json()["room_id"] == f.room.room_id


@pytest.mark.parametrize("query,found", [
    ("room%5Falias=%23room7%3As0.example.org", True),    # name decoded
    ("x=1;room_alias=%23room7%3As0.example.org", True),  # ';' separates
    ("room_alias=%23room7%3As0.example.org&room_alias=%23x%3Ay", True),
    ("room_alias=%23room+7%3As0.example.org", False),    # '+' is a space
], ids=["encoded-name", "semicolon", "first-wins", "plus-is-space"])
def test_directory_query_read_as_synapse_reads_it(loaded, query, found):
    """room_alias is read with Twisted's query rules (Synapse's
    request.args): names decoded, ';' a separator, '+' a space, the first
    value used. "#room 7:s0.example.org" is not cached: 404 (no
    fallback)."""
    f = loaded.conf(fallback=False)
    rep = f.signed_get(DIR + "?" + query)
    if found:
        assert rep.status == 200, rep
        assert rep.json()["room_id"] == f.room.room_id
    else:
        assert_error(rep, 404, "M_NOT_FOUND")


# -- the directory: bad parameters ------------------------------------------

def test_directory_missing_alias(loaded):
    f = loaded.conf()
    for target in (DIR, DIR + "?", DIR + "?other=1"):
        rep = f.signed_get(target)
        assert_error(rep, 400, "M_INVALID_PARAM")
    assert f.rec.requests == []


LONG = "#" + "a" * 300 + ":s0.example.org"


@pytest.mark.parametrize("alias", [
    "", "room7:s0.example.org", "#room7", "#:s0.example.org", LONG,
], ids=["empty", "no-hash", "no-colon", "empty-localpart", "over-255"])
def test_directory_malformed_alias(loaded, alias):
    f = loaded.conf()
    rep = f.signed_get(dir_uri(alias))
    assert_error(rep, 400, "M_INVALID_PARAM")
    assert f.rec.requests == []


def test_directory_alias_length_is_counted_decoded(loaded):
    """At most 255 bytes once percent-decoded: 255 is an alias (not
    cached: 404 without a fallback), 256 is not (400), whatever the length
    of the encoded form."""
    f = loaded.conf(fallback=False)
    tail = ":s0.example.org"
    ok = "#" + "b" * (255 - 1 - len(tail)) + tail
    bad = "#" + "b" * (256 - 1 - len(tail)) + tail
    assert len(ok) == 255 and len(bad) == 256
    every = lambda a: "".join(f"%{b:02X}" for b in a.encode())  # noqa
    for enc in (urllib.parse.quote(ok, safe=""), every(ok)):
        assert_error(f.signed_get(DIR + "?room_alias=" + enc), 404,
                     "M_NOT_FOUND")
    for enc in (urllib.parse.quote(bad, safe=""), every(bad)):
        assert_error(f.signed_get(DIR + "?room_alias=" + enc), 400,
                     "M_INVALID_PARAM")


# -- request authentication: the contract's table ---------------------------

def test_no_header_401(loaded):
    f = loaded.conf()
    assert_error(f.get(f.target), 401, "M_UNAUTHORIZED")
    # another scheme only is no X-Matrix header either
    assert_error(f.get(f.target, auth=["Bearer abc"]), 401, "M_UNAUTHORIZED")
    # authentication comes before the cached answer, and no fallback
    assert f.rec.requests == []
    assert f.last_access(2).startswith(("O=[] ", "O=[-] "))


def _sig(f):
    return f.remote.sign_request("GET", f.target, OUR)


MALFORMED = {
    "unterminated-quote": lambda f: (
        f'X-Matrix origin="{ORIGIN},destination="{OUR}",'
        f'key="ed25519:k1",sig="{_sig(f)}"'),
    "no-params": lambda f: "X-Matrix",
    "no-params-space": lambda f: "X-Matrix ",
    "garbage": lambda f: "X-Matrix ===,,,",
    "no-sig": lambda f: format_header(
        [("origin", ORIGIN), ("destination", OUR), ("key", "ed25519:k1")]),
    "no-key": lambda f: format_header(
        [("origin", ORIGIN), ("destination", OUR), ("sig", _sig(f))]),
    "no-origin": lambda f: format_header(
        [("destination", OUR), ("key", "ed25519:k1"), ("sig", _sig(f))]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_400(loaded, case):
    f = loaded.conf()
    rep = f.get(f.target, auth=[MALFORMED[case](f)])
    assert_error(rep, 400, "M_UNAUTHORIZED")


def test_invalid_origin_400(loaded):
    """Sytest "Non-numeric ports in server names are rejected"."""
    f = loaded.conf()
    bad = "localhost:http"
    rep = f.get(f.target, auth=[f.remote.auth_header(
        "GET", f.target, OUR, origin=bad)])
    assert_error(rep, 400, "M_UNAUTHORIZED")
    assert f.keys.count() == 0


def test_two_authorization_headers_refused_by_nginx(loaded):
    """The contract parses "every Authorization header" and answers 400
    M_UNAUTHORIZED for headers naming different origins. Debian's nginx
    (1.22) refuses a second Authorization header itself while reading the
    headers ("client sent duplicate header line"): 400 before any module
    runs, whatever the origins, so a request with several X-Matrix
    headers is never authenticated nor passed to the fallback."""
    f = loaded.conf()
    for auth in ([f.remote.auth_header("GET", f.target, OUR),
                  f.other.auth_header("GET", f.target, OUR)],
                 [f.remote.auth_header("GET", f.target + "&x=1", OUR),
                  f.remote.auth_header("GET", f.target, OUR)]):
        assert f.get(f.target, auth=auth).status == 400
    target = dir_uri("#nope:elsewhere.test")
    auth = [f.remote.auth_header("GET", target, OUR), "X-Matrix x=1"]
    assert f.get(target, auth=auth).status == 400
    assert f.rec.requests == []
    assert f.keys.count() == 0


def test_destination_mismatch_401(loaded):
    f = loaded.conf()
    rep = f.signed_get(f.target, destination="someone.else.test")
    assert_error(rep, 401, "M_UNAUTHORIZED")


def test_destination_absent_accepted(loaded):
    """v1.3 senders send it; recipients should accept its absence (the
    object is then signed without destination... by old senders; but
    receivers rebuild it with their own name, reference §4.3 step 2)."""
    f = loaded.conf()
    sig = f.remote.sign_request("GET", f.target, OUR)
    hdr = format_header([("origin", ORIGIN), ("key", f.remote.key_id),
                         ("sig", sig)])
    rep = f.get(f.target, auth=[hdr])
    assert rep.status == 200, rep
    # signed without destination, the rebuilt object does not match
    sig2 = f.remote.sign_request("GET", f.target, None)
    hdr2 = format_header([("origin", ORIGIN), ("key", f.remote.key_id),
                          ("sig", sig2)])
    assert_error(f.get(f.target, auth=[hdr2]), 401, "M_UNAUTHORIZED")


def test_bad_signature_401(loaded):
    f = loaded.conf()
    good = f.remote.sign_request("GET", f.target, OUR)
    # the right key, a signature of something else
    other = f.remote.sign_request("GET", f.target + "&x=1", OUR)
    assert other != good
    rep = f.get(f.target, auth=[format_header([
        ("origin", ORIGIN), ("destination", OUR),
        ("key", f.remote.key_id), ("sig", other)])])
    assert_error(rep, 401, "M_UNAUTHORIZED", ORIGIN)
    # not even base64
    rep = f.get(f.target, auth=[format_header([
        ("origin", ORIGIN), ("destination", OUR),
        ("key", f.remote.key_id), ("sig", "!!!")])])
    # a malformed header (directives.md): 400, before any key is looked up
    assert_error(rep, 400, "M_UNAUTHORIZED", "sig is not base64")
    # another server's key for our origin
    rep = f.get(f.target, auth=[format_header([
        ("origin", ORIGIN), ("destination", OUR), ("key", "ed25519:k1"),
        ("sig", f.other.sign_request("GET", f.target, OUR,
                                     origin=ORIGIN))])])
    assert_error(rep, 401, "M_UNAUTHORIZED")
    # and the good one passes: the key was there all along
    assert f.signed_get(f.target).status == 200


def test_unknown_key_without_fetch_401(loaded):
    f = loaded.conf(fetch=None)
    rep = f.signed_get(f.target)
    assert_error(rep, 401, "M_UNAUTHORIZED", ORIGIN, "ed25519:k1")
    assert f.keys.count() == 0


@pytest.mark.parametrize("how", ["other-uri", "other-method", "decoded-uri",
                                 "other-origin-name", "with-content"])
def test_signed_for_another_request_401(loaded, how):
    f = loaded.conf()
    method, uri, content, origin = "GET", f.target, None, None
    if how == "other-uri":
        uri = dir_uri("#other:s0.example.org")
    elif how == "other-method":
        method = "POST"
    elif how == "decoded-uri":
        # the raw URI is signed, never a decoded form
        uri = DIR + "?room_alias=" + f.alias
    elif how == "other-origin-name":
        origin = ORIGIN + ":1234"      # signed as another name
    elif how == "with-content":
        content = {"a": 1}             # a GET without a body has none
    sig = f.remote.sign_request(method, uri, OUR, content=content,
                                origin=origin)
    rep = f.get(f.target, auth=[format_header([
        ("origin", ORIGIN), ("destination", OUR),
        ("key", f.remote.key_id), ("sig", sig)])])
    assert_error(rep, 401, "M_UNAUTHORIZED")
    assert f.signed_get(f.target).status == 200


def test_get_with_body(loaded):
    """A GET that carries a body (nothing forbids it) is authenticated
    like any GET: Synapse puts content in the signed object for PUT and
    POST only (transport/server/_base.py). Its key fetch must not hang
    on the body: the subrequest inherits the client's headers."""
    f = loaded.conf()
    body = b'{"b": [1, 2],  "a": "x"}'
    hdrs = [("Content-Type", "application/json")]
    rep = f.get(f.target, auth=[f.remote.auth_header("GET", f.target, OUR)],
                headers=hdrs, body=body, timeout=8)
    assert rep.status == 200, rep
    (req,) = f.keys.requests()
    assert req.body is not None, "the key fetch announced a body it " \
        f"never sent: {req.headers}"


def test_verified_signature_not_replayable(loaded):
    """Once a signature has verified, the same header on another request
    (another alias, another raw URI) still fails: X-Matrix has no nonce,
    but it covers the method and the URI."""
    f = loaded.conf()
    hdr = f.remote.auth_header("GET", f.target, OUR)
    assert f.get(f.target, auth=[hdr]).status == 200
    assert f.get(f.target, auth=[hdr]).status == 200
    other = dir_uri("#room7:s0.example.org") + "&x=1"
    assert_error(f.get(other, auth=[hdr]), 401, "M_UNAUTHORIZED")
    assert_error(f.get(f.target + "&", auth=[hdr]), 401, "M_UNAUTHORIZED")


def test_expired_key_401(loaded):
    """The fetched key document's valid_until_ts is in the past."""
    f = loaded.conf()
    f.keys.valid_until_ts = now_ms() - 60000
    rep = f.signed_get(f.target)
    assert_error(rep, 401, "M_UNAUTHORIZED", ORIGIN)
    assert f.keys.count() == 1


def test_old_verify_keys_never_authenticate(loaded):
    """A key the remote moved to old_verify_keys is served, valid
    document and all, but must not authenticate a request."""
    f = loaded.conf()
    f.remote.add_key("k2")
    f.remote.retire("ed25519:k1")
    rep = f.get(f.target, auth=[f.remote.auth_header(
        "GET", f.target, OUR, key_id="ed25519:k1")])
    assert_error(rep, 401, "M_UNAUTHORIZED", ORIGIN)
    rep = f.get(f.target, auth=[f.remote.auth_header(
        "GET", f.target, OUR, key_id="ed25519:k2")])
    assert rep.status == 200, rep


# -- header syntax (RFC 9110 auth-params, reference §4.2) -------------------

def _params(f, remote=None, target=None):
    remote = remote or f.remote
    target = target or f.target
    return [("origin", remote.name), ("destination", OUR),
            ("key", remote.key_id),
            ("sig", remote.sign_request("GET", target, OUR))]


def _escaped(value):
    # every other character backslash-escaped: the recipient must unescape
    return "".join("\\" + c if i % 2 == 0 else c
                   for i, c in enumerate(value))


SYNTAX = {
    "sender-style": lambda f: format_header(_params(f)),
    "unquoted-token-with-colon": lambda f: format_header(
        _params(f, f.remote_port), quote={"sig"}),
    "spaces-around-commas": lambda f: format_header(
        _params(f), sep=" ,\t "),
    "many-spaces-after-scheme": lambda f: "X-Matrix    " + format_header(
        _params(f))[len("X-Matrix "):],
    "upper-case-names-and-scheme": lambda f: format_header(
        [(k.upper(), v) for k, v in _params(f)], scheme="X-MATRIX"),
    "lower-case-scheme": lambda f: format_header(_params(f),
                                                 scheme="x-matrix"),
    "other-order": lambda f: format_header(list(reversed(_params(f)))),
    "unknown-params": lambda f: format_header(
        [("foo", 'a"b,c=d'), *_params(f), ("zzz", "1")], quote=True),
    "unknown-unquoted-param": lambda f: format_header(
        [("ver", "2")] + _params(f), quote={"origin", "destination", "key",
                                            "sig"}),
    "escaped-sig": lambda f: ", ".join(
        [format_header(_params(f)[:3]),
         'sig="' + _escaped(_params(f)[3][1]) + '"']),
    "escaped-origin": lambda f: format_header(_params(f)[1:]) +
        ',origin="' + _escaped(ORIGIN) + '"',
}


@pytest.mark.parametrize("case", sorted(SYNTAX))
def test_header_syntax_accepted(loaded, case):
    f = loaded.conf()
    hdr = SYNTAX[case](f)
    rep = f.get(f.target, auth=[hdr])
    assert rep.status == 200, (hdr, rep)
    origin = f.remote_port.name if "colon" in case else ORIGIN
    assert f.last_access().startswith(f"O=[{origin}] ")


def test_header_all_values_unquoted(loaded):
    """origin=remote.test:1234,key=ed25519:k1 and a sig that happens to be
    a token (no '/'): no quotes at all."""
    f = loaded.conf()
    for n in range(200):
        target = f.target + f"&n={n}"
        params = _params(f, f.remote_port, target)
        if "/" not in params[3][1]:
            break
    else:
        pytest.fail("no signature without '/' in 200 tries")
    hdr = format_header(params, quote=False)
    assert '"' not in hdr
    rep = f.get(target, auth=[hdr])
    assert rep.status == 200, (hdr, rep)


# -- key lookup: memory, Redis, fetch ---------------------------------------

def keys_hash(f, server=ORIGIN):
    return f"{PREFIX}keys:{server}"


@pytest.mark.no_valgrind     # reloads: needs worker processes
def test_fetch_once_then_cached(loaded):
    f = loaded.conf()
    vut = now_ms() + 2 * DAY_MS
    f.keys.valid_until_ts = vut
    t0 = now_ms()
    assert f.signed_get(f.target).status == 200
    assert f.keys.count() == 1
    (req,) = f.keys.requests()
    path, _, query = req.target.partition("?")
    assert req.method == "GET"
    assert urllib.parse.unquote(path) == \
        f"/_matrix/key/v2/query/{ORIGIN}/ed25519:k1"
    mvut = int(urllib.parse.parse_qs(query)["minimum_valid_until_ts"][0])
    assert t0 - 60000 <= mvut <= now_ms() + 60000

    # the second request fetches nothing
    assert f.signed_get(f.target).status == 200
    assert f.keys.count() == 1

    # Redis holds the key for other workers and hosts
    raw = stored_key(f)
    assert raw is not None
    assert json.loads(raw) == {"key": f.remote.verify_key_b64(),
                               "valid_until_ts": vut}
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"),
                             sort_keys=True).encode()     # canonical
    pttl = f.r.pttl(keys_hash(f))
    assert 0 < pttl <= vut - now_ms() + 1000
    assert pttl >= vut - now_ms() - 60000

    # new workers (empty memory) find it in Redis
    f.nginx.reload()
    assert f.signed_get(f.target).status == 200
    assert f.keys.count() == 1


def stored_key(f, key_id="ed25519:k1", timeout=10.0):
    """The module writes a fetched key to Redis without waiting for it:
    the write may land just after the answer."""
    deadline = time.monotonic() + timeout
    while True:
        raw = f.r.hget(keys_hash(f), key_id)
        if raw is not None or time.monotonic() > deadline:
            return raw
        time.sleep(0.05)


def test_fetched_key_kept_at_most_7_days(loaded):
    f = loaded.conf()
    f.keys.valid_until_ts = now_ms() + 30 * DAY_MS
    t0 = now_ms()
    assert f.signed_get(f.target).status == 200
    t1 = now_ms()
    stored = json.loads(stored_key(f))
    assert t0 + 7 * DAY_MS <= stored["valid_until_ts"] <= t1 + 7 * DAY_MS


def test_key_from_redis_without_fetch(loaded):
    """A key another host wrote to Redis authenticates without any fetch
    (and without matrix_key_fetch at all)."""
    f = loaded
    f.r.hset(keys_hash(f), "ed25519:k1", json.dumps(
        {"key": f.remote.verify_key_b64(),
         "valid_until_ts": now_ms() + DAY_MS}, separators=(",", ":"),
        sort_keys=True))
    f.conf(fetch=None)
    assert f.signed_get(f.target).status == 200
    # a wrong key in Redis is a bad signature
    f.r.hset(keys_hash(f, "other.test"), "ed25519:k1", json.dumps(
        {"key": f.remote.verify_key_b64(),
         "valid_until_ts": now_ms() + DAY_MS}))
    rep = f.signed_get(f.target, remote=f.other)
    assert_error(rep, 401, "M_UNAUTHORIZED")


def test_expired_key_in_redis_not_used(loaded):
    f = loaded
    f.r.hset(keys_hash(f), "ed25519:k1", json.dumps(
        {"key": f.remote.verify_key_b64(),
         "valid_until_ts": now_ms() - 1000}))
    f.conf(fetch=None)
    assert_error(f.signed_get(f.target), 401, "M_UNAUTHORIZED", ORIGIN)


def test_expired_key_in_redis_fetched_again(loaded):
    f = loaded
    f.r.hset(keys_hash(f), "ed25519:k1", json.dumps(
        {"key": f.remote.verify_key_b64(),
         "valid_until_ts": now_ms() - 1000}))
    f.conf()
    assert f.signed_get(f.target).status == 200
    assert f.keys.count() == 1


def test_concurrent_misses_share_one_fetch(loaded):
    f = loaded.conf()
    f.keys.delay = 0.5
    with ThreadPoolExecutor(20) as ex:
        reps = list(ex.map(lambda _: f.signed_get(f.target), range(20)))
    assert [r.status for r in reps] == [200] * 20, reps
    assert f.keys.count() == 1


def test_fetch_target_down(loaded):
    f = loaded.conf()
    f.keys.down()
    t0 = time.monotonic()
    rep = f.signed_get(f.target)
    assert_error(rep, 401, "M_UNAUTHORIZED", ORIGIN)
    f.keys.up()
    # within the negative TTL: refused at once, no fetch
    if time.monotonic() - t0 < NEG_TTL - 0.5:
        assert_error(f.signed_get(f.target), 401, "M_UNAUTHORIZED", ORIGIN)
        assert f.keys.count() == 0
    # after it, the key server is asked again
    time.sleep(max(0.0, t0 + NEG_TTL + 0.3 - time.monotonic()))
    assert f.signed_get(f.target).status == 200
    assert f.keys.count() == 1


def test_failed_fetch_remembered_for_negative_ttl(loaded):
    f = loaded.conf()
    f.keys.status = 500
    t0 = time.monotonic()
    assert_error(f.signed_get(f.target), 401, "M_UNAUTHORIZED", ORIGIN)
    assert f.keys.count() == 1
    f.keys.reset()
    if time.monotonic() - t0 < NEG_TTL - 0.5:
        assert_error(f.signed_get(f.target), 401, "M_UNAUTHORIZED", ORIGIN)
        assert f.keys.count() == 1
    time.sleep(max(0.0, t0 + NEG_TTL + 0.3 - time.monotonic()))
    assert f.signed_get(f.target).status == 200
    assert f.keys.count() == 2


@pytest.mark.parametrize("how", ["status-500", "status-404",
                                 "wrong-server-name", "bad-self-signature",
                                 "key-missing", "expired"])
def test_bad_key_answer_401(loaded, how):
    f = loaded.conf()
    if how == "status-500":
        f.keys.status = 500
    elif how == "status-404":
        f.keys.status = 404
    elif how == "wrong-server-name":
        f.keys.wrong_server_name = True
    elif how == "bad-self-signature":
        f.keys.bad_signature = True
    elif how == "key-missing":
        f.keys.omit_key = True
    elif how == "expired":
        f.keys.valid_until_ts = now_ms() - 1000
    rep = f.signed_get(f.target)
    assert_error(rep, 401, "M_UNAUTHORIZED", ORIGIN)
    assert f.keys.count() == 1
    assert f.r.hget(keys_hash(f), "ed25519:k1") is None


@pytest.mark.parametrize("form", ["notary", "post"])
def test_notary_expired_document_first(loaded, form):
    """A notary may hold several documents of a server, an expired one
    ahead of the current one: the one that vouches for the key now is
    used."""
    f = loaded.conf(fetch=form)
    f.keys.stale_first = True
    assert f.signed_get(f.target).status == 200
    assert f.keys.count() == 1
    assert json.loads(stored_key(f))["valid_until_ts"] > now_ms()


def test_fetch_timeout_401(loaded):
    f = loaded.conf(http_extra="matrix_key_fetch_timeout 1s;")
    f.keys.delay = 4
    rep = f.signed_get(f.target, timeout=15)
    assert_error(rep, 401, "M_UNAUTHORIZED", ORIGIN)


@pytest.mark.parametrize("form", ["notary", "direct", "post"])
def test_fetch_forms(loaded, form):
    f = loaded.conf(fetch=form)
    rep = f.signed_get(f.target)
    assert rep.status == 200, rep
    (req,) = f.keys.requests()
    path = urllib.parse.unquote(req.target.partition("?")[0])
    if form == "notary":
        assert (req.method, path) == (
            "GET", f"/_matrix/key/v2/query/{ORIGIN}/ed25519:k1")
    elif form == "direct":
        assert (req.method, path) == ("GET", "/_matrix/key/v2/server")
        assert headers_named(req, "Host") == [ORIGIN]
    else:
        assert (req.method, path) == ("POST", "/_matrix/key/v2/query")
        assert json.loads(req.body) == {
            "server_keys": {ORIGIN: {"ed25519:k1": {}}}}


@pytest.mark.parametrize("setup", [1, 2])
def test_fetch_documented_setup(loaded, setup):
    """docs/directives.md, matrix_key_fetch, setups 1 (notary GET) and 2
    (notary POST) as written there, the homeserver being the KeyServer.
    (Setup 3 needs a resolver and TLS.)"""
    text = documented_setups()[setup]
    assert "http://homeserver" in text
    f = loaded.conf(fetch="notary", fetch_location=text.replace(
        "http://homeserver", f"http://127.0.0.1:{loaded.keys.port}"))
    rep = f.signed_get(f.target)
    reqs = f.keys.requests()
    assert len(reqs) == 1
    want = {1: ("GET", f"/_matrix/key/v2/query/{ORIGIN}/ed25519:k1"),
            2: ("POST", "/_matrix/key/v2/query")}[setup]
    assert (reqs[0].method, urllib.parse.unquote(
        reqs[0].target.partition("?")[0])) == want
    assert rep.status == 200, rep


def test_fetch_server_name_with_port(loaded):
    f = loaded.conf()
    rep = f.signed_get(f.target, remote=f.remote_port)
    assert rep.status == 200, rep
    (req,) = f.keys.requests()
    assert urllib.parse.unquote(req.target.partition("?")[0]) == \
        f"/_matrix/key/v2/query/{ORIGIN}:1234/ed25519:k1"


def test_at_most_64_fetches_at_once(loaded):
    """70 origins miss a key at the same time: the machine runs at most 64
    fetches at once (directives.md, matrix_key_fetch_rate), so while the
    key server holds the first 64, the other 6 requests find no free
    fetch slot and are answered 401 at once ("too many key fetches in
    progress"); once the key server answers, the 64 are answered 200."""
    # a fetch timeout far beyond the test: only the gate ends the fetches
    f = loaded.conf(http_extra="matrix_key_fetch_timeout 120s;")
    remotes = [f.keys.add(RemoteServer(f"r{i}.test")) for i in range(70)]
    gate = threading.Event()
    f.keys.delay = 1                        # any: the gate decides
    f.keys.wait = lambda seconds: gate.wait(60)
    with ThreadPoolExecutor(70) as ex:
        futs = {rs.name: ex.submit(f.signed_get, f.target, remote=rs,
                                   timeout=60) for rs in remotes}
        try:
            # every request has had its slot or its refusal: 64 fetches
            # held at the key server, 6 answers back (the deadline guards
            # against a hang, it is no timing check)
            deadline = time.monotonic() + 50
            while not (f.keys.in_flight == 64
                       and sum(fu.done() for fu in futs.values()) == 6):
                assert time.monotonic() < deadline, (
                    f.keys.in_flight,
                    [n for n, fu in futs.items() if fu.done()])
                time.sleep(0.05)
            refused = {n: fu.result() for n, fu in futs.items()
                       if fu.done()}
        finally:
            gate.set()
        reps = {n: fu.result() for n, fu in futs.items()}
    for rep in refused.values():
        assert_error(rep, 401, "M_UNAUTHORIZED")
    fetched = {urllib.parse.unquote(r.target.partition("?")[0])
               for r in f.keys.requests()}
    assert fetched == {f"/_matrix/key/v2/query/{n}/ed25519:k1"
                       for n in reps if n not in refused}
    assert len(fetched) == 64
    assert f.keys.max_in_flight == 64, f.keys.max_in_flight
    assert sorted(n for n, r in reps.items() if r.status == 200) == \
        sorted(n for n in reps if n not in refused)
    assert sorted(n for n, r in reps.items() if r.status == 401) == \
        sorted(refused)


def test_key_flood_rate_limited(loaded):
    """200 requests from one origin, each with a random key ID: at most
    matrix_key_fetch_rate fetches (a burst of 5, refilled 5 per minute)."""
    f = loaded.conf(http_extra="matrix_key_fetch_rate 5;")
    rnd = random.Random(1)

    def one(_):
        kid = "ed25519:" + "".join(rnd.choice(string.ascii_letters)
                                   for _ in range(12))
        return f.get(f.target, auth=[f.remote.auth_header(
            "GET", f.target, OUR, key_id=kid)])

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as ex:
        reps = list(ex.map(one, range(200)))
    elapsed = time.monotonic() - t0
    assert all(r.status == 401 for r in reps), Counter(r.status for r in reps)
    allowed = 5 + int(elapsed * 5 / 60) + 1
    assert 1 <= f.keys.count() <= allowed, (f.keys.count(), elapsed)
    # the origin's real key is limited too, but another origin is not
    rep = f.signed_get(f.target, remote=f.other)
    assert rep.status == 200, rep


# -- the fallback -----------------------------------------------------------

def check_passed_unchanged(f, sent_target, sent_auth, sent_body=None,
                           extra=()):
    (req,) = f.rec.requests
    assert req.method == "GET"
    assert req.target == sent_target            # byte for byte
    assert headers_named(req, "Authorization") == list(sent_auth)
    for k, v in extra:
        assert headers_named(req, k) == [v]
    assert req.body == (sent_body or b"")


def test_uncached_alias_goes_to_fallback_unchanged(loaded):
    f = loaded.conf()
    target = DIR + "?room_alias=%23nope%3Aelsewhere.test&x=%2F%2f"
    body = b'{"z": 1,  "a": [true]}'
    auth = [f.remote.auth_header("GET", target, OUR,
                                 content=json.loads(body))]
    extra = [("X-Test", "kept"), ("Content-Type", "application/json")]
    rep = f.get(target, auth=auth, headers=extra, body=body)
    assert rep.status == 200, rep
    assert rep.json() == f.rec.body             # the homeserver's answer
    assert rep.header("X-Recorder") == "yes"
    check_passed_unchanged(f, target, auth, body, extra)
    assert f.keys.count() == 0                  # not authenticated here


def test_uncached_alias_fallback_before_authentication(loaded):
    """Unsigned, badly signed: the homeserver authenticates, not us."""
    f = loaded.conf()
    f.rec.status = 404
    f.rec.body = {"errcode": "M_NOT_FOUND", "error": "from the homeserver"}
    target = dir_uri("#nope:elsewhere.test")
    rep = f.get(target)
    assert rep.status == 404 and rep.json() == f.rec.body, rep
    check_passed_unchanged(f, target, [])


def test_cached_alias_authenticated_first(loaded):
    """A cached alias with a bad request is answered here, not passed."""
    f = loaded.conf()
    assert_error(f.get(f.target), 401, "M_UNAUTHORIZED")
    assert_error(f.signed_get(f.target, destination="x.test"), 401,
                 "M_UNAUTHORIZED")
    assert f.rec.requests == []


def test_uncached_alias_without_fallback_404(loaded):
    f = loaded.conf(fallback=False)
    assert_error(f.get(dir_uri("#nope:elsewhere.test")), 404, "M_NOT_FOUND")
    assert_error(f.signed_get(dir_uri("#nope:elsewhere.test")), 404,
                 "M_NOT_FOUND")


def test_alias_to_unloaded_room_goes_to_fallback(loaded):
    """An alias key whose room has no snapshot is not cached."""
    f = loaded
    f.r.set(f"{PREFIX}alias:#ghost:s0.example.org", "!ghost:s0.example.org")
    f.conf()
    target = dir_uri("#ghost:s0.example.org")
    auth = [f.remote.auth_header("GET", target, OUR)]
    rep = f.get(target, auth=auth)
    assert rep.status == 200 and rep.json() == f.rec.body, rep
    check_passed_unchanged(f, target, auth)


def test_stale_snapshot_goes_to_fallback(loaded):
    f = loaded.conf()
    assert f.signed_get(f.target).status == 200       # cached
    f.r.hset(f.meta_key(f.room), "stale", "1")
    auth = [f.remote.auth_header("GET", f.target, OUR)]
    rep = f.get(f.target, auth=auth)
    assert rep.status == 200 and rep.json() == f.rec.body, rep
    check_passed_unchanged(f, f.target, auth)


def test_old_snapshot_goes_to_fallback(loaded):
    f = loaded.conf(http_extra="matrix_join_max_age 1s;")
    meta = f.meta_key(f.room)
    f.r.hset(meta, "loaded_at", str(now_ms()))
    assert f.signed_get(f.target).json()["room_id"] == f.room.room_id
    assert f.rec.requests == []
    f.r.hset(meta, "loaded_at", str(now_ms() - 5000))
    auth = [f.remote.auth_header("GET", f.target, OUR)]
    rep = f.get(f.target, auth=auth)
    assert rep.status == 200 and rep.json() == f.rec.body, rep
    check_passed_unchanged(f, f.target, auth)


def test_old_snapshot_without_fallback_404(loaded):
    f = loaded.conf(fallback=False, http_extra="matrix_join_max_age 1s;")
    f.r.hset(f.meta_key(f.room), "loaded_at", str(now_ms() - 5000))
    assert_error(f.signed_get(f.target), 404, "M_NOT_FOUND")


def test_redis_down_goes_to_fallback(loaded):
    f = loaded.conf()
    assert f.signed_get(f.target).status == 200       # connected, cached
    f.redis.kill9()
    auth = [f.remote.auth_header("GET", f.target, OUR)]
    rep = f.get(f.target, auth=auth)
    assert rep.status == 200 and rep.json() == f.rec.body, rep
    check_passed_unchanged(f, f.target, auth)
    # the worker is backing off now: still the fallback, at once
    rep = f.get(f.target, auth=auth)
    assert rep.status == 200 and rep.json() == f.rec.body, rep


def test_redis_down_without_fallback_503(loaded):
    f = loaded.conf(fallback=False)
    assert f.signed_get(f.target).status == 200
    f.redis.kill9()
    assert_error(f.signed_get(f.target), 503, "M_UNKNOWN")
    assert_error(f.signed_get(f.target), 503, "M_UNKNOWN")
