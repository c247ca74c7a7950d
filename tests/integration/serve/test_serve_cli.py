"""`llmforge serve` as a user runs it (a new process): a model that cannot load is one line, before uvicorn logs
anything (issue #13 item 5; the in-process checks are tests/unit/serve/test_serve_startup.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_cli_serve_on_a_missing_dir_is_one_line_before_any_uvicorn_log(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, "-m", "llmforge.cli", "serve", str(missing), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and str(missing) in lines[0] and "no such directory" in lines[0], lines
