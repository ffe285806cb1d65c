"""Raw HTTP for the tests and the demo: one request with http.client, the
request target sent byte for byte (no quoting, no normalising), every
Authorization value its own header, and the answer as a Reply.

http.client rather than requests: requests re-quotes targets and folds
repeated headers, and several tests are about exactly those bytes.
"""

import http.client
import json
import ssl
import time


class Reply:
    """One answer: status, headers (a list of (name, value) in the order
    received), body (bytes), and the seconds to its headers (ttfb) and to
    its last byte (total)."""

    def __init__(self, status, headers, body, ttfb=None, total=None):
        self.status = status
        self.headers = headers
        self.body = body
        self.ttfb = ttfb
        self.total = total

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        """The first value of the header name (any case), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return f"<Reply {self.status} {self.body[:600]!r}>"


def send(port, method, target, host, auth=(), headers=(), body=None,
         content_type=None, timeout=10, linger=0, address="127.0.0.1",
         tls=None):
    """Sends one request to address:port and returns its Reply.

    host: the Host header's value. auth: Authorization values, each sent
    as its own header. headers: more (name, value) pairs, in order.
    body: bytes (str is sent as UTF-8) with its Content-Length, and
    content_type, when given, as Content-Type. linger: seconds to keep the
    connection open after the answer, so that whatever the server still
    does with the request happens before the caller looks. tls: an
    ssl.SSLContext for https, None for plain http."""
    if tls is None:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(address, port, timeout=timeout,
                                           context=tls)
    if isinstance(body, str):
        body = body.encode()
    try:
        conn.putrequest(method, target, skip_host=True,
                        skip_accept_encoding=True)
        conn.putheader("Host", host)
        for a in auth:
            conn.putheader("Authorization", a)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            if content_type is not None:
                conn.putheader("Content-Type", content_type)
            conn.putheader("Content-Length", str(len(body)))
        t0 = time.monotonic()
        conn.endheaders(body)
        resp = conn.getresponse()
        t1 = time.monotonic()
        data = resp.read()
        t2 = time.monotonic()
        rep = Reply(resp.status, resp.getheaders(), data, t1 - t0, t2 - t0)
        if linger:
            time.sleep(linger)
        return rep
    finally:
        conn.close()


def tls_context(cafile=None):
    """A client context that checks the server's certificate against
    cafile (a self-signed one) but not its host name; cafile None: no
    check at all."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    if cafile is None:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
