"""GGUF export of Gemma 3 (text), as llama.cpp's convert_hf_to_gguf writes it: arch gemma3, every norm + 1 (the
per-head q/k norms too), tied output, the global layers' rope base and the window in the header, no soft-caps; and
the configs llama.cpp's gemma3 graph would compute differently (it fixes the 5:1 sliding pattern and the local rope
base) refused. With llama.cpp itself: the f32 file gives transformers' logits."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")

from llmforge.errors import LlmforgeError  # noqa: E402
from llmforge.export import gguf as export  # noqa: E402
from tests.families import build_family  # noqa: E402


@pytest.fixture(scope="module")
def gemma3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_family("gemma3", tmp_path_factory.mktemp("families"))


def _copy(src: Path, dst: Path, config: dict[str, Any]) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text()) | config
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_norms_plus_one_q_k_norms_tied_output_and_header(gemma3_dir: Path, tmp_path: Path) -> None:
    import gguf
    from safetensors.torch import load_file

    reader = gguf.GGUFReader(export.export_gguf(gemma3_dir, tmp_path, outtype="f32")["path"])
    tensors = {t.name: np.array(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
    hf = {k: v.numpy() for k, v in load_file(str(gemma3_dir / "model.safetensors")).items()}
    norms = {"attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
             "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
             "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
    for gg, name in norms.items():  # Gemma3RMSNorm scales by (1 + w); llama.cpp's by w
        np.testing.assert_array_equal(tensors[f"blk.5.{gg}.weight"], hf[f"model.layers.5.{name}.weight"] + 1)
    assert tensors["blk.0.attn_q_norm.weight"].shape == (16,)  # one (head_dim,) weight for every head
    assert "output.weight" not in tensors  # tied: llama.cpp's gemma3 graph reads token_embd
    fields = {key: reader.fields[key].contents() for key in reader.fields if key.startswith("gemma3.")}
    assert fields["gemma3.attention.sliding_window"] == 256
    assert fields["gemma3.rope.freq_base"] == pytest.approx(1e6)  # the global layers'; the local 10k is llama.cpp's
    assert fields["gemma3.attention.key_length"] == fields["gemma3.attention.value_length"] == 16
    assert not any("softcapping" in key for key in fields)


@pytest.mark.parametrize(("config", "match"), [
    ({"layer_types": ["sliding_attention", "full_attention"] * 3}, "Gemma 3.*five sliding layers to one global"),
    ({"rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 1e6},
                          "full_attention": {"rope_type": "default", "rope_theta": 1e6}}}, "Gemma 3.*local rope base"),
    ({"rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                          "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}},
     "Gemma 3.*rope scaling \\(linear\\)"),
    ({"final_logit_softcapping": 30.0}, "Gemma 3.*soft-cap"),
    ({"query_pre_attn_scalar": 64}, "Gemma 3.*query_pre_attn_scalar 64.*16"),
    ({"tie_word_embeddings": False}, "Gemma 3.*untied"),
    ({"use_bidirectional_attention": True}, "Gemma 3.*bidirectional"),
])
def test_configs_llama_cpp_would_compute_differently_are_refused(gemma3_dir: Path, tmp_path: Path,
                                                                  config: dict[str, Any], match: str) -> None:
    with pytest.raises(LlmforgeError, match=match):
        export.export_gguf(_copy(gemma3_dir, tmp_path / "variant", config), tmp_path / "out", outtype="f32")


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_cpp_gives_transformers_logits(gemma3_dir: Path, tmp_path: Path) -> None:
    """Sliding layers at rope base 10k and the global one at 1M, q/k norms and the +1 shift all show in the logits:
    dropping the q/k norms moves them by ~0.5 on this model, the local rope base on the global layer by ~0.1; an f32
    KV cache leaves ~4e-4 (ggml's fp16 GELU table most of it)."""
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = export.export_gguf(gemma3_dir, tmp_path, outtype="f32")["path"]
    text = "reverse: alpha beta gamma delta, then epsilon zeta eta theta"
    ids = AutoTokenizer.from_pretrained(str(gemma3_dir))(text)["input_ids"]
    llm = Llama(model_path=path, n_ctx=128, logits_all=True, verbose=False, type_k=0, type_v=0)  # GGML_TYPE_F32
    try:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == ids
        llm.eval(ids)
        cpp = np.array(llm.scores[: len(ids)])  # (T, V)
    finally:
        llm.close()
    model = AutoModelForCausalLM.from_pretrained(str(gemma3_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids])).logits[0].numpy()  # (T, V)
    assert np.abs(cpp - ref).max() < 1e-3
    assert (cpp.argmax(-1) == ref.argmax(-1)).all()
