"""Remote keys are the machine's (the matrix_join_keys zone): with four
workers, a new origin's key is fetched once however many workers its
requests reach, a failed fetch is remembered by every worker, and
matrix_key_fetch_rate counts the fetches of the machine. The judge is the
key server stand-in's own count of the fetches it answered."""

import random
import string
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_federation_auth import (OUR, assert_error, fed,  # noqa: F401
                                  loaded)

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.no_valgrind(reason="four worker processes")]


def answering(f):
    """The workers that answered, from the pid access log."""
    log = f.nginx.prefix / "logs" / "pid.log"
    return {line.split()[0] for line in log.read_text().splitlines()}


def at_once(fn, n=24):
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(fn, range(n)))


def four(loaded, dir_extra=""):
    loaded.nginx.workers = 4
    return loaded.conf(listen="reuseport", dir_extra=dir_extra)


def test_one_fetch_for_the_machine(loaded):
    """24 requests of a new origin at once, spread over the workers by
    reuseport, while the key server takes 0.5 s: one fetch; the requests
    of the workers that did not fetch are woken when it ends and answered
    200 (without the wake they would wait for matrix_key_fetch_timeout
    and be refused)."""
    f = four(loaded)
    f.keys.delay = 0.5
    reps = at_once(lambda _: f.signed_get(f.target))
    assert [r.status for r in reps] == [200] * len(reps), reps
    assert len(answering(f)) >= 2, "reuseport used one worker"
    assert f.keys.count() == 1


def test_a_failed_fetch_is_remembered_by_every_worker(loaded):
    """The key server fails: one fetch, every request refused (401), in
    every worker, for matrix_key_fetch_negative_ttl (60 s here)."""
    f = four(loaded, dir_extra="matrix_key_fetch_negative_ttl 60s;")
    f.keys.status = 500
    f.keys.delay = 0.3
    for _ in range(2):
        reps = at_once(lambda _: f.signed_get(f.target))
        for rep in reps:
            assert_error(rep, 401, "M_UNAUTHORIZED", f.remote.name)
    assert len(answering(f)) >= 2, "reuseport used one worker"
    assert f.keys.count() == 1


def test_fetch_rate_is_the_machines(loaded):
    """matrix_key_fetch_rate 2: requests of one origin with random key IDs
    over four workers cause at most 2 fetches (and one more per 30 s of
    refill), not 2 per worker."""
    f = four(loaded, dir_extra="matrix_key_fetch_rate 2;")
    rnd = random.Random(3)
    kids = ["ed25519:" + "".join(rnd.choice(string.ascii_letters)
                                 for _ in range(12)) for _ in range(40)]

    def one(k):
        return f.get(f.target, auth=[f.remote.auth_header(
            "GET", f.target, OUR, key_id=kids[k])])

    t0 = time.monotonic()
    reps = at_once(one, n=40)
    elapsed = time.monotonic() - t0
    assert all(r.status == 401 for r in reps), reps
    assert len(answering(f)) >= 3, "reuseport used fewer than 3 workers"
    assert 1 <= f.keys.count() <= 2 + int(elapsed / 30), \
        (f.keys.count(), elapsed)
