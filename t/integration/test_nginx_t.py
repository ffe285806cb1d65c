"""nginx -t catches what it can (issue 20): each configuration mistake that
used to pass -t and fail at run time, or that meant nothing, is refused by
the real /usr/sbin/nginx -t, naming the directive, the file and the line."""

import subprocess

import pytest

from mxj_nginx import CTL

SERVER = "edge.test"


def key_file(nginx):
    r = subprocess.run([str(CTL), "keygen", SERVER], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    nginx.write_file("signing.key", r.stdout, mode=0o600)
    return r.stdout.split()[1]


def conf(http="", server="", loc="", keys="internal;", fetch_loc=None):
    """A federation edge; the marker comments name the lines tests find."""
    if fetch_loc is None:
        fetch_loc = """
            location /_mxj_keys/ {
                %s
                return 404;
            }""" % keys
    return f"""
        matrix_server_name {SERVER};
        matrix_signing_key signing.key;
        matrix_redis 127.0.0.1:1;
        {http}
        server {{
            listen 127.0.0.1:$PORT;
            {server}
            location /_matrix/federation/v1/make_join/ {{
                matrix_make_join;
                {loc}
            }}
            location @homeserver {{
                return 502;
            }}
            {fetch_loc}
        }}
        """


def line_of(nginx, text):
    """The 1-based line of the written nginx.conf that contains text."""
    lines = nginx.conf_path.read_text().splitlines()
    hits = [i + 1 for i, l in enumerate(lines) if text in l]
    assert len(hits) == 1, (text, hits)
    return hits[0]


def refused(nginx, directive_line):
    rc, out = nginx.test_config()
    assert rc != 0, out
    emerg = [l for l in out.splitlines() if "[emerg]" in l]
    assert len(emerg) == 1, out
    where = f"{nginx.conf_path}:{line_of(nginx, directive_line)}"
    assert emerg[0].endswith(" in " + where), (where, out)
    return emerg[0]


def test_the_base_configuration_passes(nginx):
    key_file(nginx)
    nginx.write_conf(conf(http="matrix_join_fallback @homeserver;\n"
                          "matrix_key_fetch /_mxj_keys/;"))
    rc, out = nginx.test_config()
    assert rc == 0, out


@pytest.mark.parametrize("where", ["http", "server", "loc"])
def test_fallback_to_a_named_location_that_does_not_exist(nginx, where):
    key_file(nginx)
    nginx.write_conf(conf(**{where: "matrix_join_fallback @nosuch;"}))
    msg = refused(nginx, "matrix_join_fallback @nosuch;")
    assert '"matrix_join_fallback"' in msg and '"@nosuch"' in msg, msg
    # and it names the handler that would have used it
    assert f"{nginx.conf_path}:{line_of(nginx, 'matrix_make_join;')}" in msg


def test_fallback_in_another_server_does_not_count(nginx):
    key_file(nginx)
    body = conf(loc="matrix_join_fallback @homeserver;").replace(
        "location @homeserver", "location @elsewhere")
    body += """
        server {
            listen 127.0.0.1:$PORT;
            server_name other;
            location @homeserver { return 502; }
        }
        """
    nginx.write_conf(body)
    msg = refused(nginx, "matrix_join_fallback @homeserver;")
    assert '"@homeserver"' in msg, msg


@pytest.mark.parametrize("fetch_loc,expect", [
    ("", "matches no location"),
    ("location /_other/ { internal; return 404; }", "matches no location"),
    ("location = /_mxj_keys/ { internal; return 404; }",
     "matches no location"),
    ("location /_mxj_keys/ { return 404; }", 'not "internal"'),
    ("location /_mxj { internal; return 404; }\n"
     "location ~ ^/_mxj_keys/ { return 404; }", 'not "internal"'),
])
def test_key_fetch_location_must_exist_and_be_internal(nginx, fetch_loc,
                                                       expect):
    key_file(nginx)
    nginx.write_conf(conf(http="matrix_key_fetch /_mxj_keys/;",
                          fetch_loc=fetch_loc))
    msg = refused(nginx, "matrix_key_fetch /_mxj_keys/;")
    assert '"matrix_key_fetch"' in msg and expect in msg, msg


@pytest.mark.parametrize("fetch_loc", [
    "location /_mxj { internal; return 404; }",
    "location ~ ^/_mxj_keys/ { internal; return 404; }",
    "location /_mxj_keys/ { return 404; }\n"
    "location ~ ^/_mxj_keys/ { internal; return 404; }",
    "location ^~ /_mxj_keys/ { internal; return 404; }\n"
    "location ~ ^/_mxj_keys/ { return 404; }",
])
def test_key_fetch_found_as_nginx_finds_locations(nginx, fetch_loc):
    """prefix, regex over prefix, ^~ over regex: the location a request
    for the fetch URI gets, as nginx picks it."""
    key_file(nginx)
    nginx.write_conf(conf(loc="matrix_key_fetch /_mxj_keys/;",
                          fetch_loc=fetch_loc))
    rc, out = nginx.test_config()
    assert rc == 0, out


def test_key_fetch_needs_a_leading_slash(nginx):
    key_file(nginx)
    nginx.write_conf(conf(server="matrix_key_fetch _mxj_keys/;"))
    msg = refused(nginx, "matrix_key_fetch _mxj_keys/;")
    assert '"matrix_key_fetch" URI prefix' in msg, msg
    assert 'must start with "/"' in msg, msg


def test_key_fetch_rate_zero_is_refused(nginx):
    key_file(nginx)
    nginx.write_conf(conf(http="matrix_key_fetch_rate 0;"))
    msg = refused(nginx, "matrix_key_fetch_rate 0;")
    assert '"matrix_key_fetch_rate" "0"' in msg, msg


@pytest.mark.parametrize("value", ["off", "10m", "1h", "30s"])
def test_max_age_values_pass(nginx, value):
    key_file(nginx)
    nginx.write_conf(conf(loc=f"matrix_join_max_age {value};"))
    rc, out = nginx.test_config()
    assert rc == 0, out


@pytest.mark.parametrize("value,expect", [
    ("0", '"matrix_join_max_age" "0"'),
    ("never", '"matrix_join_max_age" directive invalid value'),
])
def test_max_age_values_refused(nginx, value, expect):
    key_file(nginx)
    nginx.write_conf(conf(loc=f"matrix_join_max_age {value};"))
    msg = refused(nginx, f"matrix_join_max_age {value};")
    assert expect in msg, msg


def test_old_verify_key_repeating_a_current_key_at_its_own_line(nginx):
    key_id = "ed25519:" + key_file(nginx)
    old = (f"matrix_old_verify_key {key_id} "
           "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI 1;")
    nginx.write_conf(conf(server=old))
    msg = refused(nginx, "matrix_old_verify_key")
    assert '"matrix_old_verify_key"' in msg and "also a current key" in msg
