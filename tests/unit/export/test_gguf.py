"""GGUF export: tensors, types and metadata read back with gguf-py; rope permutation; refusals; llama.cpp parity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from llmforge.errors import LlmforgeError  # noqa: E402
from llmforge.export import gguf as export  # noqa: E402

TEXTS = [
    "",
    "hello world",
    "héllo wörld ✓ 日本語 🙂",
    "def f(x):\n    return x * 2\n",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "  multiple   spaces\n\n\ttabs and 12345 3.14 don't I'll",
    "alpha beta<s>gamma<|pad|>",
]


@pytest.fixture(scope="module")
def exported(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("gguf")
    return {t: export.export_gguf(tiny_model_dir, out / t, outtype=t) for t in ("f16", "q8_0", "q4_0")}


def _hf_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "config.json").read_text())


def _field(reader: Any, key: str) -> Any:
    return reader.fields[key].contents()


def _hf_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_tensors_names_shapes_and_types(tiny_model_dir: Path, exported: dict[str, dict[str, Any]]) -> None:
    cfg = _hf_config(tiny_model_dir)
    hidden, ffn, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * cfg["head_dim"]
    expected = {"token_embd.weight": (cfg["vocab_size"], hidden), "output_norm.weight": (hidden,)}
    for i in range(cfg["num_hidden_layers"]):
        expected |= {
            f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.ffn_norm.weight": (hidden,),
            f"blk.{i}.attn_q.weight": (hidden, hidden), f"blk.{i}.attn_k.weight": (kv, hidden),
            f"blk.{i}.attn_v.weight": (kv, hidden), f"blk.{i}.attn_output.weight": (hidden, hidden),
            f"blk.{i}.ffn_gate.weight": (ffn, hidden), f"blk.{i}.ffn_up.weight": (ffn, hidden),
            f"blk.{i}.ffn_down.weight": (hidden, ffn),
        }
    for outtype, facts in exported.items():
        reader = gguf.GGUFReader(facts["path"])
        # GGUF stores dims fastest-first: reversed from numpy/PyTorch order. Tied: no output.weight.
        got = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
        assert got == expected
        assert facts["tensors"] == len(expected)
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        main = outtype.upper()
        for name, shape in expected.items():
            want = "F32" if len(shape) == 1 else main
            if outtype == "q4_0" and name == "token_embd.weight":
                want = "Q8_0"  # tied output matrix keeps 8 bits below q8_0
            assert types[name] == want, (outtype, name)


def test_metadata(tiny_model_dir: Path, exported: dict[str, dict[str, Any]]) -> None:
    from transformers import AutoTokenizer

    cfg = _hf_config(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    reader = gguf.GGUFReader(exported["f16"]["path"])
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.context_length") == cfg["max_position_embeddings"]
    assert _field(reader, "llama.embedding_length") == cfg["hidden_size"]
    assert _field(reader, "llama.block_count") == cfg["num_hidden_layers"]
    assert _field(reader, "llama.attention.head_count") == cfg["num_attention_heads"]
    assert _field(reader, "llama.attention.head_count_kv") == cfg["num_key_value_heads"]
    assert _field(reader, "llama.rope.dimension_count") == cfg["head_dim"]
    assert _field(reader, "llama.rope.freq_base") == pytest.approx(cfg["rope_parameters"]["rope_theta"])
    assert _field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(cfg["rms_norm_eps"])
    assert _field(reader, "general.file_type") == int(gguf.LlamaFileType.MOSTLY_F16)
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "gpt-2"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == cfg["vocab_size"] == len(tok)
    assert tokens == tok.convert_ids_to_tokens(list(range(len(tok))))
    assert _field(reader, "tokenizer.ggml.bos_token_id") == tok.bos_token_id
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert _field(reader, "tokenizer.ggml.padding_token_id") == tok.pad_token_id
    assert _field(reader, "tokenizer.ggml.add_bos_token") is True  # the HF post-processor prepends <s>
    assert _field(reader, "tokenizer.ggml.add_eos_token") is False
    assert _field(reader, "tokenizer.chat_template") == tok.chat_template
    types = _field(reader, "tokenizer.ggml.token_type")
    specials = {tok.convert_tokens_to_ids(t) for t in ("<|pad|>", "<s>", "<|im_end|>", "<|im_start|>")}
    assert {i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL} == specials
    assert len(_field(reader, "tokenizer.ggml.merges")) > 0


def test_modelfile(exported: dict[str, dict[str, Any]]) -> None:
    facts = exported["q8_0"]
    text = Path(facts["modelfile"]).read_text()
    assert text.startswith("FROM ./model-q8_0.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n" in text
    assert "PARAMETER temperature" in text
    assert not [p.name for p in Path(facts["path"]).parent.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(("outtype", "atol"), [("f16", 1e-3), ("q8_0", 2e-3), ("q4_0", 2e-2)])
def test_dequantized_weights_match_hf(
    tiny_model_dir: Path, exported: dict[str, dict[str, Any]], outtype: str, atol: float
) -> None:
    cfg = _hf_config(tiny_model_dir)
    hf = _hf_weights(tiny_model_dir)
    tensors = {t.name: t for t in gguf.GGUFReader(exported[outtype]["path"]).tensors}
    pairs = {
        "blk.1.attn_q.weight": export.permute_rope(hf["model.layers.1.self_attn.q_proj.weight"].numpy(),
                                                   cfg["num_attention_heads"]),
        "blk.1.attn_k.weight": export.permute_rope(hf["model.layers.1.self_attn.k_proj.weight"].numpy(),
                                                   cfg["num_key_value_heads"]),
        "blk.0.ffn_down.weight": hf["model.layers.0.mlp.down_proj.weight"].numpy(),
        "output_norm.weight": hf["model.norm.weight"].numpy(),
    }
    for name, want in pairs.items():
        t = tensors[name]
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=name)


def _rope_hf(x: np.ndarray, pos: int, theta: float = 10000.0) -> np.ndarray:
    """HF Llama rope on (H, D): pairs (i, i + D/2)."""
    d = x.shape[-1]
    ang = pos * theta ** (-np.arange(0, d, 2) / d)  # (D/2,)
    cos, sin = np.concatenate([np.cos(ang)] * 2), np.concatenate([np.sin(ang)] * 2)
    rotated = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
    return x * cos + rotated * sin


def _rope_ggml(x: np.ndarray, pos: int, theta: float = 10000.0) -> np.ndarray:
    """GGML 'normal' rope on (H, D): adjacent pairs (2i, 2i + 1)."""
    d = x.shape[-1]
    ang = pos * theta ** (-np.arange(0, d, 2) / d)  # (D/2,)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * np.cos(ang) - odd * np.sin(ang)
    out[..., 1::2] = even * np.sin(ang) + odd * np.cos(ang)
    return out


def test_permute_rope_makes_attention_scores_equal() -> None:
    rng = np.random.default_rng(0)
    n_heads, head_dim, hidden = 4, 16, 32
    wq, wk = rng.normal(size=(n_heads * head_dim, hidden)), rng.normal(size=(n_heads * head_dim, hidden))
    h1, h2 = rng.normal(size=hidden), rng.normal(size=hidden)
    q_hf = _rope_hf((wq @ h1).reshape(n_heads, head_dim), pos=5)  # (H, D)
    k_hf = _rope_hf((wk @ h2).reshape(n_heads, head_dim), pos=2)
    q_gg = _rope_ggml((export.permute_rope(wq, n_heads) @ h1).reshape(n_heads, head_dim), pos=5)
    k_gg = _rope_ggml((export.permute_rope(wk, n_heads) @ h2).reshape(n_heads, head_dim), pos=2)
    np.testing.assert_allclose((q_hf * k_hf).sum(-1), (q_gg * k_gg).sum(-1), rtol=1e-10, atol=1e-10)


def test_adapter_dir_refused(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text('{"base_model_name_or_path": "demo"}')
    with pytest.raises(LlmforgeError, match="llmforge merge"):
        export.export_gguf(tmp_path, tmp_path / "out")


def test_other_architecture_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "falconish"
    shutil.copytree(tiny_model_dir, model)
    cfg = _hf_config(model) | {"architectures": ["FalconForCausalLM"], "model_type": "falcon"}
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LlmforgeError, match="LlamaForCausalLM"):
        export.export_gguf(model, tmp_path / "out")


def test_unknown_outtype_names_allowed_and_kquant_route(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LlmforgeError, match="llama-quantize") as info:
        export.export_gguf(tiny_model_dir, tmp_path, outtype="q4_k_m")
    assert "q8_0" in str(info.value) and "q4_0" in str(info.value)
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_no_file(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> np.ndarray:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(export, "_load_tensor", boom)
    with pytest.raises(RuntimeError):
        export.export_gguf(tiny_model_dir, tmp_path, outtype="f16")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------ llama.cpp


def _llama(llama_cpp: Any, path: str, f32_kv: bool = False) -> Any:
    # llama.cpp keeps its KV cache in f16 by default (~1e-2 on logits); f32 isolates the conversion itself.
    kv = {"type_k": 0, "type_v": 0} if f32_kv else {}  # 0 = GGML_TYPE_F32
    return llama_cpp.Llama(path, n_ctx=512, n_threads=1, logits_all=True, verbose=False, **kv)


@pytest.mark.slow
def test_llama_cpp_tokenization_matches_hf(tiny_model_dir: Path, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    from llmforge.models.reference import DEMO_DIR

    for model_dir in (tiny_model_dir, DEMO_DIR):  # 512-token test vocab and the trained 8k demo vocab
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        llm = _llama(llama_cpp, export.export_gguf(model_dir, tmp_path / model_dir.name, outtype="f16")["path"])
        for text in TEXTS:  # specials parsed as single tokens, as HF does
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text)["input_ids"], text
        chat = tok.apply_chat_template([{"role": "user", "content": "hi there"}], tokenize=False,
                                       add_generation_prompt=True)
        want = tok(chat, add_special_tokens=False)["input_ids"]  # the template writes <s> itself
        assert llm.tokenize(chat.encode(), add_bos=False, special=True) == want
        llm.close()


@pytest.mark.slow
@pytest.mark.parametrize("which", ["tiny", "demo"])
@pytest.mark.parametrize(("outtype", "atol"), [("f32", 1e-3), ("f16", 5e-2)])
def test_llama_cpp_logits_and_greedy_match_pytorch(
    tiny_model_dir: Path, tmp_path: Path, which: str, outtype: str, atol: float
) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmforge.models.reference import DEMO_DIR

    model_dir = tiny_model_dir if which == "tiny" else DEMO_DIR
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    llm = _llama(llama_cpp, export.export_gguf(model_dir, tmp_path, outtype=outtype)["path"], outtype == "f32")
    prompt = tok("import os\n\ndef read_config(path):\n    ")["input_ids"]
    with torch.no_grad():
        hf_logits = model(torch.tensor([prompt])).logits[0].numpy()  # (T, V)
        hf_new = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)[0, len(prompt):].tolist()
    llm.eval(prompt)
    assert np.abs(np.asarray(llm.scores[: len(prompt)]) - hf_logits).max() < atol
    cpp_new: list[int] = []
    for _ in range(len(hf_new)):  # greedy decode, stopping where HF stopped (eos or 16 tokens)
        cpp_new.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([cpp_new[-1]])
    llm.close()
    assert cpp_new == hf_new
