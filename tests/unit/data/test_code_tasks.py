"""Generated docstring -> function tasks: deterministic, held out by task, references pass their own tests."""

from __future__ import annotations

import ast

from llmforge.data.code_tasks import code_task_records, list_tasks, string_tasks, task_split
from llmforge.eval.functional import extract_code, run_candidate


def test_tasks_are_unique_valid_and_pass_their_own_tests() -> None:
    tasks = [*list_tasks(), *string_tasks()]
    assert len({t.name for t in tasks}) == len(tasks)
    for task in tasks:
        fn = ast.parse(task.code).body[0]
        assert isinstance(fn, ast.FunctionDef) and fn.name == task.name
        namespace: dict = {}
        exec(task.code + "\n" + "\n".join(task.assertions()), namespace)  # noqa: S102 - our own reference code
        # tests discriminate: a task's assertions do not all expect the same value
        assert len({repr(v) for v in task.expected()}) > 1, task.name


def test_prompt_shows_the_first_test_as_a_doctest() -> None:
    task = next(iter(string_tasks()))
    first = task.assertions()[0]
    call, expected = first.removeprefix("assert ").split(" == ")
    assert f">>> {call}\n{expected}" in task.prompt()
    assert f"`{task.signature}`" in task.prompt()


def test_records_are_deterministic_capped_and_held_out_by_task() -> None:
    records = code_task_records(max_train=50, max_validation=5, max_test=10)
    assert records == code_task_records(max_train=50, max_validation=5, max_test=10)
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "validation", "test")}
    assert counts == {"train": 50, "validation": 5, "test": 10}
    names = {s: {r["name"] for r in records if r["split"] == s} for s in counts}
    assert not names["test"] & names["train"] and not names["validation"] & names["train"]
    assert all(task_split(r["name"]) == r["split"] for r in records)


def test_reference_responses_pass_in_the_sandbox() -> None:
    records = code_task_records(max_train=3, max_validation=0, max_test=3)
    for record in records:
        assert run_candidate(extract_code(record["output"]), record["tests"]).passed, record["name"]
        wrong = extract_code(record["output"]).replace("return ", "return 0 and ", 1)
        assert not run_candidate(wrong, record["tests"]).passed, record["name"]
