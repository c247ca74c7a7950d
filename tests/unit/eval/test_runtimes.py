"""Every artifact kind is evaluated through its own runtime: references resolve from manifests, ONNX Runtime and
llama.cpp give the PyTorch perplexity (same tokens, same masking) and the same greedy answers, and what cannot run
here says why."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from llmforge.config import ModelConfig
from llmforge.data.splits import load_split
from llmforge.errors import LlmforgeError
from llmforge.eval.config import EvalConfig, EvalOptions
from llmforge.eval.runner import evaluate
from llmforge.metrics.score import score
from llmforge.models.loader import load_model
from llmforge.models.reference import expand_export_runs, resolve_model, resolve_ref

pytest.importorskip("onnxruntime")
pytest.importorskip("gguf")

EVAL = dict(batch_size=4, generate_samples=4, max_new_tokens=6)


@pytest.fixture(scope="module")
def exported(sharp_model_dir: Path, sharp_onnx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export run holding onnx and gguf-f32, with the manifest `llmforge export` writes (parity is its tests').

    `sharp_model_dir` (tests/conftest.py): the tiny model with larger weights, whose next token depends on the
    context, so a runtime that ignores the context cannot pass. Its ONNX export is the session's, copied in."""
    import shutil

    from llmforge.artifacts import RunDir
    from llmforge.export.gguf import export_gguf

    out = tmp_path_factory.mktemp("exports") / "export"
    with RunDir(out, kind="export", command="export", config={}) as run:
        shutil.copytree(sharp_onnx_dir, run.file("onnx"))
        gguf = Path(export_gguf(sharp_model_dir, run.file("gguf-f32"), outtype="f32")["path"])
        run.extra = {"formats": {"onnx": "onnx", "gguf-f32": str(gguf.relative_to(run.staging))},
                     "source_model": str(sharp_model_dir.resolve())}
        run.finish({})
    return out


@pytest.fixture(scope="module")
def pytorch_run(sharp_model_dir: Path, prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "pytorch"
    evaluate(EvalConfig(model=ModelConfig(name_or_path=str(sharp_model_dir)), data=prepared,
                        eval=EvalOptions(**EVAL), output_dir=out))
    return out


@pytest.fixture(scope="module")
def pytorch_eval(pytorch_run: Path) -> dict:
    return json.loads((pytorch_run / "metrics.json").read_text())


def _eval(model: str | Path, prepared: Path, out: Path, **options) -> dict:
    return evaluate(EvalConfig(model=ModelConfig(name_or_path=str(model)), data=prepared,
                               eval=EvalOptions(**{**EVAL, **options}), output_dir=out)).metrics


def _samples(run: Path) -> list[str]:
    return [json.loads(line)["prediction"] for line in (run / "samples.jsonl").read_text().splitlines()]


def test_references_resolve_from_manifests(sharp_model_dir: Path, exported: Path) -> None:
    assert resolve_ref(str(sharp_model_dir)).kind == "transformers"
    onnx = resolve_ref(str(exported / "onnx"))
    assert (onnx.kind, onnx.format, onnx.runtime, onnx.run_dir) == ("onnx", "onnx", "onnxruntime", exported)
    gguf_dir, gguf_file = resolve_ref(str(exported / "gguf-f32")), resolve_ref(str(exported / "gguf-f32" /
                                                                                   "model-f32.gguf"))
    assert gguf_dir.path == gguf_file.path and gguf_dir.kind == "gguf" and gguf_dir.path.endswith(".gguf")
    assert gguf_dir.tokenizer == str(sharp_model_dir.resolve())  # the export's source model
    with pytest.raises(LlmforgeError, match="holding 2 formats; name one"):
        resolve_ref(str(exported))
    assert [name for name, _ in expand_export_runs("x", str(exported))] == ["x/onnx", "x/gguf-f32"]
    with pytest.raises(LlmforgeError, match="runs on its own runtime, not transformers"):
        resolve_model(str(exported / "onnx"))  # PyTorch loaders refuse an export with the reason


def test_onnx_perplexity_and_answers_equal_pytorch(exported: Path, prepared: Path, pytorch_run: Path,
                                                   pytorch_eval: dict, tmp_path: Path) -> None:
    metrics = _eval(exported / "onnx", prepared, tmp_path / "onnx")
    assert metrics["runtime"] == "onnxruntime" and metrics["format"] == "onnx"
    assert metrics["tokens"] == pytorch_eval["tokens"] > 0  # the same response tokens are scored
    assert math.isclose(metrics["perplexity"], pytorch_eval["perplexity"], rel_tol=1e-4)
    assert metrics["generated_samples"] == 4
    assert pytorch_eval["runtime"] == "pytorch"
    assert _samples(tmp_path / "onnx") == _samples(pytorch_run)  # greedy answers, token for token
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert str(exported.resolve()) in [p["path"] for p in manifest["parents"]]


def test_strided_windows_through_onnx_equal_pytorch(exported: Path, sharp_model_dir: Path, prepared: Path) -> None:
    from llmforge.models.runtimes import load_runtime

    test = load_split(prepared, "test")
    torch_model, _ = load_model(ModelConfig(name_or_path=str(sharp_model_dir)))
    runtime, _ = load_runtime(resolve_ref(str(exported / "onnx")))
    expected = score(torch_model, test, window=8, stride=4)
    got = score(runtime, test, window=8, stride=4)
    assert got["tokens"] == expected["tokens"]
    assert math.isclose(got["perplexity"], expected["perplexity"], rel_tol=1e-4)


def test_gguf_f32_perplexity_equals_pytorch_through_llama_cpp(exported: Path, prepared: Path, pytorch_eval: dict,
                                                              tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python (the 'llamacpp' extra) is not installed")
    metrics = _eval(exported / "gguf-f32", prepared, tmp_path / "gguf")
    assert metrics["runtime"] == "llamacpp" and metrics["format"] == "gguf-f32"
    assert metrics["tokens"] == pytorch_eval["tokens"]
    assert math.isclose(metrics["perplexity"], pytorch_eval["perplexity"], rel_tol=1e-4)
    assert metrics["generated_samples"] == 4


def test_gguf_without_llama_cpp_names_the_extra(exported: Path, prepared: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    with pytest.raises(LlmforgeError, match=r"llmforge\[llamacpp\]"):
        _eval(exported / "gguf-f32", prepared, tmp_path / "gguf")
    assert not (tmp_path / "gguf").exists()


def test_harness_tasks_on_an_export_are_refused(exported: Path, prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(LlmforgeError, match="harness tasks run on PyTorch models"):
        _eval(exported / "onnx", prepared, tmp_path / "h", harness_tasks=["x"])


def test_tensorrt_engine_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    from llmforge.models.runtimes import load_runtime

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = tmp_path / "trt"
    (run / "tensorrt-fp16").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"kind": "export", "formats": {"tensorrt-fp16": "tensorrt-fp16"}}))
    ref = resolve_ref(str(run))
    assert (ref.kind, ref.format) == ("tensorrt", "tensorrt-fp16")
    with pytest.raises(LlmforgeError, match="no CUDA device"):
        load_runtime(ref)


def test_pytorch_runs_resolve_to_their_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Train runs (adapter, merged) and compress runs name their weights in the manifest; they run on PyTorch."""
    def run(name: str, **manifest) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps(manifest))
        return tmp_path / name

    lora = run("lora", kind="train", adapter_dir="adapter", model_dir=None, base_model=str(tiny_model_dir))
    merged = run("merged", kind="train", adapter_dir="adapter", model_dir="model", base_model=str(tiny_model_dir))
    int8 = run("int8", kind="compress", model_dir="model", method="quantize")
    adapter = resolve_ref(str(lora))
    assert (adapter.kind, adapter.runtime, adapter.path, adapter.adapter) == (
        "adapter", "pytorch", str(tiny_model_dir), lora / "adapter")
    assert (resolve_ref(str(merged)).kind, resolve_ref(str(merged)).path) == ("transformers", str(merged / "model"))
    assert resolve_ref(str(int8)).run_dir == int8 and resolve_ref(str(int8)).manifest["method"] == "quantize"


@pytest.mark.parametrize("fmt", ["onnx", "gguf-f32"])
def test_sampling_through_each_runtime_is_seeded(exported: Path, fmt: str) -> None:
    from llmforge.models.runtimes import load_runtime

    if fmt.startswith("gguf"):
        pytest.importorskip("llama_cpp", reason="llama-cpp-python (the 'llamacpp' extra) is not installed")
    runtime, _ = load_runtime(resolve_ref(str(exported / fmt)), context=64)
    prompts = [[1, 40, 41, 42], [1, 50]]

    def sample(seed: int) -> list[list[int]]:
        return runtime.generate(prompts, 8, temperature=1.0, top_p=0.9, seed=seed)

    first = sample(3)
    assert first == sample(3) and all(len(row) == 8 for row in first)  # no eos given: exactly 8 tokens
    assert runtime.generate(prompts, 8) != first  # greedy is not what sampling gave (random weights: near-uniform)


def test_bench_worker_without_llama_cpp_fails_that_variant_with_the_extra(
        exported: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from llmforge.bench import worker

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    job = {"name": "g", "model": str(exported / "gguf-f32"), "data": None, "options": {}}
    assert worker.main(["worker", json.dumps(job)]) == worker.USER_ERROR  # recorded as failed, not a crash
    assert "pip install 'llmforge[llamacpp]'" in json.loads(capsys.readouterr().out.splitlines()[-1])["error"]
