"""What a model reference points at, and which runtime runs it: read from manifests, never from file names.

A reference is what a user types after `--model`: 'demo', a hub id, a model directory, an llmforge run directory
(prepare, train, compress, merge, export), or a folder/file inside an export run. `resolve_ref` turns it into a
`ModelRef`: the artifact's kind (transformers, adapter, onnx, gguf, tensorrt), where its weights are, the run
it came from (with that run's manifest), and where an HF tokenizer for it lives.

An export run's manifest maps each format to its path (`formats`), so `runs/export/onnx-int8` is known to be
the `onnx-int8` format of that run. An ONNX folder written outside a run describes itself in `onnx_config.json`.

`registry:NAME@ALIAS`, `registry:NAME@VERSION` and `registry:NAME` (its production alias) name a version in the
model registry (`llmforge.registry`): it resolves, here and only here, to the version's run directory once its files
are verified against the manifest it was registered with; a version whose files changed is refused, naming them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from llmforge.artifacts import is_run_dir, read_manifest
from llmforge.errors import LlmforgeError
from llmforge.models.footprint import weight_file_bytes
from llmforge.models.ort import CONFIG_FILE as ONNX_CONFIG
from llmforge.models.ort import FORMAT as ONNX_FORMAT
from llmforge.models.ort import Q8_METHOD

Kind = Literal["transformers", "adapter", "int8", "onnx", "gguf", "tensorrt"]
RUNTIMES: dict[str, str] = {"transformers": "pytorch", "adapter": "pytorch", "int8": "pytorch", "onnx": "onnxruntime",
                            "gguf": "llamacpp", "tensorrt": "tensorrt"}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference. `path` is the weights: a model dir or hub id (transformers), the base model
    (adapter, with `adapter`), an ONNX export dir, a .gguf file, or a TensorRT engine dir."""

    ref: str
    kind: Kind
    path: str
    adapter: Path | None = None
    format: str | None = None  # the export format ('onnx-int8', 'gguf-q8_0'); None for PyTorch models
    run_dir: Path | None = None  # the llmforge run directory the artifact belongs to
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    tokenizer: str | None = None  # a directory (or hub id) holding the HF tokenizer for the artifact

    @property
    def runtime(self) -> str:
        return RUNTIMES[self.kind]


def format_kind(fmt: str) -> Kind:
    """The artifact kind of an export format named in a manifest."""
    for prefix, kind in (("onnx", "onnx"), ("gguf-", "gguf"), ("tensorrt-", "tensorrt")):
        if fmt.startswith(prefix):
            return kind  # type: ignore[return-value]
    raise LlmforgeError(f"unknown export format '{fmt}' in a manifest; known: onnx*, gguf-*, tensorrt-*")


def export_formats(run_dir: Path) -> dict[str, Path]:
    """{format: artifact path} of an export run, from its manifest (empty for any other run)."""
    manifest = read_manifest(run_dir)
    if manifest.get("kind") != "export":
        return {}
    return {fmt: Path(run_dir) / rel for fmt, rel in (manifest.get("formats") or {}).items()}


def _export_ref(ref: str, run_dir: Path, fmt: str, path: Path) -> ModelRef:
    manifest = read_manifest(run_dir)
    kind = format_kind(fmt)
    tokenizer = str(path) if kind == "onnx" else manifest.get("source_model")
    return ModelRef(ref, kind, str(path), format=fmt, run_dir=run_dir, manifest=manifest, tokenizer=tokenizer)


def _choose_format(ref: str, run_dir: Path, formats: dict[str, Path]) -> ModelRef:
    if len(formats) == 1:
        fmt, path = next(iter(formats.items()))
        return _export_ref(ref, run_dir, fmt, path)
    choices = ", ".join(f"{run_dir / p.relative_to(run_dir).parts[0]} ({fmt})" for fmt, p in formats.items())
    raise LlmforgeError(f"{ref} is an export run holding {len(formats)} formats; name one: {choices}")


def _inside_export(ref: str, path: Path) -> ModelRef | None:
    """`path` is one format's folder or file inside an export run (the run's manifest says which)."""
    target = path.resolve()
    for run_dir in list(target.parents)[:2]:
        if not is_run_dir(run_dir):
            continue
        for fmt, artifact in export_formats(run_dir).items():
            rel = artifact.resolve().relative_to(run_dir.resolve())
            if target == artifact.resolve() or target == run_dir.resolve() / rel.parts[0]:
                return _export_ref(ref, run_dir, fmt, artifact)
    return None


def _bare_onnx(ref: str, path: Path) -> ModelRef | None:
    """An ONNX folder written outside an export run (e.g. by `llmforge.export.onnx.export_onnx`)."""
    file = path / ONNX_CONFIG
    config = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    if config.get("format") != ONNX_FORMAT:
        return None
    method = (config.get("quantization") or {}).get("method")
    fmt = "onnx" if method is None else "onnx-q8" if method == Q8_METHOD else "onnx-int8"
    return ModelRef(ref, "onnx", str(path), format=fmt, tokenizer=str(path))


REGISTRY_PREFIX = "registry:"


def _registered(ref: str) -> Path | None:
    """The verified run directory of a `registry:` reference; None for any other reference."""
    if not ref.startswith(REGISTRY_PREFIX):
        return None
    from llmforge.registry import resolve

    return resolve(ref)


def find_export(name_or_path: str | Path) -> ModelRef | None:
    """The export artifact `name_or_path` names, or None when it is not one (a PyTorch model, a hub id)."""
    ref = str(name_or_path)
    registered = _registered(ref)
    if registered is not None:
        found = find_export(registered)
        return replace(found, ref=ref) if found else None
    path = Path(ref).expanduser()
    if not path.exists():
        return None
    if is_run_dir(path):
        formats = export_formats(path)
        return _choose_format(ref, path, formats) if formats else None
    found = _inside_export(ref, path) or (_bare_onnx(ref, path) if path.is_dir() else None)
    if found is None and path.is_file() and path.open("rb").read(4) == b"GGUF":  # the format's magic number
        raise LlmforgeError(f"{ref} is a GGUF file outside an llmforge export run, so the tokenizer it needs is "
                            "unknown; pass the export run's folder (its manifest names the source model)")
    return found


def resolve_ref(name_or_path: str | Path) -> ModelRef:
    """Resolve any model reference llmforge accepts (see the module docstring)."""
    registered = _registered(str(name_or_path))  # verified once, here, then resolved as its run directory
    if registered is not None:
        return replace(find_export(registered) or resolve_model(registered), ref=str(name_or_path))
    return find_export(name_or_path) or resolve_model(name_or_path)


def _pytorch(ref: str, path: str, adapter: Path | None = None, run_dir: Path | None = None,
             manifest: dict[str, Any] | None = None) -> ModelRef:
    """A model transformers loads (with peft for an adapter; llmforge's int8 kernels for an int8 artifact)."""
    from llmforge.models.int8 import is_int8_dir

    if adapter is not None:
        own = (adapter / "tokenizer_config.json").is_file()  # saved with the adapter by `llmforge train`
        return ModelRef(ref, "adapter", path, adapter=adapter, run_dir=run_dir, manifest=manifest or {},
                        tokenizer=str(adapter) if own else path)
    kind: Kind = "int8" if is_int8_dir(Path(path)) else "transformers"
    return ModelRef(ref, kind, path, run_dir=run_dir, manifest=manifest or {}, tokenizer=path)


DEMO_NAME = "demo"
DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo-base"


def resolve_model(name_or_path: str | Path) -> ModelRef:
    """Resolve a reference to a PyTorch model (a model dir, run dir, adapter, hub id or 'demo'); an export is
    refused with the reason (it runs on its own runtime)."""
    from llmforge.models.presets import preset_reference

    ref = name = str(name_or_path)
    registered = _registered(name)
    if registered is not None:
        return replace(resolve_model(registered), ref=ref)
    name = preset_reference(name) or name  # a preset: its pulled run dir, or its hub id (see `llmforge models`)
    if name == DEMO_NAME:
        if not (DEMO_DIR / "config.json").is_file():
            raise LlmforgeError(
                f"the embedded demo model is missing from {DEMO_DIR}; rebuild it with `make demo-base`"
            )
        return _pytorch(ref, str(DEMO_DIR))
    path = Path(name).expanduser()
    _refuse_export(name, path)
    if is_run_dir(path):
        manifest = read_manifest(path)
        if manifest.get("model_dir"):
            return _pytorch(ref, str(path / manifest["model_dir"]), run_dir=path, manifest=manifest)
        if manifest.get("adapter_dir"):
            return _pytorch(ref, resolve_model(manifest["base_model"]).path, path / manifest["adapter_dir"], path,
                            manifest)
        raise LlmforgeError(f"{path} is a '{manifest.get('kind')}' run directory, which holds no model")
    if path.exists() and not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            import json

            base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
            return _pytorch(ref, resolve_model(base).path, path)
        raise LlmforgeError(f"{path} exists but holds no model (no config.json or adapter_config.json)")
    if not path.exists() and _looks_like_path(name):
        raise LlmforgeError(f"{path}: no such directory (a local model directory, run directory or export)")
    return _pytorch(ref, name)


def _looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything absolute, relative-dotted, home-based or deeper is a path."""
    return name.startswith(("/", ".", "~", "\\")) or name.count("/") > 1 or "\\" in name


def _refuse_export(name: str, path: Path) -> None:
    """An export (ONNX, GGUF, TensorRT) runs on its own runtime; PyTorch loaders say so instead of failing late."""
    if not path.exists():
        return
    export_run = is_run_dir(path) and read_manifest(path).get("kind") == "export"
    try:
        exported = find_export(path)
    except LlmforgeError:  # an export run holding several formats
        exported = None
    if not export_run and exported is None:
        return
    if exported is not None and exported.run_dir:
        manifest = read_manifest(exported.run_dir)
    else:
        manifest = read_manifest(path) if export_run else {}
    what = f"the {exported.format} export" if exported else "an export run"
    source = manifest.get("source_model")
    raise LlmforgeError(
        f"{name} is {what}: it runs on its own runtime, not transformers. `llmforge bench` and `llmforge eval` "
        "measure it; PyTorch workflows need the model it was exported from"
        + (f" ({source})" if source else "")
    )


def expand_export_runs(name: str, ref: str) -> list[tuple[str, str]]:
    """(name, ref) pairs: an export run holding several formats becomes one pair per format ('name/onnx-int8')."""
    path = Path(ref).expanduser()
    formats = export_formats(path) if is_run_dir(path) else {}
    if len(formats) <= 1:
        return [(name, ref)]
    return [(f"{name}/{fmt}", str(artifact)) for fmt, artifact in formats.items()]


def artifact_bytes(model: str) -> int:
    """Bytes of weight files the variant needs on disk (base and adapter for an adapter run)."""
    ref = resolve_ref(model)
    if ref.runtime != "pytorch":  # an export: its one file, or its folder
        path = Path(ref.path)
        return path.stat().st_size if path.is_file() else weight_file_bytes(path)
    folders = [Path(ref.path)] + ([ref.adapter] if ref.adapter else [])
    if not all(f.is_dir() for f in folders):
        return 0  # a hub id: not on disk
    return sum(weight_file_bytes(f) for f in folders)
