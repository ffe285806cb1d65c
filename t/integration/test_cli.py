"""matrix-join-ctl's manners (issue 20): every command answers -h and
--help on stdout with exit 0 and no other effect; exit codes 0 ok, 1
failure, 2 usage; values checked as nginx checks the same directive's;
version names every library; the man page says what --help says."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from mxj_nginx import BUILD, CTL, TOP

COMMANDS = ["keygen", "load", "show", "rooms", "outbox", "forward", "sync",
            "version", "help"]
PYTHON = "/usr/bin/python3"


def ctl(*args, timeout=60):
    return subprocess.run([str(CTL), *args], capture_output=True, text=True,
                          timeout=timeout)


def words(text):
    return text.split()


def contains_run(haystack, needle):
    """needle's words appear in haystack's, one after the other."""
    n = len(needle)
    return any(haystack[i:i + n] == needle
               for i in range(len(haystack) - n + 1))


# --- help ---------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_answers_help(cmd, flag):
    p = ctl(cmd, flag)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert p.stdout.startswith(f"usage: matrix-join-ctl {cmd}"), p.stdout
    assert p.stdout == ctl("help", cmd).stdout


def test_keygen_help_writes_no_key():
    for flag in ("-h", "--help"):
        p = ctl("keygen", flag)
        assert p.returncode == 0
        assert "ed25519 a_" not in p.stdout and "public key" not in p.stderr


def test_help_among_options_has_no_effect(redis_server, tmp_path):
    """--help anywhere before "--", whatever else is there: Redis is not
    written (nor connected to: a wrong password would say so)."""
    snap = tmp_path / "room.json"
    snap.write_text("{}")
    a = ["--redis", redis_server.address, "--password", "wrong"]
    for args in (["load", *a, str(snap), "--help"],
                 ["forward", *a, "--upstream", "http://127.0.0.1:1", "--once",
                  "-h"],
                 ["sync", *a, "--help", "--homeserver", "http://127.0.0.1:1",
                  "!a:b.c"],
                 ["outbox", "--help", *a],
                 ["show", *a, "--help", "!a:b.c"]):
        p = ctl(*args)
        assert p.returncode == 0 and p.stderr == "", (args, p.stderr)
        assert p.stdout.startswith("usage: matrix-join-ctl " + args[0])
    assert redis_server.client().keys("*") == []
    assert redis_server.client().info("clients")["connected_clients"] == 1


def test_help_after_double_dash_is_an_operand():
    p = ctl("keygen", "--", "--help")
    assert p.returncode == 2 and "ed25519" not in p.stdout


def test_top_level_help_lists_every_command_and_exit_codes():
    for args in (["--help"], ["-h"], ["help"]):
        p = ctl(*args)
        assert p.returncode == 0 and p.stderr == ""
        summary = p.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
        listed = re.findall(r"^  ([a-z]+) ", summary, re.M)
        assert listed == COMMANDS, p.stdout
        assert re.search(r"^  0  success", p.stdout, re.M)
        assert re.search(r"^  1  the operation failed", p.stdout, re.M)
        assert re.search(r"^  2  usage error", p.stdout, re.M)
        # each command's own text is in it, indented
        for cmd in COMMANDS:
            assert contains_run(words(p.stdout),
                                words(ctl(cmd, "--help").stdout)), cmd


def test_no_command_is_a_usage_error():
    p = ctl()
    assert p.returncode == 2 and p.stdout == ""
    assert "usage: matrix-join-ctl COMMAND" in p.stderr


# --- version ------------------------------------------------------------

def pkg_version(name):
    return subprocess.run(["pkg-config", "--modversion", name],
                          capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize("args", [["version"], ["--version"]])
def test_version_names_every_library(args):
    p = ctl(*args)
    assert p.returncode == 0 and p.stderr == ""
    lines = p.stdout.splitlines()
    assert re.fullmatch(r"matrix-join-ctl \d+\.\d+\.\d+", lines[0]), lines
    # the versions Debian's packages declare, asked of pkg-config
    want = {"hiredis": pkg_version("hiredis"),
            "libcurl": pkg_version("libcurl"),
            "libmicrohttpd": pkg_version("libmicrohttpd"),
            "libyaml": pkg_version("yaml-0.1"),
            "jansson": pkg_version("jansson"),
            "libsodium": pkg_version("libsodium")}
    got = dict(line.split(" ", 1) for line in lines[1:])
    assert got == want


def test_version_takes_no_argument():
    assert ctl("version", "x").returncode == 2


# --- exit codes and values ------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["nosuch"], 'unknown command "nosuch"'),
    (["keygen"], "usage: matrix-join-ctl keygen"),
    (["keygen", "-x"], 'unknown option "-x"'),
    (["keygen", "a", "b"], "usage: matrix-join-ctl keygen"),
    (["keygen", "localhost:http"], "invalid server name"),
    (["rooms", "--redis", "127.0.0.1:1", "--nosuch"],
     'unknown option "--nosuch"'),
    (["rooms", "--redis"], "--redis needs a value"),
    (["rooms"], "usage: matrix-join-ctl rooms"),
    (["outbox", "--redis", "127.0.0.1:1", "extra"], "unexpected argument"),
    (["forward", "--redis", "127.0.0.1:1"], "usage: matrix-join-ctl forward"),
    (["forward", "--redis", "127.0.0.1:1", "--upstream", "http://h:1",
      "--concurrency", "0"], "--concurrency"),
    (["rooms", "--redis", "127.0.0.1:1", "--db", "-1"], 'invalid --db "-1"'),
    (["rooms", "--redis", "127.0.0.1:1", "--prefix", "a{b"],
     'invalid Redis key prefix "a{b"'),
    (["show", "--redis", "127.0.0.1:1", "notaroom"],
     'invalid room ID "notaroom"'),
    (["show", "--redis", "127.0.0.1:1", "#alias:b.c"], "invalid room ID"),
])
def test_usage_errors_exit_2(args, message):
    p = ctl(*args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert message in p.stderr, p.stderr
    assert p.stdout == ""


def test_show_notaroom_never_asks_redis(redis_server):
    p = ctl("show", "--redis", redis_server.address, "notaroom")
    assert p.returncode == 2
    assert "invalid room ID" in p.stderr and "has no snapshot" not in p.stderr


def test_prefix_nginx_refuses_writes_nothing(redis_server, tmp_path):
    snap = tmp_path / "room.json"
    snap.write_text("{}")
    for prefix in ("a{b", "a}b", "a b", "a\tb"):
        p = ctl("load", "--redis", redis_server.address, "--prefix", prefix,
                str(snap))
        assert p.returncode == 2, p.stderr
        assert "invalid Redis key prefix" in p.stderr
    assert redis_server.client().keys("*") == []


def test_failure_exits_1():
    p = ctl("rooms", "--redis", "127.0.0.1:1")
    assert p.returncode == 1
    assert "cannot connect to Redis at 127.0.0.1:1" in p.stderr


# --- --redis: malformed is usage (2), unreachable is failure (1) -------------

def redis_commands(tmp_path):
    """{command: its arguments but --redis}, each otherwise valid: a real
    snapshot for load, a real key for sync."""
    import sys
    sys.path.insert(0, str(TOP / "t" / "lib"))
    import mxj_room
    snap = tmp_path / "room.json"
    mxj_room.Room("10", members=4, servers=2, seed=77).write(snap)
    key = tmp_path / "signing.key"
    key.write_text(ctl("keygen", "hs.example.org").stdout)
    return {
        "load": [str(snap)],
        "show": ["!a:b.c"],
        "rooms": [],
        "outbox": [],
        "forward": ["--once", "--upstream", "http://127.0.0.1:1"],
        "sync": ["--homeserver", "http://127.0.0.1:1", "--server-name",
                 "hs.example.org", "--signing-key", str(key), "!a:b.c"],
    }


@pytest.mark.parametrize("address,why", [
    ("foo:bar", "invalid port"),
    ("127.0.0.1", 'expected "host:port" or "unix:/path"'),
    ("unix:relative", "a unix socket needs an absolute path"),
    ("[::1", 'an IPv6 address needs its closing "]"'),
    ("sentinel:mymaster", "no sentinel address"),
])
def test_malformed_redis_address_is_usage_for_every_command(tmp_path,
                                                            address, why):
    """As matrix_redis parses it, before anything is done: exit 2, the
    reason, the command's usage; nothing printed on stdout."""
    for cmd, args in redis_commands(tmp_path).items():
        p = ctl(cmd, "--redis", address, *args)
        assert p.returncode == 2, (cmd, p.returncode, p.stderr)
        assert f'invalid Redis address "{address}": {why}' in p.stderr, \
            (cmd, p.stderr)
        assert f"usage: matrix-join-ctl {cmd}" in p.stderr, (cmd, p.stderr)
        assert "cannot connect" not in p.stderr and p.stdout == "", cmd


def test_unreachable_redis_is_failure_for_every_command(tmp_path):
    """A well-formed address nothing listens on: exit 1 (forward --once
    after its 5 tries), never 2."""
    for cmd, args in redis_commands(tmp_path).items():
        p = ctl(cmd, "--redis", "127.0.0.1:1", *args, timeout=120)
        assert p.returncode == 1, (cmd, p.returncode, p.stderr)
        assert "cannot connect to Redis at 127.0.0.1:1" in p.stderr, \
            (cmd, p.stderr)
        assert "usage:" not in p.stderr, (cmd, p.stderr)


@pytest.mark.parametrize("value", ["127.0.0.1", ":9100", "127.0.0.1:",
                                   "127.0.0.1:x", "127.0.0.1:0",
                                   "127.0.0.1:65536", "::1:9100",
                                   "[::1:9100", "a b:9100"])
def test_listen_addresses_checked_as_usage(tmp_path, value):
    """--metrics (forward, sync) and --appservice-listen (sync): HOST:PORT
    or [V6]:PORT, checked when read: exit 2 with the option named, before
    Redis is asked (the Redis address given is not reachable)."""
    key = tmp_path / "signing.key"
    key.write_text(ctl("keygen", "hs.example.org").stdout)
    sync = ["sync", "--redis", "127.0.0.1:1", "--homeserver",
            "http://127.0.0.1:1", "--server-name", "hs.example.org",
            "--signing-key", str(key), "--every", "1m", "!a:b.c"]
    for args, opt in (
            (["forward", "--redis", "127.0.0.1:1", "--upstream",
              "http://127.0.0.1:1", "--metrics", value], "--metrics"),
            (sync + ["--metrics", value], "--metrics"),
            (sync + ["--appservice-listen", value, "--registration",
                     str(tmp_path / "r.yaml")], "--appservice-listen")):
        p = ctl(*args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert f'{args[0]}: invalid {opt} "{value}"' in p.stderr, p.stderr
        assert "cannot connect" not in p.stderr


def test_forward_once_gives_up_on_unreachable_redis():
    """docs: --once delivers what is there and exits; with Redis gone it
    says so after a bounded number of tries and exits 1 (the timeout only
    stops a forwarder that would retry for ever)."""
    p = ctl("forward", "--once", "--redis", "127.0.0.1:1", "--upstream",
            "http://127.0.0.1:1", timeout=120)
    assert p.returncode == 1, p.stderr
    assert "redis at 127.0.0.1:1 unreachable after 5 tries, giving up " \
           "(--once)" in p.stderr
    assert p.stderr.count("cannot connect to Redis at 127.0.0.1:1") == 5


# --- the man page ---------------------------------------------------------

def rendered_man():
    page = BUILD / "matrix-join-ctl.8"
    assert page.exists(), "t/build makes it"
    p = subprocess.run(["man", "-l", str(page)], capture_output=True,
                       env=dict(os.environ, LC_ALL="C", MANWIDTH="5000",
                                MAN_KEEP_FORMATTING="0"), timeout=60)
    assert p.returncode == 0, p.stderr
    text = subprocess.run(["col", "-bx"], input=p.stdout, capture_output=True,
                          check=True).stdout.decode()
    return text


def test_man_page_says_what_help_says():
    man = words(rendered_man())
    assert contains_run(man, ["matrix-join-ctl", "-", "the", "operator's",
                              "tool", "of", "nginx-matrix-join"])
    for cmd in COMMANDS:
        help_words = words(ctl(cmd, "--help").stdout)
        assert contains_run(man, help_words), cmd
    top = ctl("--help").stdout
    exit_status = top[top.index("Exit status:"):]
    assert contains_run(man, words(exit_status))


def test_man_page_is_generated_from_this_binary(tmp_path):
    """The built page is help2man's output for the built binary: not a
    stale copy."""
    out = tmp_path / "m.8"
    subprocess.run(["help2man", "--no-info", "--section=8",
                    "--source=nginx-matrix-join",
                    f"--include={TOP / 'src/ctl/matrix-join-ctl.h2m'}",
                    f"--output={out}", str(CTL)], check=True, timeout=60)
    date = re.compile(r'^\.TH .*$', re.M)
    assert date.sub("", out.read_text()) == \
        date.sub("", (BUILD / "matrix-join-ctl.8").read_text())


# --- the tools around it --------------------------------------------------

@pytest.mark.parametrize("user,why", [
    ("notauser", 'a user ID starts with "@"'),
    ("@nocolon", 'a user ID is "@localpart:server"'),
    ("@:remote.localhost", 'a user ID is "@localpart:server"'),
])
def test_demo_join_says_what_is_wrong_with_user(user, why, tmp_path):
    p = subprocess.run([PYTHON, str(TOP / "t/lib/mxj_demo.py"), "join",
                        "--config", str(tmp_path / "none.json"),
                        "--user", user],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert f"--user: {user!r} is not a user ID: {why}" in p.stderr


def test_t_test_help_builds_nothing():
    p = subprocess.run([str(TOP / "t/test"), "--help"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0
    assert "  t/test [--asan] [--jobs N] [--only parallel|serial] [PYTEST_ARGS...]" \
        in p.stdout
    assert "t/build" not in p.stdout + p.stderr
