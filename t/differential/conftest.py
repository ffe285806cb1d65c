"""Differential tests: see mxj_tools.py. Test modules import the helpers
with `from mxj_tools import run_tool` (two conftest.py files share one
module name, so importing from conftest is fragile)."""

from mxj_tools import BUILD, TOP, run_tool, tool_path  # noqa: F401
