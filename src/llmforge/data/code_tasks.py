"""Small "docstring -> Python function" tasks, each with its own tests, derived offline and deterministically.

Two families of tasks are built from parts:

* integer lists: an aggregate (sum, list, largest, count) of a transform (square, plus k, ...) of the numbers
  that pass a filter (even, greater than k, divisible by k, ...): `sum_square_even(xs)`.
* strings: two string operations in order (reverse, upper case, first k characters, remove vowels, ...):
  `reverse_then_upper(s)`.

Each task's reference implementation is our own code; its tests are assertions whose expected values come from
running that reference on inputs drawn from a seeded RNG. The first assertion is shown in the docstring as a
doctest, the rest stay hidden. Splits are fixed per task name by a SHA-256, so a held-out task (a combination of
parts) never appears in training.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Split = Literal["train", "validation", "test"]

# (name, condition on x, how the numbers are called)
_FILTERS: list[tuple[str, str, str]] = [
    ("all", "True", "numbers"),
    ("even", "x % 2 == 0", "even numbers"),
    ("odd", "x % 2 != 0", "odd numbers"),
    ("positive", "x > 0", "positive numbers"),
    ("negative", "x < 0", "negative numbers"),
    *((f"gt{k}", f"x > {k}", f"numbers greater than {k}") for k in range(1, 6)),
    *((f"lt{k}", f"x < {k}", f"numbers less than {k}") for k in range(1, 6)),
    *((f"div{k}", f"x % {k} == 0", f"numbers divisible by {k}") for k in range(3, 6)),
]
# (name, expression of x, how to describe the transformed numbers given the filtered ones)
_MAPS: list[tuple[str, str, str]] = [
    ("", "x", "{}"),
    ("square", "x * x", "the squares of {}"),
    ("abs", "abs(x)", "the absolute values of {}"),
    ("negated", "-x", "the negations of {}"),
    *((f"plus{k}", f"x + {k}", "{}" + f", each increased by {k}") for k in range(1, 6)),
    *((f"times{k}", f"x * {k}", "{}" + f", each multiplied by {k}") for k in range(2, 6)),
]
# (name, description of the operation applied to `s`, code template over an expression e)
_STRING_OPS: list[tuple[str, str, str]] = [
    ("reverse", "reverse it", "{e}[::-1]"),
    ("upper", "convert it to upper case", "{e}.upper()"),
    ("lower", "convert it to lower case", "{e}.lower()"),
    ("nospace", "remove all spaces", "{e}.replace(' ', '')"),
    ("underscore", "replace each space with an underscore", "{e}.replace(' ', '_')"),
    ("novowel", "remove the vowels (a, e, i, o, u, either case)",
     "''.join(c for c in {e} if c.lower() not in 'aeiou')"),
    ("double", "repeat it twice", "{e} * 2"),
    *((f"first{k}", f"keep only its first {k} characters", f"{{e}}[:{k}]") for k in range(2, 6)),
    *((f"last{k}", f"keep only its last {k} characters", f"{{e}}[-{k}:]") for k in range(2, 6)),
]
_WORDS = ("apple", "Tree", "sky", "Data", "moon", "river", "code", "Owl", "blue", "idea", "stone", "Echo", "rain")


@dataclass(frozen=True)
class CodeTask:
    name: str
    signature: str
    description: str
    code: str  # the reference implementation (a function definition)
    args: tuple[Any, ...]  # one argument per test case

    def expected(self) -> list[Any]:
        namespace: dict[str, Any] = {}
        exec(self.code, namespace)  # our own generated reference code, never model output  # noqa: S102
        return [namespace[self.name](arg) for arg in self.args]

    def assertions(self) -> list[str]:
        return [f"assert {self.name}({arg!r}) == {want!r}" for arg, want in zip(self.args, self.expected())]

    def prompt(self) -> str:
        shown = self.args[0]
        example = f">>> {self.name}({shown!r})\n{self.expected()[0]!r}"
        return f"Write a Python function `{self.signature}`.\n\n{self.description}\n\n{example}"

    def response(self) -> str:
        return f"```python\n{self.code}\n```"


def task_split(name: str, test_fraction: float = 0.1, validation_fraction: float = 0.05) -> Split:
    """The split of a task, fixed by a SHA-256 of its name (so it never depends on what else was generated)."""
    u = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64
    return "test" if u < test_fraction else "validation" if u < test_fraction + validation_fraction else "train"


def _rng(name: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big"))


def _int_lists(name: str, cases: int) -> tuple[list[int], ...]:
    rng = _rng(name)
    return tuple([rng.randint(-9, 12) for _ in range(rng.randint(3, 8))] for _ in range(cases))


def _strings(name: str, cases: int) -> tuple[str, ...]:
    rng = _rng(name)
    return tuple(" ".join(rng.sample(_WORDS, rng.randint(1, 3))) for _ in range(cases))


def list_tasks(cases: int = 5) -> Iterator[CodeTask]:
    for fname, cond, noun in _FILTERS:
        numbers = f"the {noun} in `xs`"
        where = "" if cond == "True" else f" if {cond}"
        label = "" if fname == "all" else f"_{fname}"
        yield _list_task(f"count{label}", "int", f"Return how many of the numbers in `xs` are "
                         f"{noun.removesuffix(' numbers').removeprefix('numbers ')}." if fname != "all"
                         else "Return how many numbers are in `xs`.",
                         f"sum(1 for x in xs{where})", cases)
        for mname, expr, phrase in _MAPS:
            if fname == "all" and not mname:
                continue  # plain sum/list/max of xs: too trivial
            values = phrase.format(numbers)
            mlabel = f"_{mname}" if mname else ""
            gen = f"{expr} for x in xs{where}"
            yield _list_task(f"sum{mlabel}{label}", "int", f"Return the sum of {values}.", f"sum({gen})", cases)
            yield _list_task(f"list{mlabel}{label}", "list[int]", f"Return a list of {values}, in order.",
                             f"[{gen}]", cases)
            yield _list_task(f"largest{mlabel}{label}", "int",
                             f"Return the largest of {values}, or 0 if there are none.",
                             f"max(({gen}), default=0)", cases)


def _list_task(name: str, returns: str, description: str, body: str, cases: int) -> CodeTask:
    signature = f"{name}(xs: list[int]) -> {returns}"
    return CodeTask(name, signature, description, f"def {signature}:\n    return {body}", _int_lists(name, cases))


def string_tasks(cases: int = 5) -> Iterator[CodeTask]:
    for (n1, d1, c1) in _STRING_OPS:
        for (n2, d2, c2) in _STRING_OPS:
            if n1 == n2 or {n1, n2} == {"upper", "lower"}:
                continue
            name = f"{n1}_then_{n2}"
            signature = f"{name}(s: str) -> str"
            description = f"Take the string `s`, {d1}, then {d2}. Return the result."
            inner = c1.format(e="s")
            if inner.endswith(" * 2") and c2.startswith("{e}"):  # (s * 2).upper(), not s * 2.upper()
                inner = f"({inner})"
            body = c2.format(e=inner)
            yield CodeTask(name, signature, description, f"def {signature}:\n    return {body}",
                           _strings(name, cases))


def code_task_records(
    max_train: int | None = None, max_test: int | None = None, max_validation: int | None = None, cases: int = 5,
) -> list[dict[str, Any]]:
    """input/output records with "split", "name" and "tests" (assertions), train/validation/test capped.

    Which tasks are kept under a cap is fixed by a seeded shuffle, so the records are the same on every run.
    """
    caps = {"train": max_train, "validation": max_validation, "test": max_test}
    tasks = [*list_tasks(cases), *string_tasks(cases)]
    random.Random(0).shuffle(tasks)
    counts = {split: 0 for split in caps}
    records = []
    for task in tasks:
        split = task_split(task.name)
        cap = caps[split]
        if cap is not None and counts[split] >= cap:
            continue
        counts[split] += 1
        records.append({"input": task.prompt(), "output": task.response(), "split": split, "name": task.name,
                        "tests": task.assertions()})
    return records
