"""t/deb builds the two Debian packages (issue 20, item 1) with Debian's
dh_nginx; lintian finds no error or warning. With MXJ_DEB_INSTALL=1 they
are also installed on the machine, the main job (t/run --once) runs with
them, and they are purged leaving nothing behind."""

import gzip
import os
import subprocess

import pytest

from mxj_nginx import TOP, free_port

# t/deb packages the plain build (t/build), whatever MXJ_BUILD says
BUILD = TOP / "build"


@pytest.fixture(scope="module")
def debs():
    p = subprocess.run([str(TOP / "t/deb")], capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    found = {d.name.split("_")[0]: d for d in BUILD.glob("*.deb")}
    assert sorted(found) == ["libnginx-mod-http-matrix-join",
                             "matrix-join-ctl"], found
    return found


def field(deb, name):
    return subprocess.run(["dpkg-deb", "-f", str(deb), name],
                          capture_output=True, text=True,
                          check=True).stdout.strip()


def contents(deb):
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[5].lstrip(".") for line in out.splitlines()
            if not line.startswith("d")}


def member(deb, path, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    return (tmp_path / path.lstrip("/")).read_bytes()


def test_module_depends_on_the_exact_nginx_abi(debs):
    provides = subprocess.run(["dpkg-query", "-W", "-f", "${Provides}",
                               "nginx"], capture_output=True, text=True,
                              check=True).stdout
    abi = [p.strip() for p in provides.split(",")
           if p.strip().startswith("nginx-abi-")]
    assert len(abi) == 1, provides
    depends = [d.strip() for d in
               field(debs["libnginx-mod-http-matrix-join"],
                     "Depends").split(",")]
    assert abi[0] in depends, depends


def test_module_package_contents(debs, tmp_path):
    deb = debs["libnginx-mod-http-matrix-join"]
    files = contents(deb)
    assert "/usr/lib/nginx/modules/ngx_http_matrix_join_module.so" in files
    conf = "/usr/share/nginx/modules-available/mod-http-matrix-join.conf"
    assert conf in files
    assert member(deb, conf, tmp_path) == \
        b"load_module modules/ngx_http_matrix_join_module.so;\n"
    postinst = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"],
                              capture_output=True, text=True,
                              check=True).stdout
    assert "/etc/nginx/modules-enabled/" in postinst
    assert "mod-http-matrix-join.conf:50-mod-http-matrix-join.conf" \
        in postinst


def test_ctl_package_contents(debs, tmp_path):
    deb = debs["matrix-join-ctl"]
    files = contents(deb)
    for f in ("/usr/sbin/matrix-join-ctl",
              "/usr/share/man/man8/matrix-join-ctl.8.gz",
              "/lib/systemd/system/matrix-join-forward.service",
              "/lib/systemd/system/matrix-join-sync@.service",
              "/etc/matrix-join/forward.conf",
              "/etc/matrix-join/sync-example.conf"):
        assert f in files, f
    man = member(deb, "/usr/share/man/man8/matrix-join-ctl.8.gz", tmp_path)
    assert gzip.decompress(man) == (BUILD / "matrix-join-ctl.8").read_bytes()
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"],
                               capture_output=True, text=True,
                               check=True).stdout.split()
    assert sorted(conffiles) == ["/etc/matrix-join/forward.conf",
                                 "/etc/matrix-join/sync-example.conf"]
    postinst = subprocess.run(["dpkg-deb", "-I", str(deb), "postinst"],
                              capture_output=True, text=True,
                              check=True).stdout
    assert "adduser --system" in postinst and "matrix-join" in postinst


def test_ctl_units_run_the_packaged_commands(debs, tmp_path):
    deb = debs["matrix-join-ctl"]
    fwd = member(deb, "/lib/systemd/system/matrix-join-forward.service",
                 tmp_path).decode()
    sync = member(deb, "/lib/systemd/system/matrix-join-sync@.service",
                  tmp_path).decode()
    assert "ExecStart=/usr/sbin/matrix-join-ctl forward " in fwd
    assert "EnvironmentFile=/etc/matrix-join/forward.conf" in fwd
    assert "ExecStart=/usr/sbin/matrix-join-ctl sync " in sync
    assert "EnvironmentFile=/etc/matrix-join/sync-%i.conf" in sync
    for unit in (fwd, sync):
        assert "User=matrix-join" in unit


def test_lintian_finds_no_error_or_warning(debs):
    report = (BUILD / "deb" / "lintian.txt").read_text()
    tags = [line for line in report.splitlines()
            if line[:2] in ("E:", "W:")]
    assert tags == [], report


# --- installed on the machine ---------------------------------------------

PACKAGES = ["libnginx-mod-http-matrix-join", "matrix-join-ctl"]
ENABLED = "/etc/nginx/modules-enabled/50-mod-http-matrix-join.conf"


def dpkg_installed(package):
    p = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status}",
                        package], capture_output=True, text=True)
    return p.stdout == "installed"


@pytest.mark.no_valgrind
@pytest.mark.timeout(900)
@pytest.mark.skipif(os.environ.get("MXJ_DEB_INSTALL") != "1",
                    reason="installs and purges the packages on this "
                    "machine: run with MXJ_DEB_INSTALL=1 (as root)")
def test_installed_packages_answer_the_join_and_purge_clean(debs, tmp_path):
    assert os.geteuid() == 0, "apt-get install needs root"
    assert not any(dpkg_installed(p) for p in PACKAGES), \
        "already installed: this test would purge someone's packages"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    p = subprocess.run(["apt-get", "install", "-y", "-q",
                        *[str(debs[n]) for n in PACKAGES]],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    try:
        files = subprocess.run(["dpkg", "-L", *PACKAGES],
                               capture_output=True, text=True,
                               check=True).stdout.split()
        assert os.readlink(ENABLED) == \
            "/usr/share/nginx/modules-available/mod-http-matrix-join.conf"
        assert subprocess.run(["getent", "passwd", "matrix-join"],
                              capture_output=True).returncode == 0
        # the main job, with the packaged module and CLI
        run_dir = tmp_path / "run"
        run = subprocess.run(
            [str(TOP / "t" / "run"), "--once"], stdin=subprocess.DEVNULL,
            env=dict(os.environ, MXJ_PACKAGED="1", MXJ_RUN_DIR=str(run_dir),
                     MXJ_PORT=str(free_port()),
                     MXJ_REDIS_PORT=str(free_port())),
            capture_output=True, text=True, timeout=540)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-6000:]
        assert "t/run --once: the join was verified" in out, out[-6000:]
        assert "/usr/sbin/matrix-join-ctl sync " in out, out[-6000:]
        conf = (run_dir / "conf" / "nginx.conf").read_text()
        assert "include /etc/nginx/modules-enabled/*.conf;" in conf
        assert "load_module" not in conf
    finally:
        purge = subprocess.run(["apt-get", "purge", "-y", "-q", *PACKAGES],
                               capture_output=True, text=True, env=env,
                               timeout=600)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not any(dpkg_installed(p) for p in PACKAGES)
    # directories stay (/lib, /etc are not theirs alone): files and links
    left = [f for f in files if not os.path.isdir(f)
            and (os.path.isfile(f) or os.path.islink(f))]
    assert left == [], left
    assert not os.path.lexists(ENABLED)
    assert not os.path.exists("/etc/matrix-join")
