"""GET /_matrix/key/v2/server served by matrix_key_server, judged by
python3-signedjson and by the assertions Complement
(TestInboundFederationKeys) and sytest (01keys.pl) make."""

import io
import subprocess
import time

import pytest
import requests
import signedjson.key
import signedjson.sign
from unpaddedbase64 import decode_base64, encode_base64

from mxj_nginx import CTL

SERVER = "hs1.example.org"


def make_key_file(nginx, name="signing.key", versions=("a_abc1",)):
    """Writes a Synapse-format key file made by signedjson; returns keys."""
    keys = [signedjson.key.generate_signing_key(v) for v in versions]
    buf = io.StringIO()
    signedjson.key.write_signing_keys(buf, keys)
    nginx.write_file(name, buf.getvalue(), mode=0o600)
    return keys


def key_server_conf(extra=""):
    return f"""
        server {{
            listen 127.0.0.1:$PORT;
            matrix_server_name {SERVER};
            matrix_signing_key signing.key;
            {extra}
            location = /_matrix/key/v2/server {{
                matrix_key_server;
            }}
        }}
        """


def get_doc(nginx):
    r = requests.get(nginx.url("/_matrix/key/v2/server"), timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    return r


def verify_with(doc, server, key):
    vk = signedjson.key.get_verify_key(key)
    # raises SignatureVerifyException on failure
    signedjson.sign.verify_signed_json(doc, server, vk)


def test_document_verifies_with_signedjson(nginx):
    (key,) = make_key_file(nginx)
    nginx.write_conf(key_server_conf())
    nginx.start()

    doc = get_doc(nginx).json()
    verify_with(doc, SERVER, key)

    kid = f"ed25519:{key.version}"
    assert doc["verify_keys"] == {
        kid: {"key": encode_base64(key.verify_key.encode())}}

    # a tampered copy must not verify: the check above can fail
    doc["valid_until_ts"] += 1
    with pytest.raises(signedjson.sign.SignatureVerifyException):
        verify_with(doc, SERVER, key)


def test_body_is_canonical_json(nginx):
    import canonicaljson
    make_key_file(nginx)
    nginx.write_conf(key_server_conf())
    nginx.start()
    r = get_doc(nginx)
    assert r.content == canonicaljson.encode_canonical_json(r.json())
    assert int(r.headers["Content-Length"]) == len(r.content)


def test_complement_inbound_federation_keys(nginx):
    """The assertions of Complement's TestInboundFederationKeys."""
    (key,) = make_key_file(nginx)
    old_pub = encode_base64(
        signedjson.key.generate_signing_key("old").verify_key.encode())
    nginx.write_conf(key_server_conf(
        f"matrix_old_verify_key ed25519:old1 {old_pub} 1532645052628;"))
    nginx.start()

    doc = get_doc(nginx).json()
    now_ms = time.time() * 1000
    assert isinstance(doc["valid_until_ts"], int)
    assert doc["valid_until_ts"] > now_ms
    assert doc["server_name"] == SERVER

    for kid, k in doc["verify_keys"].items():
        assert kid.startswith("ed25519:")
        assert len(decode_base64(k["key"])) == 32
    for kid, k in doc["old_verify_keys"].items():
        assert kid.startswith("ed25519:")
        assert isinstance(k["expired_ts"], int)
        assert len(decode_base64(k["key"])) == 32
    assert doc["old_verify_keys"] == {
        "ed25519:old1": {"key": old_pub, "expired_ts": 1532645052628}}

    assert list(doc["signatures"]) == [SERVER]
    assert not set(doc["verify_keys"]) & set(doc["old_verify_keys"])
    verify_with(doc, SERVER, key)


def test_sytest_unsigned_request_for_keys(nginx):
    """sytest 01keys.pl: unsigned GET; all five keys; old_verify_keys is an
    object even when empty; a 64-byte signature that verifies."""
    (key,) = make_key_file(nginx)
    nginx.write_conf(key_server_conf())
    nginx.start()

    doc = get_doc(nginx).json()
    for k in ("server_name", "valid_until_ts", "signatures", "verify_keys",
              "old_verify_keys"):
        assert k in doc
    assert doc["old_verify_keys"] == {}
    kid = f"ed25519:{key.version}"
    sig = decode_base64(doc["signatures"][SERVER][kid])
    assert len(sig) == 64
    verify_with(doc, SERVER, key)


def test_validity_follows_matrix_key_validity(nginx):
    make_key_file(nginx)
    nginx.write_conf(key_server_conf("matrix_key_validity 2h;"))
    nginx.start()
    before = int(time.time() * 1000)
    doc = get_doc(nginx).json()
    after = int(time.time() * 1000)
    assert before + 2 * 3600 * 1000 - 2000 <= doc["valid_until_ts"] \
        <= after + 2 * 3600 * 1000 + 2000


def test_default_validity_is_one_day(nginx):
    make_key_file(nginx)
    nginx.write_conf(key_server_conf())
    nginx.start()
    now = int(time.time() * 1000)
    doc = get_doc(nginx).json()
    assert abs(doc["valid_until_ts"] - (now + 86400 * 1000)) < 5000


def test_every_key_in_the_file_is_published_and_signs(nginx):
    keys = make_key_file(nginx, versions=("first", "second"))
    nginx.write_conf(key_server_conf())
    nginx.start()
    doc = get_doc(nginx).json()
    assert set(doc["verify_keys"]) == {"ed25519:first", "ed25519:second"}
    for key in keys:
        verify_with(doc, SERVER, key)


def test_head_and_other_methods(nginx):
    make_key_file(nginx)
    nginx.write_conf(key_server_conf())
    nginx.start()

    r = requests.head(nginx.url("/_matrix/key/v2/server"), timeout=5)
    assert r.status_code == 200
    assert r.content == b""

    for method in ("POST", "PUT", "DELETE"):
        r = requests.request(method, nginx.url("/_matrix/key/v2/server"),
                             data=b"{}", timeout=5)
        assert r.status_code == 405, method
        assert r.headers["Content-Type"] == "application/json"
        assert r.json()["errcode"] == "M_UNRECOGNIZED"
        assert isinstance(r.json()["error"], str)


def test_same_document_until_half_validity(nginx):
    """Built once per worker, not per request: two requests a second apart
    get the same valid_until_ts (a per-request build would differ)."""
    make_key_file(nginx)
    nginx.write_conf(key_server_conf())
    nginx.start()
    a = get_doc(nginx).content
    time.sleep(1.1)
    b = get_doc(nginx).content
    assert a == b


@pytest.mark.no_valgrind     # one process reconfigures without a worker start
def test_reload_serves_the_new_key(nginx):
    (old,) = make_key_file(nginx, versions=("old",))
    nginx.write_conf(key_server_conf())
    nginx.start()
    assert "ed25519:old" in get_doc(nginx).json()["verify_keys"]

    (new,) = make_key_file(nginx, versions=("new",))
    nginx.reload()

    deadline = time.monotonic() + 10
    while True:
        doc = get_doc(nginx).json()
        if "ed25519:new" in doc["verify_keys"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert list(doc["verify_keys"]) == ["ed25519:new"]
    verify_with(doc, SERVER, new)


def test_key_made_by_ctl_keygen_is_served(nginx):
    r = subprocess.run([str(CTL), "keygen", SERVER], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    line = r.stdout
    nginx.write_file("signing.key", line, mode=0o600)
    # signedjson reads the file too: the format is Synapse's
    (key,) = signedjson.key.read_signing_keys(io.StringIO(line))
    nginx.write_conf(key_server_conf())
    nginx.start()
    doc = get_doc(nginx).json()
    verify_with(doc, SERVER, key)
    assert f"ed25519:{key.version}" in r.stderr
    assert encode_base64(key.verify_key.encode()) in r.stderr


# --- configuration errors reported by nginx -t -------------------------------

def test_missing_key_file_is_named(nginx):
    nginx.write_conf(key_server_conf())
    rc, out = nginx.test_config()
    assert rc != 0
    assert "signing.key" in out and "No such file" in out, out


@pytest.mark.parametrize("content,expect", [
    ("", "no signing key"),
    ("ed25519 a_1 notbase64!!\n", "line 1"),
    ("ed25519 a_1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n"
     "rsa x AAAA\n", "line 2"),
    ("ed25519 a-1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n", "line 1"),
    ("ed25519 a_1 Zm9v\n", "line 1"),
])
def test_malformed_key_file_is_named(nginx, content, expect):
    nginx.write_file("signing.key", content, mode=0o600)
    nginx.write_conf(key_server_conf())
    rc, out = nginx.test_config()
    assert rc != 0
    assert "signing.key" in out and expect in out, out
    nginx.allowed_log.append("signing.key")


def test_key_file_that_is_a_directory(nginx):
    (nginx.prefix / "conf" / "signing.key").mkdir()
    nginx.write_conf(key_server_conf())
    rc, out = nginx.test_config()
    assert rc != 0 and "signing.key" in out, out


def test_key_server_needs_name_and_key(nginx):
    nginx.write_conf("""
        server {
            listen 127.0.0.1:$PORT;
            location = /_matrix/key/v2/server { matrix_key_server; }
        }
        """)
    rc, out = nginx.test_config()
    assert rc != 0
    assert "matrix_server_name" in out and "nginx.conf:" in out, out


@pytest.mark.parametrize("directive,expect", [
    ("matrix_key_validity 30m;", "at least 1h"),
    ("matrix_old_verify_key ed25519:x notakey 1;", "invalid public key"),
    ("matrix_old_verify_key rsa:x AAAA 1;", "invalid key id"),
    ("matrix_old_verify_key ed25519:a_abc1 "
     "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI 1;", "also a current key"),
    ("matrix_old_verify_key ed25519:o "
     "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI soon;", "invalid expiry"),
])
def test_bad_directives(nginx, directive, expect):
    make_key_file(nginx)
    nginx.write_conf(key_server_conf(directive))
    rc, out = nginx.test_config()
    assert rc != 0 and expect in out, out


def test_invalid_server_name(nginx):
    make_key_file(nginx)
    nginx.write_conf(key_server_conf().replace(
        f"matrix_server_name {SERVER};", "matrix_server_name localhost:http;"))
    rc, out = nginx.test_config()
    assert rc != 0 and "invalid Matrix server name" in out, out
