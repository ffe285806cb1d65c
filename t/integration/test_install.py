"""`make -f t/Makefile install DESTDIR=... prefix=/usr` puts the CLI, its
man page and the module where Debian puts them, and the installed module is the one
Debian's nginx loads."""

import stat
import subprocess
import textwrap

import pytest

from mxj_nginx import BUILD, CTL, MODULE, NGINX, TOP, sanitizer_env

MODULE_NAME = "ngx_http_matrix_join_module.so"


def make_install(destdir, *extra):
    return subprocess.run(
        ["make", "-s", "-f", str(TOP / "t" / "Makefile"), f"O={BUILD}",
         "install", f"DESTDIR={destdir}", "prefix=/usr", *extra],
        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    p = make_install(dest)
    assert p.returncode == 0, p.stderr
    return dest


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_install_puts_exactly_the_cli_and_the_module(installed):
    files = sorted(str(p.relative_to(installed))
                   for p in installed.rglob("*") if not p.is_dir())
    assert files == ["usr/lib/nginx/modules/" + MODULE_NAME,
                     "usr/sbin/matrix-join-ctl",
                     "usr/share/man/man8/matrix-join-ctl.8"]
    man = installed / "usr/share/man/man8/matrix-join-ctl.8"
    assert mode(man) == 0o644
    assert man.read_bytes() == (BUILD / "matrix-join-ctl.8").read_bytes()
    ctl = installed / "usr/sbin/matrix-join-ctl"
    so = installed / "usr/lib/nginx/modules" / MODULE_NAME
    assert mode(ctl) == 0o755
    assert mode(so) == 0o644
    assert ctl.read_bytes() == CTL.read_bytes()
    assert so.read_bytes() == MODULE.read_bytes()


def test_the_installed_cli_runs(installed):
    p = subprocess.run([str(installed / "usr/sbin/matrix-join-ctl"),
                        "version"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    want = subprocess.run([str(CTL), "version"], capture_output=True,
                          text=True, timeout=30).stdout
    assert p.stdout == want != ""


def nginx_t(tmp_path, load):
    (tmp_path / "logs").mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        {load}
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/logs/error.log;
        events {{ }}
        http {{
            access_log off;
            matrix_redis 127.0.0.1:6379;
        }}
        """))
    return subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf),
                           "-e", str(tmp_path / "logs" / "test.log")],
                          capture_output=True, text=True, timeout=60,
                          env=sanitizer_env(tmp_path))


def test_the_installed_module_loads_in_nginx(installed, tmp_path):
    so = installed / "usr/lib/nginx/modules" / MODULE_NAME
    p = nginx_t(tmp_path, f"load_module {so};")
    assert p.returncode == 0, p.stderr
    assert "test is successful" in p.stderr
    # without it the module's directive is unknown: the load is what passed
    p = nginx_t(tmp_path, "")
    assert p.returncode == 1
    assert 'unknown directive "matrix_redis"' in p.stderr


def test_install_without_the_module_built_says_so(tmp_path):
    p = make_install(tmp_path / "d", "MODULE_SO=" + str(tmp_path / "none.so"))
    assert p.returncode != 0
    assert "none.so: run t/build first" in p.stderr
    assert not (tmp_path / "d" / "usr" / "sbin").exists()
