"""t/deb builds the two Debian packages (issue 20, item 1) with Debian's
dh_nginx; lintian finds no error or warning. Installing them on the
machine is not tested here (see docs/cli.md, Debian packages)."""

import gzip
import subprocess

import pytest

from mxj_nginx import TOP

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
