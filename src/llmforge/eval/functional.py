"""Functional correctness of generated code: run each candidate against its tests in a sandboxed subprocess.

What the sandbox does (each candidate gets a fresh process):

* `python -I` (isolated: no PYTHON* environment variables, no user site, no script directory on sys.path), an
  empty environment, and a fresh temporary directory as cwd, deleted afterwards;
* resource limits set in the child before exec: CPU seconds, address space, file size, open files, no core
  dumps, and no new processes (RLIMIT_NPROC, ignored for root, hence also the audit hook below);
* a wall-clock timeout that kills the child's whole process group;
* no network, approximated: before the candidate runs, an audit hook (PEP 578) raises on socket creation,
  connection and name lookup, and on starting processes (subprocess, os.system/exec/spawn/fork) and on ctypes.
  Audit hooks cannot be removed from Python code, but this is not a security boundary against code written to
  escape (a container or seccomp is): it stops a small model's accidental side effects, which is its purpose.

A candidate passes when its code and all its assertions run without an exception.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The child's entry point: install the guard, then run the candidate and its tests from files in cwd.
_RUNNER = r'''
import sys

_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
            "os.forkpty", "pty.", "ctypes.", "webbrowser.", "urllib.Request")


def _guard(event, args):
    if event.startswith(_BLOCKED):
        raise PermissionError(f"blocked in the sandbox: {event}")


sys.addaudithook(_guard)
namespace = {"__name__": "candidate"}
with open("candidate.py", encoding="utf-8") as f:
    exec(compile(f.read(), "candidate.py", "exec"), namespace)
with open("tests.py", encoding="utf-8") as f:
    exec(compile(f.read(), "tests.py", "exec"), namespace)
'''


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock, includes interpreter start
    cpu_s: int = 5
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20
    open_files: int = 64


@dataclass(frozen=True)
class RunResult:
    passed: bool
    status: str  # "passed", "failed" (an exception), "killed" (a signal), "timeout", "no code"
    detail: str = ""


def extract_code(text: str) -> str:
    """The code of an answer: its first fenced block (```python or plain ```, closed or cut off by the token
    limit); an answer without a fence is taken from its first `def`/`import`/`from` line on, else as it is."""
    fence = re.search(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", text, flags=re.S)
    if fence:
        return fence.group(1).strip("\n")
    start = re.search(r"^(?:def |import |from |async def )", text, flags=re.M)
    return (text[start.start():] if start else text).strip("\n")


def _limit(limits: Limits) -> Any:
    def apply() -> None:
        import resource

        for what, value in ((resource.RLIMIT_CPU, limits.cpu_s), (resource.RLIMIT_AS, limits.memory_bytes),
                            (resource.RLIMIT_FSIZE, limits.file_bytes), (resource.RLIMIT_NOFILE, limits.open_files),
                            (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)):
            resource.setrlimit(what, (value, value))

    return apply


def run_candidate(code: str, tests: Sequence[str], limits: Limits = Limits()) -> RunResult:
    """Run `code` then `tests` (Python statements, e.g. assertions) in a sandboxed child process."""
    if not code.strip():
        return RunResult(False, "no code")
    with tempfile.TemporaryDirectory(prefix="llmforge-sandbox-") as tmp:
        work = Path(tmp)
        (work / "candidate.py").write_text(code, encoding="utf-8")
        (work / "tests.py").write_text("\n".join(tests) + "\n", encoding="utf-8")
        (work / "runner.py").write_text(_RUNNER, encoding="utf-8")
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "runner.py"], cwd=work, env={}, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=limits.timeout_s, preexec_fn=_limit(limits),
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return RunResult(False, "timeout")
    if proc.returncode == 0:
        return RunResult(True, "passed")
    if proc.returncode < 0:  # a signal: the CPU-time limit (SIGXCPU/SIGKILL) or another resource limit
        return RunResult(False, "killed", f"signal {-proc.returncode}")
    last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return RunResult(False, "failed", last[:300])


def pass_rate(answers: Sequence[str], tests: Sequence[Sequence[str]], limits: Limits = Limits()) -> dict[str, Any]:
    """Fraction of answers whose extracted code passes all its tests, with per-answer results and status counts."""
    if len(answers) != len(tests):
        raise ValueError(f"{len(answers)} answers but {len(tests)} test lists")
    results = [run_candidate(extract_code(a), t, limits) for a, t in zip(answers, tests)]
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {"pass_rate": sum(r.passed for r in results) / max(len(results), 1), "tasks": len(results),
            "passed": sum(r.passed for r in results), "statuses": statuses,
            "results": [{"status": r.status, "detail": r.detail} for r in results]}
