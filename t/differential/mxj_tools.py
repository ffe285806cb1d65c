"""Helpers of the differential tests (import from here, not from conftest:
t/integration has a conftest.py too).

Differential tests: our C core against matrix-org's own Python libraries
(python3-canonicaljson, python3-signedjson) and the spec's test vectors.

The C side is reached through the small tools in t/tools/, built by t/build
into $MXJ_BUILD/tools (default: build/tools)."""

import os
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MXJ_BUILD", TOP / "build")).resolve()


def tool_path(name):
    p = BUILD / "tools" / name
    if not p.exists():
        pytest.fail(f"{p} is missing: run t/build first")
    return p


def run_tool(name, *args, input_bytes=b"", check=True):
    """Runs a tool, feeding input_bytes on stdin; returns CompletedProcess."""
    proc = subprocess.run([str(tool_path(name)), *args], input=input_bytes,
                          capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{name} {' '.join(args)} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace')}")
    return proc
