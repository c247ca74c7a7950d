"""The sandboxed pass-rate: correct code passes, wrong or harmful code fails, limits hold."""

from __future__ import annotations

from llmforge.eval.functional import Limits, extract_code, pass_rate, run_candidate

ADD = "def add(a, b):\n    return a + b"


def test_correct_code_passes_and_wrong_code_fails() -> None:
    assert run_candidate(ADD, ["assert add(2, 3) == 5"]).passed
    result = run_candidate(ADD.replace("+", "-"), ["assert add(2, 3) == 5"])
    assert not result.passed and result.status == "failed" and "AssertionError" in result.detail
    assert run_candidate("   ", ["assert True"]).status == "no code"
    assert run_candidate("def add(a, b) return", ["assert True"]).status == "failed"  # syntax error


def test_network_and_processes_are_refused() -> None:
    for code in ("import socket\nsocket.socket()", "import socket\nsocket.getaddrinfo('localhost', 80)",
                 "import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')"):
        result = run_candidate(code, [])
        assert not result.passed and "blocked in the sandbox" in result.detail, code


def test_isolated_interpreter_stripped_env_and_temp_cwd(tmp_path) -> None:
    checks = ["import os, sys",
              "assert sys.flags.isolated == 1",
              "assert not {k for k in os.environ if k not in ('LC_CTYPE',)}, dict(os.environ)",
              "assert os.path.basename(os.getcwd()).startswith('llmforge-sandbox-')",
              f"assert not os.getcwd().startswith({str(tmp_path)!r})"]
    assert run_candidate("x = 1", checks).passed


def test_limits_stop_runaway_code() -> None:
    assert run_candidate("import time\ntime.sleep(30)", [], Limits(timeout_s=1)).status == "timeout"
    assert run_candidate("while True:\n    pass", [], Limits(timeout_s=30, cpu_s=1)).status == "killed"
    big = run_candidate("x = bytearray(1 << 31)", [], Limits(memory_bytes=1 << 29))
    assert not big.passed and "MemoryError" in big.detail
    too_big = run_candidate("with open('f', 'w') as f:\n    f.write('x' * 4096)", [], Limits(file_bytes=1024))
    assert not too_big.passed and "File too large" in too_big.detail


def test_extract_code_takes_the_first_fence_or_the_first_def() -> None:
    assert extract_code(f"Here you go:\n```python\n{ADD}\n```\nIt adds.") == ADD
    assert extract_code(f"```\n{ADD}\n```") == ADD
    assert extract_code(f"```python\n{ADD}") == ADD  # cut off by the token limit
    assert extract_code(f"Sure, this works:\n{ADD}\n") == ADD
    assert extract_code("no code at all") == "no code at all"


def test_pass_rate_counts_each_answer() -> None:
    answers = [f"```python\n{ADD}\n```", "I cannot do that.", ADD.replace("+", "*")]
    tests = [["assert add(2, 3) == 5"]] * 3
    result = pass_rate(answers, tests)
    assert result["tasks"] == 3 and result["passed"] == 1 and result["pass_rate"] == 1 / 3
    assert result["statuses"] == {"passed": 1, "failed": 2}
    assert [r["status"] for r in result["results"]] == ["passed", "failed", "failed"]
