#!/usr/bin/python3
"""The actors of the main job (t/run), on matrix-org's libraries only.

Nothing here runs or trusts our C code: requests and events are signed
with python3-signedjson, the answers are judged by t/lib/mxj_joiner.py
against the room as t/lib/mxj_room.py generated it.

    homeserver   the stand-in homeserver of t/lib/mxj_homeserver.py with
                 a demo room (NAME's room, members on many servers,
                 every event signed), one joining server it accepts
                 joins from (REMOTE), a log line per request on standard
                 output; writes DIR/demo.json (what the other commands
                 read), NAME's signing key (Synapse's format, for the
                 edge's matrix_signing_key and sync's --signing-key) and
                 the room's snapshot file (for `matrix-join-ctl load`).
    join         REMOTE joins the room through the edge: directory query,
                 make_join, send_join, each step printed (status, bytes,
                 times), the answer verified (hashes, signatures, event
                 IDs, the state at the join's prev_events, the auth chain
                 closed and exact); then waits until the forwarder has
                 delivered the join to the homeserver and shows it there.
    request      one request signed with X-Matrix (as REMOTE, or as NAME)
                 sent to the edge (or to the homeserver); prints the
                 answer.

    /usr/bin/python3 t/lib/mxj_demo.py homeserver --dir build/run \\
        --edge-url https://127.0.0.1:8448 [--name hs.localhost] \\
        [--members 3000] [--servers 60] [--version 10] [--seed 1]
    /usr/bin/python3 t/lib/mxj_demo.py join [--user @me:remote.localhost]
    /usr/bin/python3 t/lib/mxj_demo.py request [--as homeserver] \\
        [--to homeserver] METHOD TARGET [BODY]

The demo room is deterministic (its seed): `join` builds the same room
again to judge the answers, and takes the joins accepted since from the
homeserver (GET /event as NAME), where the forwarder delivered them.
"""

import argparse
import hashlib
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from signedjson.key import get_verify_key, read_signing_keys  # noqa: E402

import mxj_authcheck as judge  # noqa: E402
import mxj_http  # noqa: E402
import mxj_joiner  # noqa: E402
import mxj_room  # noqa: E402
from mxj_homeserver import HomeRoom, Homeserver, home_key  # noqa: E402
from mxj_joiner import Joiner, View, parse_xmatrix, ref_ids  # noqa: E402
from mxj_remote import RemoteServer  # noqa: E402

TOP = Path(__file__).resolve().parents[2]
DEFAULT_DIR = Path(os.environ.get("MXJ_RUN_DIR") or TOP / "build" / "run")
FED = "/_matrix/federation/v1"
EVERY_VER = "&".join(f"ver={v}" for v in mxj_room.VERSIONS)


def now_ms():
    return int(time.time() * 1000)


def q(s):
    return urllib.parse.quote(s, safe="")


def remote_server(name):
    """The joining server: a fixed key per name, so that every process of
    the demo signs with the same one."""
    seed = hashlib.sha256(f"mxj-demo:{name}".encode()).digest()
    return RemoteServer(name, key_version="k1", seed=seed)


def demo_room(cfg):
    """The homeserver's room as generated (deterministic by its seed)."""
    key = home_key(cfg["server_name"], cfg["seed"])
    return HomeRoom(cfg["server_name"], key, cfg["room_version"],
                    cfg["members"], cfg["servers"], cfg["seed"])


# -- the homeserver -----------------------------------------------------------

class DemoHomeserver(Homeserver):
    """The stand-in homeserver, writing one line per request it served."""

    def _answer(self, req):
        status, headers, body = super()._answer(req)
        path = req.target.partition("?")[0]
        origin = ""
        for k, v in req.headers:
            if k.lower() == "authorization" and v.startswith("X-Matrix"):
                try:
                    origin = parse_xmatrix(v).get("origin", "")
                except AssertionError:
                    origin = "(malformed)"
        what = ""
        if "/send_join/" in path and status == 200:
            eid = urllib.parse.unquote(path.rsplit("/", 1)[-1])
            with self._lock:
                what = f" join {self.join_answers.get(eid, '?')}"
        t = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + \
            f".{int(t * 1000) % 1000:03d}"
        print(f"{stamp} {req.method} {req.target} origin={origin or '-'} "
              f"-> {status}, {len(req.body or b'')} bytes in, "
              f"{len(body)} bytes out{what}", flush=True)
        return status, headers, body


def cmd_homeserver(a):
    d = Path(a.dir)
    (d / "conf").mkdir(parents=True, exist_ok=True)
    key_file = d / "conf" / "signing.key"
    t0 = time.monotonic()
    hs = DemoHomeserver(a.name, members=a.members, servers=a.servers,
                        version=a.version, seed=a.seed,
                        key_file=str(key_file), port=a.port)
    os.chmod(key_file, 0o600)
    remote = hs.add_remote(remote_server(a.remote))
    room = hs.room
    snapshot = d / "demo-room.json"
    room.write(snapshot)
    cfg = {
        "homeserver_url": hs.url, "server_name": hs.name,
        "signing_key": str(key_file), "room_id": room.room_id,
        "alias": room.alias, "room_version": room.version,
        "members": a.members, "servers": a.servers, "seed": a.seed,
        "joined": len(room.joined()),
        "servers_with_members": len({mxj_joiner.server_of(u)
                                     for u in room.joined()}),
        "remote": remote.name, "remote_key_id": remote.key_id,
        "edge_url": a.edge_url, "edge_cert": a.edge_cert,
        "snapshot": str(snapshot), "pid": os.getpid(),
    }
    tmp = d / "demo.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=1) + "\n")
    os.replace(tmp, d / "demo.json")
    print(f"homeserver {hs.name} on {hs.url}: room {room.room_id} "
          f"({room.alias}), version {room.version}, {cfg['joined']} joined "
          f"members on {cfg['servers_with_members']} servers, every event "
          f"signed; generated in {time.monotonic() - t0:.1f} s; accepts "
          f"joins from {remote.name}", flush=True)
    done = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    hs.stop()
    print("homeserver stopped", flush=True)
    return 0


# -- HTTP ---------------------------------------------------------------------

def call(base, method, target, auth=None, body=None, cafile=None,
         timeout=60):
    """One request to base (http:// or https://) with the raw target as
    given; returns an mxj_http.Reply. https: the certificate is checked
    against cafile (the demo's self-signed one), not against a host
    name."""
    u = urllib.parse.urlsplit(base)
    tls = mxj_http.tls_context(cafile) if u.scheme == "https" else None
    port = u.port or (443 if tls else 80)
    return mxj_http.send(port, method, target, u.netloc,
                         auth=[auth] if auth else [], body=body,
                         content_type="application/json", timeout=timeout,
                         address=u.hostname, tls=tls)


def load_config(a):
    path = Path(a.config) if a.config else DEFAULT_DIR / "demo.json"
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        sys.exit(f"{path}: not found: is t/run running? (it writes this "
                 "file when the homeserver is up)")
    return cfg


def home_signing_key(cfg):
    with open(cfg["signing_key"]) as f:
        return read_signing_keys(f)[0]


class Demo:
    """What the join and request commands talk to."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg["server_name"]
        self.remote = remote_server(cfg["remote"])
        self.home = RemoteServer(self.name)     # signs as NAME, its key:
        key = home_signing_key(cfg)
        self.home.keys = {f"{key.alg}:{key.version}": key}
        self.home.key_version = key.version
        self.home_key = key

    def edge(self, method, target, body=None, signer=None, timeout=60):
        signer = signer or self.remote
        content = json.loads(body) if body is not None else None
        auth = signer.auth_header(method, target, self.name, content=content)
        return call(self.cfg["edge_url"], method, target, auth, body,
                    self.cfg.get("edge_cert"), timeout)

    def homeserver(self, method, target, body=None, signer=None,
                   timeout=30):
        """A request to the homeserver, signed as NAME (its reads are
        served to NAME alone)."""
        signer = signer or self.home
        content = json.loads(body) if body is not None else None
        auth = signer.auth_header(method, target, self.name, content=content)
        return call(self.cfg["homeserver_url"], method, target, auth, body,
                    None, timeout)

    def fetch_event(self, eid):
        r = self.homeserver("GET", f"{FED}/event/{q(eid)}")
        if r.status != 200:
            return None
        return r.json()["pdus"][0]


# -- join ---------------------------------------------------------------------

def size(n):
    if n < 10000:
        return f"{n} bytes"
    if n < 10 ** 7:
        return f"{n / 1000:.1f} kB"
    return f"{n / 10 ** 6:.1f} MB"


def ms(s):
    return f"{s * 1000:.1f} ms"


def n_of(n, what):
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def step(n, title, r, target, extra=""):
    print(f"{n}. {title}")
    print(f"   {target if len(target) <= 120 else target[:117] + '...'}")
    print(f"   -> {r.status}, {size(len(r.body))}, first byte "
          f"{ms(r.ttfb)}, last byte {ms(r.total)}{extra}", flush=True)


def fail(what, r=None):
    print(f"FAILED: {what}", flush=True)
    if r is not None:
        print(f"   answer: {r.status} {r.body[:600]!r}", flush=True)
    return 1


def judge_keys(room, demo):
    keys = {s: room.verify_key(s) for s in room.server_keys}
    keys[demo.remote.name] = get_verify_key(demo.remote.signing_key())
    keys[demo.name] = get_verify_key(demo.home_key)
    return keys


def learn_joins(demo, room, view, prev, keys, wait_s):
    """The events among prev (and their ancestors) that the generated room
    does not have: joins accepted at the edge earlier, which the
    homeserver has once the forwarder delivered them. Each is checked
    (hash, signature, event ID) and added to the view, oldest first."""
    found = {}
    todo = [e for e in prev if e not in room.events]
    deadline = time.monotonic() + wait_s
    while todo:
        eid = todo.pop()
        if eid in found or eid in room.events:
            continue
        ev = demo.fetch_event(eid)
        while ev is None and time.monotonic() < deadline:
            time.sleep(0.2)
            ev = demo.fetch_event(eid)
        if ev is None:
            raise AssertionError(
                f"{eid} (a prev_event of the template) is neither an "
                f"event of the generated room nor known to the homeserver "
                f"after {wait_s} s: an earlier join not delivered yet? "
                "(build/matrix-join-ctl outbox --redis ...)")
        got = judge.verify_crypto(room.version, ev, keys)
        assert got == eid, f"the homeserver's {eid} has the ID {got}"
        found[eid] = ev
        todo.extend(ref_ids(ev["prev_events"]))
    for eid, ev in sorted(found.items(), key=lambda kv: kv[1]["depth"]):
        assert ev.get("type") == "m.room.member", \
            f"{eid}: {ev.get('type')} is not a join"
        view.accept(ev)
    return list(found)


def judge_template(room, tpl, user, keys):
    """The template: the room and user, prev_events at the room's tip,
    depth, the auth events selection, the join auth rules allow it."""
    ev = dict(tpl)
    assert ev.get("room_id") == room.room_id, f"room_id {ev.get('room_id')}"
    assert ev.get("sender") == user and ev.get("state_key") == user
    assert ev.get("type") == "m.room.member" and \
        ev.get("content", {}).get("membership") == "join"
    prev = judge.check_refs(room, ev.get("prev_events"), "prev_events")
    tip = set(room.extremity_ids)
    assert prev and set(prev) <= tip, \
        f"prev_events {prev} are not forward extremities {sorted(tip)}"
    want = max(room.events[e]["depth"] for e in prev) + 1
    assert ev.get("depth") == want, f"depth {ev.get('depth')}, want {want}"
    auth = judge.check_auth_events(room, ev)
    judge.check_auth_rules(room, ev, keys, auth)
    return prev


def grep_lines(path, needle, limit=3):
    if not path:
        return []
    try:
        with open(path, errors="replace") as f:
            return [ln.rstrip("\n") for ln in f if needle in ln][-limit:]
    except OSError:
        return []


def user_id_form(user):
    """Why user is not "@localpart:server", or None."""
    if not user.startswith("@"):
        return "a user ID starts with \"@\""
    local, sep, server = user[1:].partition(":")
    if not sep or not local or not server:
        return "a user ID is \"@localpart:server\""
    return None


def cmd_join(a):
    if a.user is not None and user_id_form(a.user):
        sys.exit(f"--user: {a.user!r} is not a user ID: "
                 f"{user_id_form(a.user)} (for example "
                 "@me:remote.localhost)")
    cfg = load_config(a)
    demo = Demo(cfg)
    name = demo.name
    user = a.user or f"@visitor{now_ms() % 100000}:{demo.remote.name}"
    if mxj_joiner.server_of(user) != demo.remote.name:
        sys.exit(f"--user: {user} is not a user of {demo.remote.name}, "
                 "the joining server")
    joiner = Joiner(demo.remote, user[1:].split(":", 1)[0])
    t_gen = time.monotonic()
    room = demo_room(cfg)
    room.add_server(demo.remote.name, key=demo.remote.signing_key())
    view = View(room)
    keys = judge_keys(room, demo)
    print(f"{demo.remote.name} joins {room.alias} through the edge "
          f"{cfg['edge_url']} as {user} (the room regenerated from its "
          f"seed to judge the answers, {time.monotonic() - t_gen:.1f} s)",
          flush=True)
    print()
    try:
        # 1. directory query
        target = f"{FED}/query/directory?room_alias={q(room.alias)}"
        r = demo.edge("GET", target)
        if r.status != 200:
            return fail("directory query", r)
        doc = r.json()
        srv = doc.get("servers", [])
        step(1, f"directory query: which room is {room.alias}, and who "
                "can answer a join?", r, "GET " + target,
             f"\n   room {doc.get('room_id')}, {len(srv)} servers: "
             f"{', '.join(srv[:4])}{', ...' if len(srv) > 4 else ''}")
        assert doc.get("room_id") == room.room_id, \
            f"room_id {doc.get('room_id')}, the room is {room.room_id}"
        assert srv and srv[0] == name, f"{name} is not first: {srv[:3]}"
        print()

        # 2. make_join
        target = f"{FED}/make_join/{q(room.room_id)}/{q(user)}?{EVERY_VER}"
        r = demo.edge("GET", target)
        if r.status != 200:
            return fail("make_join", r)
        doc = r.json()
        tpl = doc["event"]
        step(2, "make_join: a join event template", r, "GET " + target,
             f"\n   room version {doc.get('room_version')}, depth "
             f"{tpl.get('depth')}, prev_events "
             f"{ref_ids(tpl.get('prev_events', []))}, "
             f"{len(tpl.get('auth_events', []))} auth_events")
        assert doc.get("room_version") == room.version
        earlier = learn_joins(demo, room, view,
                              ref_ids(tpl.get("prev_events", [])), keys,
                              a.wait)
        if earlier:
            print(f"   (joins accepted earlier, as the homeserver has them: "
                  f"{len(earlier)})")
        judge_template(room, tpl, user, keys)
        print("   template checked: prev_events are the room's forward "
              "extremities, depth, auth_events = the selection for a join, "
              "the join rules allow it", flush=True)
        print()

        # 3. send_join
        ev = joiner.fill(room.version, tpl)
        eid = mxj_joiner.event_id(room.version, ev)
        query = "?omit_members=true" if a.omit_members else ""
        target = mxj_joiner.send_join_target(room.room_id, eid, 2, query)
        body = mxj_joiner.body_bytes(ev)
        r = demo.edge("PUT", target, body=body, timeout=120)
        if r.status != 200:
            return fail("send_join", r)
        ans = r.json()
        step(3, f"send_join: the signed join ({size(len(body))}), event "
                f"{eid}", r, "PUT " + target,
             f"\n   {n_of(len(ans.get('state', [])), 'state event')}, "
             f"{n_of(len(ans.get('auth_chain', [])), 'auth chain event')}"
             + (f", members_omitted, {len(ans.get('servers_in_room', []))}"
                " servers_in_room" if a.omit_members else ""))
        t0 = time.monotonic()
        got = mxj_joiner.check_answer(
            room, view, ev, ans, keys, our_name=name,
            our_key=demo.home_key, omit_members=a.omit_members,
            own_auth_in_chain=True)
        signers = {mxj_joiner.server_of(e["sender"])
                   for e in ans["state"] + ans["auth_chain"]}
        print(f"   answer verified with python3-signedjson in "
              f"{time.monotonic() - t0:.1f} s:")
        print(f"     every event ({len(ans['state']) + len(ans['auth_chain'])}"
              f"): content hash, the signature of its sender's server "
              f"(the keys of {n_of(len(signers), 'server')}), event ID "
              "recomputed, the room's event byte for byte (as JSON)")
        print(f"     state: {n_of(len(got['state']), 'event')}, one per key "
              "= the room's state at the join's prev_events"
              + (" (partial state)" if a.omit_members else ""))
        print(f"     auth_chain: {n_of(len(got['auth']), 'event')}, closed "
              "(every auth event of the join, the state and the chain is in "
              "the answer), exactly the chain of the state and the join, none "
              "twice")
        print("     event: the join as sent", flush=True)
        view.accept(ans["event"])
        print()

        # 4. the forwarder delivers it to the homeserver
        print("4. the forwarder replays the join to the homeserver")
        deadline = time.monotonic() + a.wait
        have = demo.fetch_event(eid)
        while have is None and time.monotonic() < deadline:
            time.sleep(0.1)
            have = demo.fetch_event(eid)
        if have is None:
            print(f"FAILED: the homeserver does not have {eid} after "
                  f"{a.wait} s", flush=True)
            for ln in grep_lines(a.forward_log, "forward:", 5):
                print(f"   forwarder: {ln}")
            return 1
        assert have == ans["event"], "the homeserver holds another event"
        for ln in grep_lines(a.forward_log, eid, 2):
            print(f"   forwarder:  {ln}")
        for ln in grep_lines(a.homeserver_log, "/send_join/", 50):
            if q(eid) in ln:
                print(f"   homeserver: {ln}")
        print(f"   the homeserver has it: GET /_matrix/federation/v1/event/"
              f"... signed as {name} -> 200, the same event")
        admin = f"@admin:{name}"
        target = f"{FED}/make_join/{q(room.room_id)}/{q(admin)}?{EVERY_VER}"
        r = demo.homeserver("GET", target)
        if r.status == 200:
            prev = ref_ids(r.json()["event"]["prev_events"])
            assert eid in prev, f"the join is not a forward extremity of " \
                                f"the homeserver's room: {prev}"
            print(f"   and it is a forward extremity of the homeserver's "
                  f"room (its make_join for {admin} builds on it)")
        print()
        print(f"verified: {user} joined {room.room_id} through the edge, "
              "and the homeserver has the join", flush=True)
        return 0
    except AssertionError as e:
        return fail(f"verification: {e}")
    except (OSError, http.client.HTTPException) as e:
        return fail(f"request: {e}")


# -- request ------------------------------------------------------------------

def cmd_request(a):
    cfg = load_config(a)
    demo = Demo(cfg)
    signer = demo.home if a.as_ == "homeserver" else demo.remote
    body = None
    if a.body is not None:
        body = a.body.encode() if not a.body.startswith("@") \
            else Path(a.body[1:]).read_bytes()
        json.loads(body)            # X-Matrix signs the parsed body
    target = a.target
    if not target.startswith("/"):
        sys.exit("TARGET: a path with its query, as it goes on the wire "
                 "(percent-encoded), starting with /")
    send = demo.homeserver if a.to == "homeserver" else demo.edge
    content = json.loads(body) if body is not None else None
    if a.show_auth:
        print("Authorization: " + signer.auth_header(
            a.method, target, demo.name, content=content), file=sys.stderr)
    r = send(a.method, target, body=body, signer=signer)
    print(f"{r.status} ({size(len(r.body))}, {ms(r.total)})",
          file=sys.stderr)
    text = r.body
    try:
        text = json.dumps(json.loads(r.body), indent=1,
                          ensure_ascii=False).encode()
    except ValueError:
        pass
    if a.max and len(text) > a.max:
        sys.stdout.buffer.write(text[:a.max] + b"\n")
        print(f"... ({len(text) - a.max} more bytes; --max 0 prints all)",
              file=sys.stderr)
    else:
        sys.stdout.buffer.write(text + b"\n")
    return 0 if 200 <= r.status < 300 else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    h = sub.add_parser("homeserver", help="run the stand-in homeserver")
    h.add_argument("--dir", default=str(DEFAULT_DIR))
    h.add_argument("--name", default="hs.localhost")
    h.add_argument("--members", type=int, default=3000)
    h.add_argument("--servers", type=int, default=60)
    h.add_argument("--version", default="10", choices=mxj_room.VERSIONS)
    h.add_argument("--seed", type=int, default=1)
    h.add_argument("--remote", default="remote.localhost")
    h.add_argument("--port", type=int, default=0)
    h.add_argument("--edge-url", default="https://127.0.0.1:8448")
    h.add_argument("--edge-cert")

    j = sub.add_parser("join", help="join the demo room through the edge")
    j.add_argument("--config", help="demo.json (default: in MXJ_RUN_DIR "
                                    "or build/run/)")
    j.add_argument("--user", help="@localpart:<remote> (default: a new "
                                  "@visitorN)")
    j.add_argument("--omit-members", action="store_true",
                   help="ask for the partial state")
    j.add_argument("--wait", type=float, default=20.0,
                   help="seconds to wait for the forwarder's delivery")
    j.add_argument("--forward-log")
    j.add_argument("--homeserver-log")

    r = sub.add_parser("request", help="send one signed request")
    r.add_argument("--config", help="demo.json (default: in MXJ_RUN_DIR "
                                    "or build/run/)")
    r.add_argument("--as", dest="as_", choices=("remote", "homeserver"),
                   default="remote", help="sign as the joining server "
                   "(default) or as the homeserver's NAME")
    r.add_argument("--to", choices=("edge", "homeserver"), default="edge")
    r.add_argument("--max", type=int, default=3000,
                   help="print at most this many bytes of the answer")
    r.add_argument("--show-auth", action="store_true",
                   help="print the Authorization header on stderr")
    r.add_argument("method")
    r.add_argument("target")
    r.add_argument("body", nargs="?", help="JSON, or @FILE")

    a = p.parse_args(argv)
    return {"homeserver": cmd_homeserver, "join": cmd_join,
            "request": cmd_request}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
