"""Stdlib demo corpora: deterministic package-level splits, clean docstring -> function pairs."""

from __future__ import annotations

import ast
import itertools
from collections import Counter
from pathlib import Path

import pytest

from llmforge.data import sources
from llmforge.data.sources import (
    docstring_function_records,
    module_name,
    module_split,
    stdlib_files,
    stdlib_text_records,
)
from llmforge.errors import LlmforgeError


def test_stdlib_files_are_sorted_and_filtered() -> None:
    files = stdlib_files()
    root = sources.stdlib_root()
    assert files == sorted(files) and len(files) > 100
    parts = {part for f in files for part in f.relative_to(root).parts[:-1]}
    assert not parts & {"site-packages", "test", "tests", "idle_test", "__pycache__"}
    assert all(f.suffix == ".py" and f.stat().st_size <= 400_000 for f in files)
    names = {module_name(f) for f in files}
    assert {"json", "json.decoder", "os"} <= names


def test_module_name(tmp_path: Path) -> None:
    assert module_name(tmp_path / "json" / "decoder.py", tmp_path) == "json.decoder"
    assert module_name(tmp_path / "json" / "__init__.py", tmp_path) == "json"
    assert module_name(tmp_path / "os.py", tmp_path) == "os"
    assert module_name(Path("/elsewhere/demo.py"), tmp_path) == "demo"


def test_module_split_is_deterministic_and_by_top_package() -> None:
    names = [f"pkg{i}" for i in range(400)]
    splits = [module_split(n) for n in names]
    assert splits == [module_split(n) for n in names]
    assert all(module_split(f"{n}.sub.mod") == s for n, s in zip(names, splits))
    counts = Counter(splits)
    assert 20 <= counts["test"] <= 70 and 5 <= counts["validation"] <= 40  # ~10% and ~5% of 400
    assert {module_split(n, test_fraction=0.0, validation_fraction=0.0) for n in names} == {"train"}
    with pytest.raises(LlmforgeError, match="sum to less than 1"):
        module_split("json", test_fraction=0.6, validation_fraction=0.5)


def test_text_records_train_and_test_modules_disjoint() -> None:
    train = {r["module"] for r in stdlib_text_records("train")}
    test = list(stdlib_text_records("test"))
    assert train and test
    test_modules = {r["module"] for r in test}
    assert not train & test_modules
    assert not {m.split(".")[0] for m in train} & {m.split(".")[0] for m in test_modules}
    assert all(isinstance(r["text"], str) for r in test)
    with pytest.raises(LlmforgeError, match="unknown split 'dev'"):
        next(stdlib_text_records("dev"))


def _no_docstring(code: str) -> bool:
    fn = ast.parse(code).body[0]
    return isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(fn) is None


def test_docstring_function_records_are_clean_pairs() -> None:
    records = list(itertools.islice(docstring_function_records(), 400))
    assert len(records) == 400
    for r in records:
        assert set(r) == {"input", "output", "module", "name"}
        name = r["name"].rsplit(".", 1)[-1]
        assert r["input"].startswith(tuple(f"Write a Python function `{a}{name}(" for a in ("", "async ")))
        assert 40 <= len(r["output"]) <= 1200
        assert _no_docstring(r["output"]), r["name"]
    again = list(itertools.islice(docstring_function_records(), 400))
    assert again == records


def test_docstring_function_record_contents(tmp_path: Path) -> None:
    path = tmp_path / "demo.py"
    path.write_text(
        '''
class Box:
    @staticmethod
    def area(width: int, height: int = 2) -> int:
        """Return the area of a box of the given width and height."""
        result = width * height
        return result

    def stub(self):
        """A stub that only raises, which teaches nothing."""
        raise NotImplementedError

    def short(self):
        """Too short."""
        return self.width * self.height * 2


def outer(x):
    """Outer function documented well enough to be kept."""

    def inner(y):
        """Inner functions are never emitted on their own."""
        return y + 1

    return inner(x) * 2


if True:
    async def fetch(url: str) -> bytes:
        """Fetch the bytes at `url` (defined inside an `if` block)."""
        response = await open_url(url)
        return await response.read()


def empty_body():
    """Only a docstring here, nothing else at all."""


def only_pass():
    """Only a pass statement after the docstring."""
    pass
''',
        encoding="utf-8",
    )
    records = [(r["name"], r) for r in docstring_function_records([path])]
    assert [name for name, _ in records] == ["Box.area", "outer", "fetch"]
    assert records[2][1]["input"].startswith("Write a Python function `async fetch(url: str) -> bytes`.")
    assert records[2][1]["output"].startswith("async def fetch(url: str) -> bytes:\n    response = ")
    area = records[0][1]
    assert area["input"] == (
        "Write a Python function `area(width: int, height: int=2) -> int`.\n\n"
        "Return the area of a box of the given width and height."
    )
    assert area["output"] == (
        "@staticmethod\ndef area(width: int, height: int = 2) -> int:\n"
        "    result = width * height\n    return result"
    )
    assert "Inner functions are never emitted" in records[1][1]["output"]  # nested docstring kept in the body
    assert _no_docstring(records[1][1]["output"])
