"""Families x stages: every cell of the README's table (`llmforge.models.families`), run through the real CLI with
no extra flags on a user's own directory of each family (its tokenizer kind and chat template in
tokenizer_config.json). A supported cell must work and keep the model's behaviour; a refused cell must refuse
with the reason the table gives.

Each family's stages run once (module scope) in order; a cell reads the outcome of its stage.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from llmforge.models.families import BY_KEY, STAGES
from tests.families import FAMILIES, build_family
from tests.helpers import write_jsonl
from tests.integration.test_cli import cli

PROMPT = "reverse: alpha beta gamma delta"
END_OF_TURN = {"llama3": "<|eot_id|>", "qwen2": "<|im_end|>", "mistral": "</s>", "gemma2": "<end_of_turn>",
               "gemma3": "<end_of_turn>", "phi3": "<|end|>", "gpt2": "<|endoftext|>"}
REGISTRY_KEY = {"llama3": "llama", "qwen2": "qwen2", "mistral": "mistral", "gemma2": "gemma2", "gemma3": "gemma3",
                "phi3": "phi3", "gpt2": "gpt2"}


def _chats(n: int = 60) -> list[dict]:
    """Reverse-the-words chats; a third open with a system message (folded where the template has no system role)."""
    rng, words = random.Random(0), "alpha beta gamma delta epsilon zeta eta theta".split()
    out = []
    for i in range(n):
        q = [rng.choice(words) for _ in range(4)]
        system = [{"role": "system", "content": "be brief"}] if i % 3 == 0 else []
        out.append({"messages": [*system, {"role": "user", "content": "reverse: " + " ".join(q)},
                                 {"role": "assistant", "content": " ".join(reversed(q))}]})
    return out


@dataclass
class Lifecycle:
    """One family's directory taken through the CLI; each stage's outcome kept (a CLI failure as its output)."""

    family: str
    root: Path
    model: Path
    outcomes: dict[str, subprocess.CompletedProcess[str] | None] = field(default_factory=dict)

    def run(self, stage: str, *args: str) -> subprocess.CompletedProcess[str]:
        if stage not in self.outcomes:
            self.outcomes[stage] = cli(*args, cwd=self.root, check=False)
        return self.outcomes[stage]

    def ok(self, stage: str, *args: str) -> None:
        result = self.run(stage, *args)
        assert result.returncode == 0, f"{self.family} {stage}: {result.stderr[-3000:]}"

    def needs(self, stage: str) -> None:
        steps = {"prepare": self.prepare, "train-lora": self.train_lora}
        steps[stage]()
        if self.outcomes[stage].returncode != 0:
            pytest.skip(f"{stage} failed for {self.family}; that cell reports it")

    def prepare(self) -> subprocess.CompletedProcess[str]:
        return self.run("prepare", "prepare", "--data", "chats.jsonl", "--model", str(self.model), "--output", "prep")

    def train_lora(self) -> subprocess.CompletedProcess[str]:
        self.needs("prepare")
        return self.run("train-lora", "train", "--model", str(self.model), "--data", "prep", "--output", "lora",
                        "--max-steps", "4", "--set", "train.merge=true", "--set", "train.learning_rate=0.01")


_LIFECYCLES: dict[str, Lifecycle] = {}


@pytest.fixture
def life(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Lifecycle:
    family = request.node.callspec.params["family"]
    if family not in _LIFECYCLES:
        root = tmp_path_factory.mktemp(family)
        write_jsonl(root / "chats.jsonl", _chats())
        _LIFECYCLES[family] = Lifecycle(family, root, build_family(family, root))
    return _LIFECYCLES[family]


def _logits(model_dir: Path | str, ids: torch.Tensor, adapter: Path | None = None) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits  # (1, T, V)


def _ids(model_dir: Path) -> torch.Tensor:
    from transformers import AutoTokenizer

    return torch.tensor([AutoTokenizer.from_pretrained(str(model_dir))(PROMPT)["input_ids"]])  # (1, T)


# ------------------------------------------------------------------------------------------------ the cells


def cell_prepare(life: Lifecycle) -> None:
    """Prepared with the family's own template; trained tokens are exactly the replies + the end-of-turn token."""
    from transformers import AutoTokenizer

    from llmforge.data.splits import load_split

    life.ok("prepare", "prepare", "--data", "chats.jsonl", "--model", str(life.model), "--output", "prep")
    tok = AutoTokenizer.from_pretrained(str(life.model))
    report = json.loads((life.root / "prep" / "metrics.json").read_text())
    assert report["records_read"] == 60 and report["records_kept"] >= 55, report  # duplicates dropped, nothing else
    assert set(report["dropped"]) <= {"duplicate"}, report["dropped"]
    # Gemma 2's template and DialoGPT's turns have no system role: its 20 system messages are folded (Gemma 3's
    # template folds them itself)
    assert report["system_folded"] == (20 if life.family in ("gemma2", "gpt2") else 0)
    rows = load_split(life.root / "prep", "train")
    for row in list(rows)[:10]:
        trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
        text = tok.decode(trained)
        assert text.endswith(END_OF_TURN[life.family]), (life.family, text)
        words = text[: -len(END_OF_TURN[life.family])].strip().split()
        assert len(words) == 4 and set(words) <= set("alpha beta gamma delta epsilon zeta eta theta".split())


def cell_train_lora(life: Lifecycle) -> None:
    """all-linear LoRA trains; the merged model gives the adapter's logits, which differ from the base's."""
    life.needs("train-lora")
    manifest = json.loads((life.root / "lora" / "manifest.json").read_text())
    assert manifest["adapter_dir"] == "adapter" and manifest["model_dir"] == "model"
    ids = _ids(life.model)
    merged = _logits(life.root / "lora" / "model", ids)
    adapter = _logits(life.model, ids, adapter=life.root / "lora" / "adapter")
    base = _logits(life.model, ids)
    assert (merged - adapter).abs().max() < 1e-4
    assert (adapter - base).abs().max() > 1e-3  # the adapter learned something, so the equality means something


def cell_train_full(life: Lifecycle) -> None:
    life.needs("prepare")
    life.ok("train-full", "train", "--model", str(life.model), "--data", "prep", "--output", "full", "--method",
            "full", "--max-steps", "2")
    ids = _ids(life.model)
    assert (_logits(life.root / "full" / "model", ids) - _logits(life.model, ids)).abs().max() > 1e-4


def cell_int8(life: Lifecycle) -> None:
    life.needs("train-lora")
    life.ok("int8", "compress", "--model", "lora", "--data", "prep", "--method", "quantize", "--scheme",
            "int8-dynamic", "--output", "int8")
    metrics = json.loads((life.root / "int8" / "metrics.json").read_text())
    assert metrics["passed"] and metrics["top1_agreement"] >= 0.9, metrics  # measured against its parent
    assert metrics["size_ratio"] < 0.5, metrics  # the family's projections are int8 (Conv1D and fused ones too)


def cell_prune(life: Lifecycle) -> None:
    from transformers import AutoModelForCausalLM

    life.needs("train-lora")
    life.ok("prune", "compress", "--model", "lora", "--data", "prep", "--method", "prune", "--prune", "structured",
            "--sparsity", "0.25", "--recovery", "none", "--output", "prune")
    manifest = json.loads((life.root / "prune" / "manifest.json").read_text())
    pruned = life.root / "prune" / manifest.get("model_dir") or "model"
    model = AutoModelForCausalLM.from_pretrained(str(pruned))
    parent = AutoModelForCausalLM.from_pretrained(str(life.root / "lora" / "model"))
    assert model.num_parameters() < parent.num_parameters()


def cell_onnx(life: Lifecycle) -> None:
    life.needs("train-lora")
    life.ok("onnx", "export", "--model", "lora", "--data", "prep", "-f", "onnx", "--output", "export-onnx")
    result = json.loads((life.root / "export-onnx" / "metrics.json").read_text())["formats"]["onnx"]
    assert result["passed"] and result["greedy_identical"] and result["max_abs_logits_diff"] <= 1e-3, result


def cell_gguf(life: Lifecycle) -> None:
    life.needs("train-lora")
    life.ok("gguf", "export", "--model", "lora", "--data", "prep", "-f", "gguf-f16", "--output", "export-gguf")
    result = json.loads((life.root / "export-gguf" / "metrics.json").read_text())["formats"]["gguf-f16"]
    has_llama_cpp = importlib.util.find_spec("llama_cpp") is not None  # `make test-integration` builds it
    assert result["passed"] is (True if has_llama_cpp else None), result  # None: not checked, no llama.cpp


def cell_serve(life: Lifecycle) -> None:
    """The trained model and its ONNX export answer alike, rendered with the family's template, streamed or not,
    and stop at the family's end-of-turn token."""
    from transformers import AutoTokenizer

    from llmforge.serve.backends.base import eos_ids, generation_config
    from llmforge.serve.check import serve_check

    life.needs("train-lora")
    model = life.root / "lora" / "model"
    end_of_turn = AutoTokenizer.from_pretrained(str(model)).convert_tokens_to_ids(END_OF_TURN[life.family])
    assert end_of_turn in eos_ids(AutoTokenizer.from_pretrained(str(model)), generation_config(model))
    trained = serve_check(life.root / "lora", PROMPT, max_tokens=8, requests=1, reply_tokens=48)
    assert trained["clean_shutdown"]
    assert trained["streamed_reply"] == trained["reply"]
    assert trained["streamed_finish_reason"] == trained["finish_reason"]
    if (life.root / "export-onnx" / "onnx").is_dir():
        exported = serve_check(life.root / "export-onnx" / "onnx", PROMPT, max_tokens=8, requests=1,
                               reply_tokens=48)
        assert exported["reply"] == trained["reply"] == exported["streamed_reply"]
        assert exported["usage"]["prompt_tokens"] == trained["usage"]["prompt_tokens"]
        assert exported["finish_reason"] == trained["finish_reason"]


CELLS: dict[str, Callable[[Lifecycle], None]] = {
    "prepare": cell_prepare, "train-lora": cell_train_lora, "train-full": cell_train_full, "int8": cell_int8,
    "prune": cell_prune, "onnx": cell_onnx, "gguf": cell_gguf, "serve": cell_serve,
}
assert set(CELLS) == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("family", FAMILIES)
def test_family_stage(family: str, stage: str, life: Lifecycle) -> None:
    registry = BY_KEY[REGISTRY_KEY[family]]
    if registry.supports(stage):
        CELLS[stage](life)
        return
    with pytest.raises(AssertionError) as refused:
        CELLS[stage](life)
    assert registry.refused[stage] in str(refused.value), str(refused.value)[-2000:]


def test_every_family_is_in_the_registry(tmp_path: Path) -> None:
    from llmforge.models.families import family_of_dir

    assert set(REGISTRY_KEY.values()) == set(BY_KEY)
    for family in FAMILIES:
        assert family_of_dir(build_family(family, tmp_path)) is BY_KEY[REGISTRY_KEY[family]]
