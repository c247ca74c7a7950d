"""Demo corpora made from the installed Python standard library: offline, free to use, deterministic.

`stdlib_text_records` gives source files as plain text (for pretraining-style runs), and
`docstring_function_records` gives "docstring -> function" instruction pairs. Splits are by top-level package
so that `json.decoder` and `json.encoder` never end up on both sides of a train/test boundary.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import sysconfig
import textwrap
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from llmforge.errors import LlmforgeError

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")
MAX_FILE_BYTES = 400_000
MIN_DOCSTRING_CHARS = 20
MIN_OUTPUT_CHARS, MAX_OUTPUT_CHARS = 40, 1200
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
_Function = ast.FunctionDef | ast.AsyncFunctionDef


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The standard library's .py files, sorted; no tests, no site-packages, no non-package folders,
    nothing over 400 kB."""
    root = stdlib_root()
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        # Prune early (site-packages alone can hold 10k+ files); a name like "config-3.11-x86_64-linux-gnu"
        # is not a package, so nothing under it is a stdlib module.
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and d.isidentifier()]
        for name in names:
            path = Path(folder, name)
            if name.endswith(".py") and path.is_file() and path.stat().st_size <= MAX_FILE_BYTES:
                files.append(path)
    return sorted(files)


def module_name(path: Path, root: Path | None = None) -> str:
    """"json/decoder.py" -> "json.decoder"; "json/__init__.py" -> "json" (relative to the stdlib).

    A file outside `root` is named by its stem ("/tmp/demo.py" -> "demo").
    """
    base = root or stdlib_root()
    relative = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def module_split(module: str, test_fraction: float = 0.1, validation_fraction: float = 0.05) -> Split:
    """The split of `module`, fixed by a SHA-256 of its top-level package so a package never straddles splits."""
    if test_fraction < 0 or validation_fraction < 0 or test_fraction + validation_fraction >= 1:
        raise LlmforgeError(
            f"module_split: test_fraction ({test_fraction}) and validation_fraction ({validation_fraction}) "
            "must be >= 0 and sum to less than 1"
        )
    top = module.split(".", 1)[0]
    u = int.from_bytes(hashlib.sha256(top.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def stdlib_text_records(split: str = "train") -> Iterator[dict[str, Any]]:
    """{"text": source, "module": name} for each stdlib module in `split`; files not valid UTF-8 are skipped."""
    if split not in SPLITS:
        raise LlmforgeError(f"unknown split '{split}'; allowed: {', '.join(SPLITS)}")
    root = stdlib_root()
    for path in stdlib_files():
        module = module_name(path, root)
        if module_split(module) != split:
            continue
        source = _read_source(path)
        if source is not None:
            yield {"text": source, "module": module}


def docstring_function_records(files: Iterable[Path] | None = None) -> Iterator[dict[str, Any]]:
    """Instruction pairs "write `signature` + docstring" -> the function without its docstring.

    One record per documented, non-trivial module-level function or method (not functions nested in
    functions), in file order then source order: {"input", "output", "module", "name"}.
    """
    root = stdlib_root()
    for path in stdlib_files() if files is None else files:
        source = _read_source(path)
        tree = _parse(source) if source is not None else None
        if source is None or tree is None:
            continue
        module = module_name(path, root)
        lines = source.splitlines()
        for qualname, node in _functions(tree.body, ""):
            record = _function_record(node, qualname, lines)
            if record is not None:
                yield {**record, "module": module}


def _read_source(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _parse(source: str) -> ast.Module | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. in old stdlib code
        try:
            return ast.parse(source)
        except (SyntaxError, ValueError):
            return None


def _functions(body: Iterable[ast.AST], prefix: str) -> Iterator[tuple[str, _Function]]:
    """Functions and methods in source order, with qualified names; never descends into a function."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.stmt):  # if/try/with/for blocks at module or class level
            yield from _functions(ast.iter_child_nodes(node), prefix)
        elif isinstance(node, (ast.excepthandler, ast.match_case)):
            yield from _functions(node.body, prefix)


def _function_record(node: _Function, qualname: str, lines: list[str]) -> dict[str, str] | None:
    docstring = ast.get_docstring(node, clean=False)
    if docstring is None:
        return None
    cleaned = inspect.cleandoc(docstring)
    body = node.body[1:]
    if len(cleaned) < MIN_DOCSTRING_CHARS or not body or _is_stub(body):
        return None
    output = _code_without_docstring(node, lines)
    if output is None or not MIN_OUTPUT_CHARS <= len(output) <= MAX_OUTPUT_CHARS:
        return None
    prompt = f"Write a Python function `{_signature(node)}`.\n\n{cleaned}"
    return {"input": prompt, "output": output, "name": qualname}


def _is_stub(body: list[ast.stmt]) -> bool:
    """Only `pass`, `...` or `raise NotImplementedError`: nothing to learn from."""
    if len(body) != 1:
        return False
    stmt = body[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _signature(node: _Function) -> str:
    """`name(args) -> ret` as written (self kept); async functions say so."""
    text = f"{node.name}({ast.unparse(node.args)})"
    if node.returns is not None:
        text += f" -> {ast.unparse(node.returns)}"
    return f"async {text}" if isinstance(node, ast.AsyncFunctionDef) else text


def _code_without_docstring(node: _Function, lines: list[str]) -> str | None:
    """The function's source with its decorators, dedented, minus exactly the docstring's lines.

    None when that cannot be cut cleanly: the docstring shares a line with other code, or the result is not
    one docstring-free function (a string in the body less indented than the function defeats the dedent).
    """
    doc = node.body[0]
    assert doc.end_lineno is not None and doc.end_col_offset is not None and node.end_lineno is not None
    before = lines[doc.lineno - 1][: doc.col_offset].strip()
    after = lines[doc.end_lineno - 1][doc.end_col_offset :].strip()
    if before or (after and not after.startswith("#")):
        return None
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    kept = lines[first - 1 : doc.lineno - 1] + lines[doc.end_lineno : node.end_lineno]
    code = textwrap.dedent("\n".join(kept)).strip("\n").rstrip()
    return code if _is_one_plain_function(code) else None


def _is_one_plain_function(code: str) -> bool:
    tree = _parse(code)
    fn = tree.body[0] if tree is not None and len(tree.body) == 1 else None
    return isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(fn) is None
