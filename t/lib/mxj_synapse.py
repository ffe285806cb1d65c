"""A real Synapse 1.67.0 on loopback for the interop tests (t/interop).

    Synapse      one homeserver process: its directory (configuration,
                 SQLite database, signing key, log), started with Debian's
                 /usr/bin/python3 on the unpacked release (MXJ_SYNAPSE, made
                 by t/interop/run), stopped by its PID.
    Client       its client and admin APIs, as a user: shared-secret
                 registration, rooms, joins, messages, members.
    doc_blocks   the fenced blocks of docs/operations.md that the interop
                 edge runs (the harness has no copy of its own).

The homeserver.yaml is the document's block (section 3, for the homeserver
behind the edge) or a TLS federation listener (the joining servers), plus
TEST_SETTINGS: what loopback tests need and a deployment does not
(docs/interop.md says why each is there).
"""

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import requests
import urllib3
import yaml

# the test servers' certificates are self-signed
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

TOP = Path(__file__).resolve().parents[2]
SYNAPSE = Path(os.environ.get("MXJ_SYNAPSE", TOP / "build" / "synapse"))
OPERATIONS = TOP / "docs" / "operations.md"

# Settings of every test homeserver that a deployment would not have: the
# servers are all on 127.0.0.1 with self-signed certificates and no DNS,
# and the tests join, send and register faster than Synapse's defaults
# allow.
FAST = {"per_second": 1000, "burst_count": 1000}
TEST_SETTINGS = {
    "report_stats": False,
    "enable_metrics": False,
    "use_presence": False,
    "suppress_key_server_warning": True,
    "trusted_key_servers": [],
    "federation_verify_certificates": False,
    "ip_range_blacklist": [],
    "federation_ip_range_blacklist": [],
    "ip_range_whitelist": ["127.0.0.1"],
    "rc_message": FAST,
    "rc_registration": FAST,
    "rc_login": {"address": FAST, "account": FAST,
                 "failed_attempts": FAST},
    "rc_joins": {"local": FAST, "remote": FAST},
    "rc_joins_per_room": FAST,
    "rc_invites": {"per_room": FAST, "per_user": FAST, "per_issuer": FAST},
    "rc_admin_redaction": FAST,
    "rc_federation": {"window_size": 1000, "sleep_limit": 1000,
                      "sleep_delay": 1, "reject_limit": 1000,
                      "concurrent": 100},
    "default_room_version": "10",
    "enable_registration": False,
}

# What Synapse 1.67 logs when a signature, a key or a content hash of what
# another server sent does not verify (synapse/crypto/keyring.py,
# synapse/federation/federation_base.py and federation_client.py): the
# constant start of each message. test_zzz_verified checks that each is
# in Synapse's source as it is.
SYNAPSE_VERIFY_FAILURES = [
    "Signature on retrieved event ",            # send_join's events too
    "Failed to find copy of ",                  # ... with valid signature
    "unable to verify signature for ",          # InvalidEventSignatureError
    "content has been tampered, redacting",     # hash mismatch
    "Key lookup failed from ",
    "Error looking up keys ",
    "Error getting keys ",
    "Unable to get key from ",
    "Error processing response from key notary server ",
]
BAD_SYNAPSE_LOG = re.compile("|".join(re.escape(m)
                                      for m in SYNAPSE_VERIFY_FAILURES))


def doc_blocks(lang):
    text = OPERATIONS.read_text()
    return re.findall(r"```" + lang + r"\n(.*?)```", text, re.S)


def doc_nginx_single():
    """Section 3's configuration: the edge in front of one homeserver."""
    return [b for b in doc_blocks("nginx") if "server {" in b][0]


def doc_synapse_yaml():
    """Section 3's homeserver.yaml settings for the Synapse behind it."""
    found = [b for b in doc_blocks("yaml") if "x_forwarded" in b]
    assert len(found) == 1, "operations.md: one homeserver.yaml block"
    return found[0]


def doc_exec_start(unit):
    """The ExecStart command line of a systemd unit of section 9, split
    into words (continuation lines joined)."""
    import shlex
    for block in doc_blocks("ini"):
        if f"matrix-join-ctl {unit}" in block:
            m = re.search(r"^ExecStart=((?:.*\\\n)*.*)$", block, re.M)
            return shlex.split(m.group(1).replace("\\\n", " "))
    raise AssertionError(f"operations.md: no unit running {unit}")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(directory, cn="localhost"):
    """A self-signed certificate and key (openssl): (cert, key) paths."""
    cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", f"/CN={cn}",
                    "-keyout", str(key), "-out", str(cert)],
                   capture_output=True, check=True, timeout=60)
    return cert, key


class Synapse:
    """One Synapse process in directory d.

    behind_edge: server_name and listener come from operations.md's block
    (plain HTTP on 127.0.0.1 with x_forwarded, the edge terminating TLS);
    otherwise it listens for federation with TLS on its own port, its
    server name localhost:<that port>, and for clients on plain HTTP."""

    def __init__(self, label, d, server_name=None, behind_edge=False):
        self.label = label
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.behind_edge = behind_edge
        self.http_port = free_port()           # client API (and federation
        self.fed_port = None                   # for the one behind the edge)
        self.secret = "interop-shared-secret-" + label
        self.key_path = self.dir / "homeserver.signing.key"
        self.log_path = self.dir / "homeserver.log"
        self.config_path = self.dir / "homeserver.yaml"
        self.proc = None
        self.logf = None
        self.app_service_files = []
        if behind_edge:
            self.server_name = server_name
        else:
            self.fed_port = free_port()
            self.server_name = f"localhost:{self.fed_port}"
            self.cert, self.tls_key = self_signed(self.dir)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def config(self, with_app_services=True):
        if self.behind_edge:
            text = doc_synapse_yaml()
            text = text.replace('"example.org"', json.dumps(self.server_name))
            text = text.replace("/etc/matrix-synapse/homeserver.signing.key",
                                str(self.key_path))
            text = text.replace("port: 8008", f"port: {self.http_port}")
            conf = yaml.safe_load(text)
            regs = conf.pop("app_service_config_files", None)
            assert regs, "operations.md's block names the registration"
            if with_app_services and self.app_service_files:
                conf["app_service_config_files"] = [
                    str(p) for p in self.app_service_files]
        else:
            conf = {
                "server_name": self.server_name,
                "signing_key_path": str(self.key_path),
                "tls_certificate_path": str(self.cert),
                "tls_private_key_path": str(self.tls_key),
                "listeners": [
                    {"port": self.fed_port, "bind_addresses": ["127.0.0.1"],
                     "type": "http", "tls": True,
                     "resources": [{"names": ["federation"]}]},
                    {"port": self.http_port, "bind_addresses": ["127.0.0.1"],
                     "type": "http", "tls": False,
                     "resources": [{"names": ["client"]}]},
                ],
            }
        conf.update(TEST_SETTINGS)
        conf.update({
            "pid_file": str(self.dir / "homeserver.pid"),
            "media_store_path": str(self.dir / "media"),
            "database": {"name": "sqlite3", "args": {
                "database": str(self.dir / "homeserver.db")}},
            "registration_shared_secret": self.secret,
            "macaroon_secret_key": "interop-macaroon-" + self.label,
            "form_secret": "interop-form-" + self.label,
        })
        return conf

    def env(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = f"{SYNAPSE}/src:{SYNAPSE}/shim"
        return env

    def generate_keys(self):
        """Synapse writes its own signing key (the file the edge reads)."""
        self.config_path.write_text(yaml.safe_dump(self.config()))
        return subprocess.Popen(
            ["/usr/bin/python3", "-m", "synapse.app.homeserver", "-c",
             str(self.config_path), "--generate-keys"], env=self.env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=self.dir)

    def start(self):
        """Starts the process; wait_up() waits for its listener."""
        self.config_path.write_text(yaml.safe_dump(self.config()))
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "synapse.app.homeserver", "-c",
             str(self.config_path)], env=self.env(), cwd=self.dir,
            stdout=self.logf, stderr=subprocess.STDOUT)
        return self

    def wait_up(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Synapse {self.label} exited with "
                                   f"{self.proc.returncode}:\n"
                                   + self.log_text()[-4000:])
            try:
                r = requests.get(self.url + "/_matrix/client/versions",
                                 timeout=1)
                if r.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Synapse {self.label} did not answer within "
                           f"{timeout} s:\n" + self.log_text()[-4000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.logf:
            self.logf.close()
            self.logf = None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def bad_log_lines(self):
        return [line for line in self.log_text().splitlines()
                if BAD_SYNAPSE_LOG.search(line)]

    def key_line(self):
        """(key version, seed base64) of its signing key file."""
        alg, version, seed = self.key_path.read_text().split()
        assert alg == "ed25519"
        return version, seed

    # users: the shared-secret admin registration API
    def register(self, localpart, admin=False):
        url = self.url + "/_synapse/admin/v1/register"
        nonce = requests.get(url, timeout=30).json()["nonce"]
        password = "pw-" + localpart
        # HMAC-SHA1 of nonce NUL user NUL password NUL "admin"/"notadmin"
        msg = "\x00".join([nonce, localpart, password,
                           "admin" if admin else "notadmin"])
        mac = hmac.new(self.secret.encode(), msg.encode(), hashlib.sha1)
        r = requests.post(url, json={
            "nonce": nonce, "username": localpart, "password": password,
            "admin": admin, "mac": mac.hexdigest()}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        return Client(self, body["user_id"], body["access_token"])


def q(s):
    return urllib.parse.quote(s, safe="")


class Client:
    """A user of a Synapse, on its client API (v3)."""

    def __init__(self, hs, user_id, token):
        self.hs = hs
        self.user_id = user_id
        self.token = token
        self.txn = 0

    def call(self, method, path, body=None, params=None, timeout=120):
        r = requests.request(method, self.hs.url + "/_matrix/client/v3"
                             + path, json=body, params=params,
                             headers={"Authorization":
                                      f"Bearer {self.token}"},
                             timeout=timeout)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, {"raw": r.text}

    def ok(self, method, path, body=None, params=None):
        status, body_ = self.call(method, path, body, params)
        assert status == 200, f"{method} {path}: {status} {body_}"
        return body_

    def create_room(self, alias=None, version="10", preset="public_chat",
                    join_rule=None, allow=None, invite=()):
        body = {"preset": preset, "room_version": str(version),
                "invite": list(invite)}
        if alias:
            body["room_alias_name"] = alias
        if join_rule:
            content = {"join_rule": join_rule}
            if allow:
                content["allow"] = [{"type": "m.room_membership",
                                     "room_id": r} for r in allow]
            body["initial_state"] = [{"type": "m.room.join_rules",
                                      "state_key": "", "content": content}]
        return self.ok("POST", "/createRoom", body)["room_id"]

    def join(self, room):
        return self.call("POST", f"/join/{q(room)}", {})

    def knock(self, room, reason="let me in"):
        return self.call("POST", f"/knock/{q(room)}", {"reason": reason})

    def leave(self, room_id):
        return self.ok("POST", f"/rooms/{q(room_id)}/leave", {})

    def ban(self, room_id, user_id, reason="interop"):
        return self.ok("POST", f"/rooms/{q(room_id)}/ban",
                       {"user_id": user_id, "reason": reason})

    def invite(self, room_id, user_id):
        return self.ok("POST", f"/rooms/{q(room_id)}/invite",
                       {"user_id": user_id})

    def send(self, room_id, text):
        self.txn += 1
        return self.ok("PUT", f"/rooms/{q(room_id)}/send/m.room.message/"
                       f"t{self.txn}-{time.monotonic_ns()}",
                       {"msgtype": "m.text", "body": text})["event_id"]

    def membership(self, room_id, user_id):
        """user_id's membership in room_id as this server sees it, or
        None (no member event)."""
        status, body = self.call(
            "GET", f"/rooms/{q(room_id)}/state/m.room.member/{q(user_id)}")
        if status == 404:
            return None
        assert status == 200, f"member state: {status} {body}"
        return body.get("membership")

    def members(self, room_id):
        """{user_id: membership} from /members."""
        body = self.ok("GET", f"/rooms/{q(room_id)}/members")
        return {e["state_key"]: e["content"].get("membership")
                for e in body["chunk"]}

    def messages(self, room_id, limit=50):
        body = self.ok("GET", f"/rooms/{q(room_id)}/messages",
                       params={"dir": "b", "limit": str(limit)})
        return [e for e in body["chunk"] if e["type"] == "m.room.message"]

    def invites(self):
        """Room IDs this user is invited to (a full /sync)."""
        body = self.ok("GET", "/sync", params={"timeout": "0"})
        return set(body.get("rooms", {}).get("invite", {}))

    def resolve(self, alias):
        return self.ok("GET", f"/directory/room/{q(alias)}")["room_id"]


def poll(what, check, timeout=60.0, interval=0.2):
    """check() until it returns something true; fails after timeout with
    the last value. The timeout bounds a hang; it measures nothing."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


if __name__ == "__main__":
    sys.exit("a library of t/interop")
