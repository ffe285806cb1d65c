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
