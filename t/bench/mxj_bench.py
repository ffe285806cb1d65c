"""What the wrk benchmarks share: a private redis-server and nginx on
127.0.0.1 with a generated room loaded, a remote server whose key is in the
Redis key cache, wrk runs, and request rotations for distinct signatures.
Everything is written under build/bench/<name>/."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(TOP / "t" / "lib"), str(TOP / "t" / "integration")]

import mxj_nginx  # noqa: E402
import mxj_redis  # noqa: E402
import mxj_remote  # noqa: E402
import mxj_room  # noqa: E402

SERVER = "edge.bench"
REMOTE = "remote.bench"


def prepare():
    subprocess.run([str(TOP / "t" / "lib" / "ensure-packages"), "wrk"],
                   check=True)
    subprocess.run([str(TOP / "t" / "build")], check=True,
                   stdout=subprocess.DEVNULL)


def wrk(url, header, duration, connections, script=None):
    """requests/s, p50, p99; fails on any non-2xx answer."""
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s",
           "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    if script:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=duration + 60).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise SystemExit(f"wrk saw {bad.group(1)} error answers:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
    return rps, p50, p99


def rotation(path, pairs):
    """A wrk script that sends (uri, Authorization) pairs in turn."""
    def lua(s):
        return s.replace("\\", "\\\\").replace('"', '\\"')
    with open(path, "w") as f:
        f.write("local r = {}\n")
        for i, (u, h) in enumerate(pairs):
            f.write(f'r[{i + 1}] = {{"{lua(u)}", "{lua(h)}"}}\n')
        # formatted in init(): wrk sets the Host header after loading
        f.write("local q, i = {}, 0\n"
                "init = function(args)\n"
                "  for k, v in ipairs(r) do\n"
                "    q[k] = wrk.format('GET', v[1], "
                "{['Authorization'] = v[2]})\n"
                "  end\n"
                "end\n"
                "request = function()\n"
                "  i = i % #q + 1\n"
                "  return q[i]\n"
                "end\n")
    return path


class Bench:
    """redis + nginx + a loaded room; use as a context manager."""

    def __init__(self, name, members, servers, workers=1, aliases=(),
                 server=SERVER, http=""):
        self.work = TOP / "build" / "bench" / name
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.rs = mxj_redis.RedisServer().start()
        self.nginx = mxj_nginx.Nginx(workers=workers)
        self.remote = mxj_remote.RemoteServer(REMOTE)

        self.room = mxj_room.Room(version="10", members=members,
                                  servers=servers, seed=5)
        snap = self.work / "room.json"
        self.room.write(snap)
        if aliases:
            doc = json.loads(snap.read_text())
            doc["aliases"] = list(aliases)
            snap.write_text(json.dumps(doc))
        subprocess.run([str(mxj_nginx.CTL), "load", "--redis",
                        self.rs.address, str(snap)], check=True,
                       stdout=subprocess.DEVNULL)

        self.rs.client().hset(
            f"mxj:keys:{REMOTE}", self.remote.key_id,
            json.dumps({"key": self.remote.verify_key_b64(),
                        "valid_until_ts": int(time.time() * 1000)
                        + 86400000}, separators=(",", ":"), sort_keys=True))

        self.server = server
        key = subprocess.run([str(mxj_nginx.CTL), "keygen", server],
                             capture_output=True, text=True).stdout
        self.nginx.write_file("signing.key", key, 0o600)
        self.http = http

    def start(self, locations):
        self.nginx.write_conf(f"""
            matrix_server_name {self.server};
            matrix_signing_key signing.key;
            matrix_redis {self.rs.address};
            {self.http}
            server {{
                listen 127.0.0.1:$PORT;
                access_log off;
                {locations}
            }}
            """)
        self.nginx.start()

    def restart(self, locations):
        self.nginx.stop()
        self.start(locations)

    def header(self, uri):
        return self.remote.auth_header("GET", uri, self.server)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.nginx.stop()
        bad = self.nginx.bad_log_lines()
        self.nginx.cleanup()
        self.rs.cleanup()
        if bad:
            raise SystemExit("nginx error log has alerts:\n" + "\n".join(bad))


def static_location(size):
    return f"""
        location = /static {{
            default_type application/json;
            return 200 '{"y" * size}';
        }}"""


def report(rows, baseline):
    """rows: (label, (rps, p50, p99)); baseline: the static row's rps."""
    for label, (rps, p50, p99) in rows:
        print(f"{label:42s} {rps:8.0f} req/s  p50 {p50:>8}  p99 {p99:>8}  "
              f"{100 * rps / baseline:5.1f} %")


__all__ = ["Bench", "prepare", "report", "rotation", "static_location",
           "wrk", "SERVER", "REMOTE", "os"]


# -- for benchmarks of big rooms and PUT requests (t/bench/send_join) --------
# Everything above is left as it is: the directory and make_join benchmarks
# use it.

ROOMS = TOP / "build" / "bench" / "rooms"


def cached_room(members, servers, version="10", seed=5):
    """A generated room's snapshot file, made once per parameters and kept
    in build/bench/rooms/ (a room of 100,000 members takes a while to
    sign). Returns (path, info): info has room_id, state_events,
    auth_chain, bytes (canonical PDUs) and the seconds it took to make."""
    ROOMS.mkdir(parents=True, exist_ok=True)
    name = f"v{version}-m{members}-s{servers}-seed{seed}"
    snap, meta = ROOMS / f"{name}.json", ROOMS / f"{name}.info.json"
    if snap.exists() and meta.exists():
        return snap, json.loads(meta.read_text())
    t0 = time.monotonic()
    room = mxj_room.Room(version=str(version), members=members,
                         servers=servers, seed=seed)
    e = room.expected
    info = {"room_id": e["room_id"], "members": e["members"],
            "state_events": e["state_events"],
            "auth_chain": e["auth_chain"], "bytes": e["bytes"],
            "seconds": round(time.monotonic() - t0, 1)}
    tmp = snap.with_suffix(".tmp")
    room.write(tmp)
    tmp.rename(snap)
    meta.write_text(json.dumps(info))
    return snap, info


class Edge:
    """redis-server + nginx with the module, like Bench, but with no room
    of its own: load() puts snapshot files in (and again, to start from
    a fresh generation). Use as a context manager."""

    def __init__(self, name, server, workers=1):
        self.work = TOP / "build" / "bench" / name
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.rs = mxj_redis.RedisServer().start()
        self.nginx = mxj_nginx.Nginx(workers=workers)
        self.remote = mxj_remote.RemoteServer(REMOTE)
        self.server = server
        self.rs.client().hset(
            f"mxj:keys:{REMOTE}", self.remote.key_id,
            json.dumps({"key": self.remote.verify_key_b64(),
                        "valid_until_ts": int(time.time() * 1000)
                        + 86400000}, separators=(",", ":"), sort_keys=True))
        key = subprocess.run([str(mxj_nginx.CTL), "keygen", server],
                             capture_output=True, text=True,
                             check=True).stdout
        self.nginx.write_file("signing.key", key, 0o600)

    def load(self, snapshot):
        """matrix-join-ctl load; returns its wall time in seconds."""
        t0 = time.monotonic()
        subprocess.run([str(mxj_nginx.CTL), "load", "--redis",
                        self.rs.address, str(snapshot)], check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
        return time.monotonic() - t0

    def start(self, locations, http="", listen=""):
        self.nginx.write_conf(f"""
            matrix_server_name {self.server};
            matrix_signing_key signing.key;
            matrix_redis {self.rs.address};
            {http}
            server {{
                listen 127.0.0.1:$PORT {listen};
                access_log off;
                {locations}
            }}
            """)
        self.nginx.start()

    def restart(self, locations, http="", listen=""):
        self.nginx.stop()
        self.start(locations, http, listen)

    def workers(self):
        """PIDs of the nginx worker processes (waits until all run)."""
        master = self.nginx.proc.pid
        deadline = time.monotonic() + 10
        while True:
            out = []
            for task in Path(f"/proc/{master}/task").iterdir():
                kids = (task / "children").read_text().split()
                out += [int(k) for k in kids]
            if len(out) >= self.nginx.workers or \
                    time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.nginx.stop()
        self.bad = self.nginx.bad_log_lines()
        self.nginx.cleanup()
        self.rs.cleanup()
        if self.bad and exc[0] is None:
            raise SystemExit("nginx error log has alerts:\n"
                             + "\n".join(self.bad))


def smaps(pid):
    """/proc/<pid>/smaps in kB, summed: Rss, Pss, Anonymous (pages of the
    process's private mappings: heap, stacks, ...) and zone (Rss of its
    shared mappings: nginx's shared memory zones)."""
    out = {"Rss": 0, "Pss": 0, "Anonymous": 0, "zone": 0}
    shared = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5 and len(parts[1]) == 4:
            shared = parts[1][3] == "s"     # a mapping's header: rw-s
            continue
        if len(parts) != 3 or parts[2] != "kB":
            continue
        name, kb = parts[0].rstrip(":"), int(parts[1])
        if name in ("Rss", "Pss", "Anonymous"):
            out[name] += kb
        if name == "Rss" and shared:
            out["zone"] += kb
    return out


def proc_status(pid, field):
    """A /proc/<pid>/status field in kB (VmHWM, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid):
    """VmHWM starts again from the current RSS (Linux >= 4.0, root)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def proc_cpu(pid):
    """user + system CPU seconds of a process so far."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(client):
    i = client.info("cpu")
    return float(i["used_cpu_sys"]) + float(i["used_cpu_user"])


def commandstats(client):
    """{command: (calls, usec)} from INFO commandstats."""
    out = {}
    for k, v in client.info("commandstats").items():
        out[k.replace("cmdstat_", "")] = (int(v["calls"]), int(v["usec"]))
    return out


def commandstats_delta(before, after):
    return {k: (c - before.get(k, (0, 0))[0], u - before.get(k, (0, 0))[1])
            for k, (c, u) in after.items()
            if c != before.get(k, (0, 0))[0]}


def _us(s):
    """wrk's latency text (123.00us, 1.20ms, 2.00s) in microseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6,
                                "m": 6e7}[m.group(2)]


def wrk_run(url, duration, connections, script=None, header=None,
            timeout="30s"):
    """One wrk run, without judging it: {rps, p50, p99 (text), p50_us,
    p99_us, requests, non2xx, errors (socket errors, summed), mb (read),
    out}."""
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s",
           "--timeout", timeout, "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    if script:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         timeout=duration + 120).stdout
    r = {"out": out}
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    r["p50"] = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
    r["p99"] = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
    r["p50_us"], r["p99_us"] = _us(r["p50"]), _us(r["p99"])
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read",
                  out)
    r["requests"] = int(m.group(1))
    r["mb"] = float(m.group(4)) * {"B": 1e-6, "KB": 1e-3, "MB": 1,
                                   "GB": 1e3, "TB": 1e6}[m.group(5)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(bad.group(1)) if bad else 0
    err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+),"
                    r" timeout (\d+)", out)
    r["errors"] = sum(int(g) for g in err.groups()) if err else 0
    return r


def request_rotation(path, requests):
    """A wrk script that sends requests (method, uri, {header: value},
    body bytes or None) once each, in turn, and stops its thread when all
    were sent (so that none repeats). The requests are read from a data
    file at init (a Lua source with tens of thousands of string
    constants is more than LuaJIT takes)."""
    data = Path(str(path) + ".data")
    with open(data, "wb") as f:
        for method, uri, headers, body in requests:
            f.write(f"{method}\n{uri}\n{len(headers)}\n".encode())
            for k, v in headers.items():
                assert "\n" not in k + v
                f.write(f"{k}\n{v}\n".encode())
            body = body or b""
            f.write(f"{len(body)}\n".encode() + body + b"\n")
    lua = str(data).replace("\\", "\\\\").replace('"', '\\"')
    with open(path, "w") as f:
        # formatted in init(): wrk sets the Host header after loading
        f.write(f'local file = "{lua}"\n')
        f.write("local q, i = {}, 0\n"
                "init = function(args)\n"
                "  local f = assert(io.open(file, 'rb'))\n"
                "  while true do\n"
                "    local method = f:read('*l')\n"
                "    if not method then break end\n"
                "    local uri = f:read('*l')\n"
                "    local h = {}\n"
                "    for k = 1, tonumber(f:read('*l')) do\n"
                "      local name = f:read('*l')\n"
                "      h[name] = f:read('*l')\n"
                "    end\n"
                "    local n = tonumber(f:read('*l'))\n"
                "    local body = nil\n"
                "    if n > 0 then body = f:read(n) end\n"
                "    f:read('*l')\n"
                "    q[#q + 1] = wrk.format(method, uri, h, body)\n"
                "  end\n"
                "  f:close()\n"
                "end\n"
                "request = function()\n"
                "  i = i + 1\n"
                "  if i >= #q then wrk.thread:stop() end\n"
                "  if i > #q then i = #q end\n"
                "  return q[i]\n"
                "end\n")
    return path


def timed_request(port, raw, timeout=60):
    """Sends raw request bytes on a new connection (connected before the
    clock starts) and reads the answer (Content-Length). Returns (status,
    seconds to the first byte of the answer, seconds to its last byte,
    body bytes)."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        s.sendall(raw)
        buf = s.recv(65536)
        first = time.perf_counter() - t0
        while b"\r\n\r\n" not in buf:
            more = s.recv(65536)
            if not more:
                raise RuntimeError(f"connection closed: {buf[:200]!r}")
            buf += more
        head, _, body = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        want = int(m.group(1)) if m else None
        parts = [body]
        got = len(body)
        while want is None or got < want:
            more = s.recv(1 << 20)
            if not more:
                break
            parts.append(more)
            got += len(more)
        last = time.perf_counter() - t0
        return status, first, last, b"".join(parts)
    finally:
        s.close()


def machine_cpu():
    """CPU seconds the whole machine spent busy so far (all cores, from
    /proc/stat): with the benchmark's own processes' CPU it tells what
    else ran during a run."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0]
         .split()[1:]]
    idle = f[3] + f[4]                  # idle, iowait
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_info():
    """The machine, for the reports: cores and the CPU model."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {model}"


__all__ += ["Edge", "cached_room", "proc_status",
            "reset_peak_rss", "proc_cpu", "redis_cpu", "commandstats",
            "commandstats_delta", "wrk_run", "request_rotation",
            "timed_request", "machine_cpu", "cpu_info", "ROOMS"]
