"""The interop world is made once per session (mxj_interop.World) and
checked when the session ends: nginx's error log has no [alert], [emerg],
[crit] or "exited on signal", and no Synapse logged a signature, key or
hash that did not verify."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mxj_interop import World  # noqa: E402


@pytest.fixture(scope="session")
def world():
    if not (Path(os.environ.get("MXJ_SYNAPSE", "")) / "src" /
            "synapse").is_dir():
        pytest.fail("MXJ_SYNAPSE names no unpacked Synapse: run t/interop/run")
    w = World()
    try:
        w.start()
        yield w
    finally:
        w.stop()
        w.mark("everything stopped")
        report = os.environ.get("MXJ_INTEROP_TIMINGS")
        if report:
            Path(report).write_text("".join(
                f"{t:7.1f} s  {what}\n" for what, t in w.timings))
        bad = w.edge.bad_log_lines() if w.edge else []
        keep = os.environ.get("MXJ_INTEROP_KEEP")
        if not keep:
            w.cleanup()
        assert not bad, "nginx error log:\n" + "\n".join(bad)


def pytest_configure(config):
    # the test servers' certificates are self-signed
    config.addinivalue_line(
        "filterwarnings", "ignore::urllib3.exceptions.InsecureRequestWarning")
