"""The registry's Python API on a real MLflow store: register, list/show, promote, rollback, verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmforge import registry
from llmforge.errors import LlmforgeError, MissingExtraError
from tests.unit.registry.conftest import make_run


def test_two_versions_are_listed_with_lineage_and_metrics(runs: tuple[Path, Path], name: str,
                                                          registry_uri: str) -> None:
    first, second = runs
    v1 = registry.register(first, name, uri=registry_uri)
    v2 = registry.register(second, name, uri=registry_uri)
    assert (v1.version, v2.version) == (1, 2)
    assert v2.run_dir == second.resolve() and v2.kind == "model" and v2.command == "train"
    assert v2.parents == (str(first.resolve()),)  # lineage from the manifest
    assert v2.metrics == {"train_loss": 1.2, "eval.perplexity": 2.5}  # numbers only, nested keys dotted
    assert len(v2.manifest_sha256) == 64
    listed = {m.name: m for m in registry.list_models(registry_uri)}
    assert [v.version for v in listed[name].versions] == [1, 2]
    shown = registry.model_info(name, registry_uri)
    assert [(d.action, d.version) for d in shown.decisions] == [("register", 1), ("register", 2)]
    assert shown.aliases == {}


def test_the_same_run_is_not_registered_twice(runs: tuple[Path, Path], name: str, registry_uri: str) -> None:
    registry.register(runs[0], name, uri=registry_uri)
    with pytest.raises(LlmforgeError, match=rf"already registered as registry:{name}@1"):
        registry.register(runs[0], name, uri=registry_uri)


def test_unfinished_and_inconsistent_runs_are_refused(tmp_path: Path, name: str, registry_uri: str) -> None:
    from llmforge.artifacts import RunDir

    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(LlmforgeError, match="not a finished llmforge run directory: no manifest.json"):
        registry.register(plain, name, uri=registry_uri)
    with RunDir(tmp_path / "crashed", kind="model", command="train", config={}) as run:
        run.file("model/x.bin").write_bytes(b"x")  # never finished: only crashed.partial exists
    with pytest.raises(LlmforgeError, match=r"crashed.partial exists: that run did not finish"):
        registry.register(tmp_path / "crashed", name, uri=registry_uri)
    with pytest.raises(LlmforgeError, match="unfinished run"):
        registry.register(tmp_path / "crashed.partial", name, uri=registry_uri)
    changed = make_run(tmp_path / "changed", b"\x03" * 8)
    (changed / "model" / "model.safetensors").write_bytes(b"edited")
    with pytest.raises(registry.IntegrityError, match="changed: model/model.safetensors"):
        registry.register(changed, name, uri=registry_uri)


def test_promote_rollback_and_the_recorded_decisions(runs: tuple[Path, Path], tmp_path: Path, name: str,
                                                     registry_uri: str) -> None:
    for run in (*runs, make_run(tmp_path / "third", b"\x04" * 8)):
        registry.register(run, name, uri=registry_uri)
    registry.promote(name, 1, uri=registry_uri)
    registry.promote(name, 2, "staging", uri=registry_uri)
    registry.promote(name, 2, uri=registry_uri, reason="lower loss")
    registry.promote(name, 3, uri=registry_uri)
    assert registry.model_info(name, registry_uri).aliases == {"production": 3, "staging": 2}

    back = registry.rollback(name, uri=registry_uri, reason="v3 regressed")
    assert (back.action, back.alias, back.version, back.previous, back.reason) == \
        ("rollback", "production", 2, 3, "v3 regressed")
    assert back.by and back.at.startswith("20")
    assert registry.version_info(name, "production", registry_uri).version == 2
    assert registry.rollback(name, uri=registry_uri).version == 1  # further back, never forward to 3
    with pytest.raises(LlmforgeError, match="nothing to roll back to: only version 1 has held it"):
        registry.rollback(name, uri=registry_uri)
    assert registry.model_info(name, registry_uri).aliases == {"production": 1, "staging": 2}

    decisions = [(d.action, d.alias, d.version, d.previous) for d in registry.model_info(name, registry_uri).decisions]
    assert decisions[3:] == [("promote", "production", 1, None), ("promote", "staging", 2, None),
                             ("promote", "production", 2, 1), ("promote", "production", 3, 2),
                             ("rollback", "production", 2, 3), ("rollback", "production", 1, 2)]
    assert registry.model_info(name, registry_uri).decisions[5].reason == "lower loss"


def test_rollback_with_no_earlier_production_version(runs: tuple[Path, Path], name: str, registry_uri: str) -> None:
    registry.register(runs[0], name, uri=registry_uri)
    with pytest.raises(LlmforgeError, match="nothing to roll back to: no version holds it"):
        registry.rollback(name, uri=registry_uri)
    registry.promote(name, 1, uri=registry_uri)
    with pytest.raises(LlmforgeError, match=rf"only version 1 has held it .*promote {name}@VERSION"):
        registry.rollback(name, uri=registry_uri)
    with pytest.raises(LlmforgeError, match="unknown alias 'canary'; llmforge moves these: production, staging"):
        registry.promote(name, 1, "canary", uri=registry_uri)


def test_verify_names_every_changed_missing_and_added_file(runs: tuple[Path, Path], name: str,
                                                          registry_uri: str) -> None:
    run = runs[0]
    registry.register(run, name, uri=registry_uri)
    assert registry.verify(name, 1, registry_uri).ok
    (run / "model" / "model.safetensors").write_bytes(b"\x00" * 64)  # same size, other bytes
    (run / "model" / "tokenizer.json").unlink()
    (run / "model" / "extra.bin").write_bytes(b"?")
    checked = registry.verify(name, 1, registry_uri)
    assert not checked.ok
    assert checked.drift == registry.Drift(changed=("model/model.safetensors",), missing=("model/tokenizer.json",),
                                           added=("model/extra.bin",))
    with pytest.raises(registry.IntegrityError, match="refusing to promote it"):
        registry.promote(name, 1, uri=registry_uri)


def test_a_rewritten_manifest_does_not_hide_a_changed_file(runs: tuple[Path, Path], name: str,
                                                           registry_uri: str) -> None:
    """The manifest is pinned by its sha256 at registration: re-hashing files into it is itself a change, and
    the files are still checked against the registered copy kept in MLflow."""
    from llmforge.artifacts import MANIFEST, sha256_file

    run = runs[0]
    registry.register(run, name, uri=registry_uri)
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(b"swapped")
    manifest = json.loads((run / MANIFEST).read_text())
    manifest["files"]["model/model.safetensors"] = sha256_file(weights)
    (run / MANIFEST).write_text(json.dumps(manifest))
    drift = registry.verify(name, 1, registry_uri).drift
    assert drift.changed == ("model/model.safetensors", MANIFEST) and not drift.missing and not drift.added


def test_a_deleted_run_dir_is_reported_missing(tmp_path: Path, name: str, registry_uri: str) -> None:
    import shutil

    run = make_run(tmp_path / "gone", b"\x05" * 8)
    registry.register(run, name, uri=registry_uri)
    shutil.rmtree(run)
    drift = registry.verify(name, 1, registry_uri).drift
    assert "manifest.json" in drift.missing and "model/model.safetensors" in drift.missing


def test_models_resolve_through_the_registry_and_tampering_is_refused(
        runs: tuple[Path, Path], name: str, registry_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmforge.models.reference import resolve_model, resolve_ref

    monkeypatch.setenv(registry.URI_ENV, registry_uri)  # references carry no URI: the store comes from the env
    registry.register(runs[0], name)
    registry.register(runs[1], name)
    registry.promote(name, 2)
    for ref in (f"registry:{name}@production", f"registry:{name}"):
        resolved = resolve_model(ref)
        assert resolved.path == str(runs[1].resolve() / "model") and resolved.run_dir == runs[1].resolve()
        assert resolved.ref == ref and resolved.kind == "transformers"
    assert resolve_ref(f"registry:{name}@1").path == str(runs[0].resolve() / "model")

    (runs[1] / "model" / "model.safetensors").write_bytes(b"tampered")
    for resolve in (resolve_model, resolve_ref):
        with pytest.raises(registry.IntegrityError, match=r"refusing to load it:\n  changed: model/model.safetensors"):
            resolve(f"registry:{name}@production")
    assert resolve_model(f"registry:{name}@1").run_dir == runs[0].resolve()  # the other version is intact


def test_bad_references_name_what_exists(runs: tuple[Path, Path], name: str, registry_uri: str) -> None:
    registry.register(runs[0], name, uri=registry_uri)
    registry.promote(name, 1, "staging", uri=registry_uri)
    with pytest.raises(LlmforgeError, match=rf"no registered model 'nope' in {registry_uri}; registered models: .*{name}"):
        registry.resolve("registry:nope@production", registry_uri)
    with pytest.raises(LlmforgeError, match=rf"'{name}' has no version 7; versions: 1; aliases: staging -> 1"):
        registry.resolve(f"registry:{name}@7", registry_uri)
    with pytest.raises(LlmforgeError, match=rf"'{name}' has no alias 'production'; versions: 1; aliases: staging"):
        registry.resolve(f"registry:{name}", registry_uri)
    with pytest.raises(LlmforgeError, match="bad registry reference 'registry:@1'"):
        registry.resolve("registry:@1", registry_uri)
    with pytest.raises(LlmforgeError, match="bad model name 'a b'"):
        registry.register(runs[1], "a b", uri=registry_uri)


def test_the_store_location_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.URI_ENV, raising=False)
    monkeypatch.setenv("LLMFORGE_HOME", str(tmp_path))
    assert registry.registry_uri() == f"sqlite:///{tmp_path}/registry/mlflow.db"
    monkeypatch.setenv(registry.URI_ENV, "http://mlflow.team:5000")
    assert registry.registry_uri() == "http://mlflow.team:5000"
    assert registry.registry_uri("sqlite:///x.db") == "sqlite:///x.db"


def test_without_mlflow_the_error_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'llmforge\[registry\]'"):
        registry.list_models(f"sqlite:///{tmp_path}/other.db")


def test_an_export_run_resolves_to_its_format_and_non_model_runs_are_refused(
        tmp_path: Path, name: str, registry_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmforge.artifacts import RunDir
    from llmforge.models.reference import resolve_ref

    with RunDir(tmp_path / "export", kind="export", command="export", config={}) as run:
        run.file("gguf-q8_0/model-q8_0.gguf").write_bytes(b"GGUF" + b"\0" * 16)  # never loaded
        run.extra = {"formats": {"gguf-q8_0": "gguf-q8_0/model-q8_0.gguf"}, "source_model": "/models/base"}
        run.finish({})
    with RunDir(tmp_path / "data", kind="prepared-dataset", command="prepare", config={}) as run:
        run.finish({})
    monkeypatch.setenv(registry.URI_ENV, registry_uri)
    registry.register(tmp_path / "export", name)
    resolved = resolve_ref(f"registry:{name}@1")
    assert (resolved.kind, resolved.format, resolved.ref) == ("gguf", "gguf-q8_0", f"registry:{name}@1")
    assert resolved.path == str((tmp_path / "export").resolve() / "gguf-q8_0" / "model-q8_0.gguf")
    with pytest.raises(LlmforgeError, match="is a 'prepared-dataset' run, which holds no model"):
        registry.register(tmp_path / "data", name)


def test_an_unreachable_server_is_one_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the default (2 retries) waits ~6 s
    uri = f"http://127.0.0.1:{port}"
    with pytest.raises(LlmforgeError, match=rf"the model registry at {uri} failed: .*Connection refused"):
        registry.list_models(uri)


def test_the_alias_stack_replays_promotions_and_rollbacks() -> None:
    from llmforge.registry.promote import alias_stack

    def d(action: str, version: int, alias: str = "production") -> registry.Decision:
        return registry.Decision(0, action, alias, version, None, "me", "2026-12-02T00:00:00+00:00")

    decisions = [d("register", 1, None), d("promote", 1), d("promote", 2, "staging"), d("promote", 2), d("promote", 3),
                 d("rollback", 2)]
    assert alias_stack(decisions, "production", 2) == [1, 2]
    assert alias_stack(decisions, "staging", 2) == [2]
    assert alias_stack(decisions, "production", 5) == [1, 2, 5]  # moved to 5 outside llmforge (MLflow's UI)
    assert alias_stack([], "production", None) == []
