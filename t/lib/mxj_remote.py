"""A remote Matrix homeserver for the tests, on matrix-org's libraries only.

Nothing here uses our C code: request signatures and key documents are made
with Debian's python3-signedjson, -canonicaljson and -nacl, so the module's
request authentication and key fetch are judged by an independent party.

    RemoteServer   a server name with its ed25519 signing key(s): signs
                   X-Matrix requests (reference §4.1/§4.2) and its own key
                   document (/_matrix/key/v2/server, reference §4.4).
    KeyServer      an HTTP server on 127.0.0.1 serving the key documents of
                   the RemoteServers it hosts, directly and as a notary
                   (reference §4.5), counting requests, with switches to
                   misbehave (down, 500, hang, wrong server_name, bad
                   self-signature, key missing, expired).
    Recorder       an HTTP upstream on 127.0.0.1 that records every request
                   exactly (method, raw target, every header, body bytes)
                   and answers a canned JSON: the homeserver behind the
                   module's fallback.

All servers run in threads on a free loopback port, answer within bounded
times and are stopped with .stop() (the tests' fixtures do it).
"""

import collections
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from canonicaljson import encode_canonical_json
from signedjson.key import (decode_signing_key_base64, generate_signing_key,
                            get_verify_key)
from signedjson.sign import sign_json
from unpaddedbase64 import decode_base64, encode_base64

KEY_SERVER_PATH = "/_matrix/key/v2/server"
QUERY_PATH = "/_matrix/key/v2/query"
DAY_MS = 24 * 3600 * 1000


def now_ms():
    return int(time.time() * 1000)


def _rekey(key, version):
    """The same ed25519 seed under another key version (so sign_json files
    its signature under ed25519:<version>)."""
    return decode_signing_key_base64("ed25519", version,
                                     encode_base64(bytes(key)))


# -- a remote homeserver ----------------------------------------------------

class RemoteServer:
    """A Matrix server name and its signing keys.

    RemoteServer("remote.test") has one key, ed25519:k1, made at random
    (or from seed, 32 bytes, for a fixed key)."""

    def __init__(self, name, key_version="k1", seed=None):
        self.name = name
        self.keys = {}              # key ID -> signedjson SigningKey
        self.old_keys = {}          # key ID -> (SigningKey, expired_ts)
        self.key_version = key_version
        self.add_key(key_version, seed)

    # keys
    def add_key(self, version, seed=None):
        """A new current key; returns its key ID."""
        if seed is None:
            key = generate_signing_key(version)
        else:
            key = decode_signing_key_base64("ed25519", version,
                                            encode_base64(seed))
        kid = f"ed25519:{version}"
        self.keys[kid] = key
        return kid

    def retire(self, key_id, expired_ts=None):
        """Moves a current key to old_verify_keys."""
        key = self.keys.pop(key_id)
        self.old_keys[key_id] = (key, expired_ts or now_ms() - 1000)

    @property
    def key_id(self):
        return f"ed25519:{self.key_version}"

    def signing_key(self, key_id=None):
        key_id = key_id or self.key_id
        if key_id in self.keys:
            return self.keys[key_id]
        if key_id in self.old_keys:
            return self.old_keys[key_id][0]
        # an unknown key ID: the default seed under that name, so the
        # signature is well-formed but nobody can know the key
        base = self.keys.get(self.key_id) or next(iter(self.keys.values()))
        return _rekey(base, key_id.split(":", 1)[1])

    def verify_key_b64(self, key_id=None):
        return encode_base64(get_verify_key(self.signing_key(key_id)).encode())

    # requests (reference §4.1, §4.2)
    def request_object(self, method, uri, destination, content=None,
                       origin=None):
        obj = {"method": method, "uri": uri,
               "origin": origin if origin is not None else self.name}
        if destination is not None:
            obj["destination"] = destination
        if content is not None:
            obj["content"] = content
        return obj

    def sign_request(self, method, uri, destination, content=None,
                     origin=None, key_id=None):
        """The unpadded base64 signature of the request object."""
        key_id = key_id or self.key_id
        obj = self.request_object(method, uri, destination, content, origin)
        signer = obj["origin"]
        sign_json(obj, signer, self.signing_key(key_id))
        return obj["signatures"][signer][key_id]

    def auth_header(self, method, uri, destination, content=None, origin=None,
                    key_id=None):
        """The Authorization value, as senders should write it (lower-case
        names, no spaces around commas, quoted values). destination=None
        leaves it out of the header and of the signed object."""
        key_id = key_id or self.key_id
        sig = self.sign_request(method, uri, destination, content, origin,
                                key_id)
        params = [("origin", origin if origin is not None else self.name)]
        if destination is not None:
            params.append(("destination", destination))
        params += [("key", key_id), ("sig", sig)]
        return format_header(params)

    # the key document (reference §4.4)
    def key_document(self, valid_until_ts=None, server_name=None,
                     omit_keys=False, bad_signature=False):
        """The signed /_matrix/key/v2/server document."""
        if valid_until_ts is None:
            valid_until_ts = now_ms() + DAY_MS
        signers = dict(self.keys)
        verify = {kid: {"key": encode_base64(get_verify_key(k).encode())}
                  for kid, k in self.keys.items()}
        if omit_keys:
            # a well-signed document that lacks every key the server uses
            other = generate_signing_key("other")
            signers = {"ed25519:other": other}
            verify = {"ed25519:other": {
                "key": encode_base64(get_verify_key(other).encode())}}
        doc = {
            "server_name": server_name or self.name,
            "valid_until_ts": valid_until_ts,
            "verify_keys": verify,
            "old_verify_keys": {
                kid: {"key": encode_base64(get_verify_key(k).encode()),
                      "expired_ts": ts}
                for kid, (k, ts) in self.old_keys.items()},
        }
        for key in signers.values():
            # signed under our own name even when server_name lies
            sign_json(doc, self.name, key)
        if bad_signature:
            for kid, sig in doc["signatures"][self.name].items():
                raw = bytearray(decode_base64(sig))
                raw[0] ^= 0x01
                doc["signatures"][self.name][kid] = encode_base64(bytes(raw))
        return doc


def format_header(params, scheme="X-Matrix", sep=",", quote=True):
    """Authorization value from (name, value) pairs. quote: True quotes
    every value, False none, or a set of names to quote."""
    parts = []
    for name, value in params:
        q = quote if isinstance(quote, bool) else name.lower() in quote
        if q:
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') \
                + '"'
        parts.append(f"{name}={value}")
    return f"{scheme} " + sep.join(parts)


# -- HTTP plumbing ----------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    """Reads the whole request; owner.handle(req) returns the answer."""
    protocol_version = "HTTP/1.0"
    timeout = 5                     # socket timeout while reading
    owner = None                    # set on the per-server subclass

    def log_message(self, *args):
        pass

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _any(self):
        try:
            body = self._read_body()
        except (OSError, ValueError):
            body = None             # a body announced but never sent
        req = Request(
            method=self.command,
            target=self.path,
            version=self.request_version,
            headers=list(self.headers.items()),
            body=body,
            received_at=time.monotonic())
        if body is None:
            self.owner._record(req)
            self.close_connection = True
            return
        status, headers, body = self.owner._answer(req)
        if status is None:          # drop the connection without answer
            self.close_connection = True
            return
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _any
    do_PATCH = _any


# body is None when the request announced a body that did not come
# within the handler's timeout (the connection is then closed unanswered)
Request = collections.namedtuple(
    "Request", "method target version headers body received_at")


def _header_list(req, name):
    return [v for k, v in req.headers if k.lower() == name.lower()]


class _Base:
    """A threaded HTTP server on 127.0.0.1:port (free port by default)."""

    def __init__(self, port=0, avoid=()):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None
        self.port = port
        self._listen(set(avoid))

    def _listen(self, avoid=()):
        """avoid: ports picked (and released) by others that have not
        bound them yet, such as the harness's nginx port."""
        handler = type("H", (_Handler,), {"owner": self})
        deadline = time.monotonic() + 5
        while True:
            try:
                httpd = _Server(("127.0.0.1", self.port), handler)
            except OSError:
                # up() on the old port right after down(): retry briefly
                if not self.port or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            if httpd.server_address[1] in avoid:
                httpd.server_close()
                continue
            self._httpd = httpd
            break
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            daemon=True)
        self._thread.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def down(self):
        """Closes the listening socket: connections are refused."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def up(self):
        """Listens again on the same port."""
        if self._httpd is None:
            self._listen()

    def wait(self, seconds):
        """Sleeps, but wakes up at stop()."""
        self._stop.wait(seconds)

    def stop(self):
        self._stop.set()
        self.down()


# -- the key server / notary ------------------------------------------------

class KeyServer(_Base):
    """Serves, for each RemoteServer it hosts:

        GET  /_matrix/key/v2/server                  (by the Host header)
        GET  /_matrix/key/v2/query/{server}[/{key_id}]
        POST /_matrix/key/v2/query  {"server_keys": {server: {key_id: {}}}}

    The notary forms answer {"server_keys": [doc]} with the notary's own
    signature added; an unknown server gives {"server_keys": []}.
    Switches (attributes, reset() restores them): status (an HTTP status
    other than 200 answers an M_UNKNOWN error), delay (seconds to wait
    before answering), wrong_server_name, bad_signature, omit_key,
    valid_until_ts (absolute ms, e.g. in the past), stale_first (the
    notary forms put an expired document of the server, well signed,
    ahead of the current one, as a notary holding older ones may)."""

    def __init__(self, *servers, notary_name="notary.test", port=0,
                 avoid=()):
        self.hosts = {s.name: s for s in servers}
        self.notary = RemoteServer(notary_name, "n1")
        self.log = []               # Request, in order of arrival
        self.counts = collections.Counter()   # path (no query) -> count
        self.in_flight = 0          # requests being answered now
        self.max_in_flight = 0
        self.reset()
        super().__init__(port, avoid)

    def add(self, server):
        self.hosts[server.name] = server
        return server

    def reset(self):
        self.status = 200
        self.delay = 0.0
        self.wrong_server_name = False
        self.bad_signature = False
        self.omit_key = False
        self.valid_until_ts = None
        self.stale_first = False

    def count(self, path=None):
        with self._lock:
            if path is None:
                return sum(self.counts.values())
            return self.counts[path]

    def requests(self):
        with self._lock:
            return list(self.log)

    def _doc(self, server):
        return server.key_document(
            valid_until_ts=self.valid_until_ts,
            server_name="wrong.test" if self.wrong_server_name else None,
            omit_keys=self.omit_key, bad_signature=self.bad_signature)

    def _json(self, status, obj):
        return status, [("Content-Type", "application/json")], \
            encode_canonical_json(obj)

    def _record(self, req):
        path = req.target.partition("?")[0]
        with self._lock:
            self.log.append(req)
            self.counts[urllib.parse.unquote(path)] += 1

    def _answer(self, req):
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._answer_now(req)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer_now(self, req):
        path = req.target.partition("?")[0]
        self._record(req)
        if self.delay:
            self.wait(self.delay)
        if self.status != 200:
            return self._json(self.status, {"errcode": "M_UNKNOWN",
                                            "error": "misbehaving on purpose"})

        if req.method == "GET" and path == KEY_SERVER_PATH:
            host = (_header_list(req, "Host") or [""])[0]
            server = self.hosts.get(host)
            if server is None:
                return self._json(404, {"errcode": "M_NOT_FOUND",
                                        "error": f"no server {host}"})
            return self._json(200, self._doc(server))

        wanted = None               # server names asked for
        if req.method == "GET" and path.startswith(QUERY_PATH + "/"):
            segs = [urllib.parse.unquote(s)
                    for s in path[len(QUERY_PATH) + 1:].split("/")]
            if 1 <= len(segs) <= 2 and segs[0]:
                wanted = [segs[0]]
        elif req.method == "POST" and path == QUERY_PATH:
            try:
                body = json.loads(req.body)
                wanted = list(body["server_keys"])
            except (ValueError, KeyError, TypeError):
                return self._json(400, {"errcode": "M_BAD_JSON",
                                        "error": "bad query body"})
        if wanted is None:
            return self._json(404, {"errcode": "M_UNRECOGNIZED",
                                    "error": "unknown path"})
        docs = []
        for name in wanted:
            if name not in self.hosts:
                continue
            server = self.hosts[name]
            ahead = [server.key_document(valid_until_ts=now_ms() - DAY_MS)] \
                if self.stale_first else []
            for doc in ahead + [self._doc(server)]:
                sign_json(doc, self.notary.name,
                          self.notary.signing_key())
                docs.append(doc)
        return self._json(200, {"server_keys": docs})


# -- the homeserver behind the fallback -------------------------------------

class Recorder(_Base):
    """Records every request exactly and answers status + canned JSON
    (bytes sent as given when body is bytes)."""

    def __init__(self, status=200, body=None, headers=(), port=0, avoid=()):
        self.status = status
        self.body = body if body is not None else {"recorded": True}
        self.headers = list(headers)
        self.log = []
        super().__init__(port, avoid)

    @property
    def requests(self):
        with self._lock:
            return list(self.log)

    def _record(self, req):
        with self._lock:
            self.log.append(req)

    def _answer(self, req):
        self._record(req)
        body = self.body if isinstance(self.body, bytes) \
            else json.dumps(self.body).encode()
        return self.status, [("Content-Type", "application/json")] \
            + self.headers, body


def headers_named(req, name):
    """Every value of header name in a recorded Request, in order."""
    return _header_list(req, name)
