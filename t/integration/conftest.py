"""Fixtures of the integration suite; the harness is in mxj_nginx.py."""

import pytest

from mxj_nginx import Nginx


@pytest.fixture
def nginx():
    """A factory-made nginx that is stopped and checked after the test."""
    n = Nginx()
    yield n
    n.stop()
    bad = n.bad_log_lines()
    log = n.log_text()
    n.cleanup()
    assert not bad, "nginx error log has alerts:\n" + "\n".join(bad) \
        + "\n--- full log ---\n" + log


@pytest.fixture
def redis_server():
    """A private redis-server on a free loopback port, removed after."""
    from mxj_redis import RedisServer
    r = RedisServer().start()
    yield r
    r.cleanup()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "no_valgrind: cannot run with master_process off "
                   "(t/valgrind deselects it)")
    config.addinivalue_line(
        "markers", "serial: timing-sensitive or needs a resource the "
                   "other tests share; t/test runs it after the parallel "
                   "run, alone (-m serial)")
