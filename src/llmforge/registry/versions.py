"""Registered versions: register a finished run directory, look a version up, verify its files, resolve a reference.

A version is an MLflow model version whose source is a small MLflow run holding the run directory's manifest,
metrics and config as artifacts, its numeric metrics as MLflow metrics, its lineage as tags, and two params,
`run_dir` and `manifest_sha256` (MLflow refuses to change a logged param: the pointer is immutable). The weights
stay where they are; the manifest pins the sha256 of every file, so re-hashing the directory proves it unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmforge.artifacts import CONFIG, MANIFEST, METRICS, read_manifest, sha256_file
from llmforge.errors import LlmforgeError
from llmforge.registry.decisions import Decision, history, record, user
from llmforge.registry.integrity import Drift, check_files
from llmforge.registry.store import client, experiment_id, mlflow_error, registry_errors, registry_uri

PREFIX = "registry:"
DEFAULT_ALIAS = "production"
ARTIFACTS = "llmforge"  # the registration run's artifact folder: manifest.json, metrics.json, config.yaml
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
METRIC_KEY = re.compile(r"[\w\-. /]{1,250}")


class IntegrityError(LlmforgeError):
    """A registered version's files are not the files it was registered with."""

    def __init__(self, message: str, drift: Drift) -> None:
        super().__init__(message)
        self.drift = drift


@dataclass(frozen=True)
class VersionInfo:
    """One registered version: where its run directory is, what pins it, and what its manifest says."""

    name: str
    version: int
    run_dir: Path
    manifest_sha256: str
    kind: str | None
    command: str | None
    aliases: tuple[str, ...]
    registered_by: str
    registered_at: str
    mlflow_run_id: str
    parents: tuple[str, ...] = ()  # lineage: the run directories this run was made from
    dataset_fingerprint: str | None = None
    metrics: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> str:
        return f"{PREFIX}{self.name}@{self.version}"


@dataclass(frozen=True)
class Verification:
    version: VersionInfo
    drift: Drift

    @property
    def ok(self) -> bool:
        return self.drift.ok


def parse_ref(ref: str) -> tuple[str, str]:
    """'registry:NAME[@VERSION|@ALIAS]' (the prefix optional) -> (name, version or alias); NAME alone means
    its production alias."""
    body = ref.removeprefix(PREFIX)
    name, _, selector = body.partition("@")
    if not name or (_ and not selector):
        raise LlmforgeError(f"bad registry reference '{ref}': expected registry:NAME, registry:NAME@VERSION "
                            "or registry:NAME@ALIAS (e.g. registry:chat@production, registry:chat@3)")
    return name, selector or DEFAULT_ALIAS


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """metrics.json's numbers as MLflow metrics ('formats.gguf-q8_0.seconds'); text, lists and bools left out."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_metrics(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and METRIC_KEY.fullmatch(name):
            out[name] = float(value)
    return out


def registered_model(name: str, uri: str) -> Any:
    """MLflow's registered model `name`, or an error naming the models that exist."""
    mlflow_client = client(uri)
    try:
        return mlflow_client.get_registered_model(name)
    except mlflow_error() as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
    names = sorted(m.name for m in mlflow_client.search_registered_models())
    known = ", ".join(names) if names else "none yet (llmforge registry register RUN_DIR --name NAME)"
    raise LlmforgeError(f"no registered model '{name}' in {uri}; registered models: {known}")


def _versions(name: str, uri: str) -> list[Any]:
    found = client(uri).search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def _what_exists(model: Any, uri: str) -> str:
    versions = ", ".join(str(v.version) for v in _versions(model.name, uri)) or "none"
    aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(model.aliases.items())) or "none"
    return f"versions: {versions}; aliases: {aliases}"


def _model_version(name: str, selector: str, uri: str) -> Any:
    model = registered_model(name, uri)
    if selector.isdigit():
        try:
            return client(uri).get_model_version(name, selector)
        except mlflow_error() as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
        raise LlmforgeError(f"'{name}' has no version {selector}; {_what_exists(model, uri)}")
    if selector not in model.aliases:
        raise LlmforgeError(f"'{name}' has no alias '{selector}'; {_what_exists(model, uri)}")
    return client(uri).get_model_version(name, str(model.aliases[selector]))


@registry_errors
def version_info(name: str, selector: str | int = DEFAULT_ALIAS, uri: str | None = None) -> VersionInfo:
    """The version `selector` (a number or an alias) of `name`."""
    uri = registry_uri(uri)
    mv = _model_version(name, str(selector), uri)
    run = client(uri).get_run(mv.run_id)
    tags = run.data.tags
    return VersionInfo(
        name=name, version=int(mv.version), run_dir=Path(run.data.params["run_dir"]),
        manifest_sha256=run.data.params["manifest_sha256"], kind=tags.get("llmforge.kind"),
        command=tags.get("llmforge.command"), aliases=tuple(sorted(mv.aliases)),
        registered_by=tags.get("llmforge.registered_by", ""), registered_at=tags.get("llmforge.registered_at", ""),
        mlflow_run_id=mv.run_id, parents=tuple(json.loads(tags.get("llmforge.parents", "[]"))),
        dataset_fingerprint=tags.get("llmforge.dataset_fingerprint") or None, metrics=dict(run.data.metrics),
    )


def _refuse_unfinished(run_dir: Path) -> dict[str, Any]:
    """A finished run's manifest: RunDir publishes a directory (by rename) only once its manifest is written."""
    if run_dir.name.endswith(".partial"):
        raise LlmforgeError(f"{run_dir} is an unfinished run (a .partial directory); register the run it becomes")
    manifest = read_manifest(run_dir)  # names a missing manifest, and a .partial sibling when there is one
    if not isinstance(manifest.get("files"), dict) or not manifest.get("finished_at"):
        raise LlmforgeError(f"{run_dir / MANIFEST} is incomplete (no 'files' or 'finished_at'): not a finished run")
    if not any(manifest.get(key) for key in ("model_dir", "adapter_dir", "formats")):  # as models/reference reads it
        raise LlmforgeError(f"{run_dir} is a '{manifest.get('kind')}' run, which holds no model (no model_dir, "
                            "adapter_dir or export formats in its manifest); register a train, compress, merge, "
                            "pull or export run")
    drift = check_files(run_dir, manifest["files"])
    if not drift.ok:
        raise IntegrityError(f"{run_dir} no longer matches its own manifest, so it cannot be registered:\n"
                             f"{drift.describe()}", drift)
    return manifest


@registry_errors
def register(run_dir: str | Path, name: str, *, description: str | None = None,
             uri: str | None = None) -> VersionInfo:
    """Register the finished run directory `run_dir` as the next version of `name` (created on first use)."""
    uri = registry_uri(uri)
    run_dir = Path(run_dir).expanduser().resolve()
    if not NAME_RULE.fullmatch(name):
        raise LlmforgeError(f"bad model name '{name}': letters, digits, '.', '_' and '-', starting with a letter "
                            "or digit, at most 128 characters")
    manifest = _refuse_unfinished(run_dir)
    digest = sha256_file(run_dir / MANIFEST)
    mlflow_client = client(uri)
    try:
        mlflow_client.get_registered_model(name)
    except mlflow_error():
        mlflow_client.create_registered_model(name, description="llmforge runs (llmforge registry)")
    for mv in _versions(name, uri):
        if mv.tags.get("llmforge.manifest_sha256") == digest:
            raise LlmforgeError(f"{run_dir} is already registered as {PREFIX}{name}@{mv.version}")
    run_id = _registration_run(run_dir, manifest, digest, name, uri)
    mv = mlflow_client.create_model_version(
        name, f"runs:/{run_id}/{ARTIFACTS}", run_id=run_id,
        tags={"llmforge.run_dir": str(run_dir), "llmforge.manifest_sha256": digest,
              "llmforge.kind": str(manifest.get("kind"))},
        description=description or f"{manifest.get('kind')} run {run_dir}",
    )
    record(name, "register", None, int(mv.version), None, description, uri)
    return version_info(name, int(mv.version), uri)


def _registration_run(run_dir: Path, manifest: dict[str, Any], digest: str, name: str, uri: str) -> str:
    """An MLflow run carrying the version's pointer (params), lineage (tags), metrics and manifest (artifacts)."""
    from mlflow.entities import Metric, Param

    mlflow_client = client(uri)
    parents = [p.get("path") for p in manifest.get("parents") or []]
    tags = {"llmforge.kind": str(manifest.get("kind")), "llmforge.command": str(manifest.get("command")),
            "llmforge.parents": json.dumps(parents), "llmforge.registered_by": user(),
            "llmforge.registered_at": _now(), "llmforge.dataset_fingerprint": manifest.get("dataset_fingerprint") or "",
            "llmforge.git_sha": manifest.get("git_sha") or "", "llmforge.created_at": manifest.get("created_at", "")}
    run = mlflow_client.create_run(experiment_id(uri), run_name=f"{name}: {run_dir.name}", tags=tags)
    run_id = run.info.run_id
    metrics = json.loads((run_dir / METRICS).read_text(encoding="utf-8")) if (run_dir / METRICS).is_file() else {}
    stamp = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    flat = list(_flat_metrics(metrics).items())
    for start in range(0, len(flat), 900):  # MLflow takes at most 1000 metrics per batch
        mlflow_client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in flat[start:start + 900]])
    mlflow_client.log_batch(run_id, params=[Param("run_dir", str(run_dir)), Param("manifest_sha256", digest)])
    for file in (MANIFEST, METRICS, CONFIG):
        if (run_dir / file).is_file():
            mlflow_client.log_artifact(run_id, str(run_dir / file), ARTIFACTS)
    mlflow_client.set_terminated(run_id)
    return run_id


@registry_errors
def registered_manifest(info: VersionInfo, uri: str | None = None) -> dict[str, Any]:
    """The manifest as it was registered: the run directory's own when it still hashes to the pinned sha256, else
    the copy kept in the registry."""
    local = info.run_dir / MANIFEST
    if local.is_file() and sha256_file(local) == info.manifest_sha256:
        return json.loads(local.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        path = client(registry_uri(uri)).download_artifacts(info.mlflow_run_id, f"{ARTIFACTS}/{MANIFEST}", tmp)
        return json.loads(Path(path).read_text(encoding="utf-8"))


@registry_errors
def verify(name: str, selector: str | int = DEFAULT_ALIAS, uri: str | None = None) -> Verification:
    """Re-hash the version's run directory against the manifest it was registered with; name every changed,
    missing and added file (manifest.json included)."""
    info = version_info(name, selector, uri)
    files = registered_manifest(info, uri)["files"]
    if not info.run_dir.is_dir():
        return Verification(info, Drift(missing=tuple([MANIFEST, *files])))
    return Verification(info, check_files(info.run_dir, files, info.manifest_sha256))


@registry_errors
def resolve(ref: str, uri: str | None = None) -> Path:
    """The run directory `ref` ('registry:NAME[@VERSION|@ALIAS]') points at, after verifying it; a version whose
    files changed is refused, naming them."""
    name, selector = parse_ref(ref)
    checked = verify(name, selector, uri)
    if not checked.ok:
        raise IntegrityError(
            f"{ref} ({checked.version.ref}, {checked.version.run_dir}) was modified after registration; refusing "
            f"to load it:\n{checked.drift.describe()}\nRegister the directory again if the change is intended.",
            checked.drift)
    return checked.version.run_dir


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its versions, where its aliases point, and every decision taken on it."""

    name: str
    versions: tuple[VersionInfo, ...]
    aliases: dict[str, int]
    decisions: tuple[Decision, ...]


@registry_errors
def model_info(name: str, uri: str | None = None) -> ModelInfo:
    uri = registry_uri(uri)
    model = registered_model(name, uri)
    versions = tuple(version_info(name, int(mv.version), uri) for mv in _versions(name, uri))
    return ModelInfo(name, versions, {a: int(v) for a, v in model.aliases.items()}, tuple(history(name, uri)))


@registry_errors
def list_models(uri: str | None = None) -> list[ModelInfo]:
    """Every registered model (llmforge's and any other in the same MLflow registry)."""
    uri = registry_uri(uri)
    return [model_info(m.name, uri) for m in sorted(client(uri).search_registered_models(), key=lambda m: m.name)]
