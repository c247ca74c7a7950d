"""GGUF export of the Llama 3, Qwen2, Mistral, Gemma 2, Phi-3 and GPT-2 families, written as llama.cpp's own
converter writes them: the arch, the tokenizer model and pre-tokenizer name, special and end-of-turn ids, each
family's tensor layout (rope rows permuted only for llama, Qwen2's biases, Gemma's norms + 1, Phi-3's fused
tensors, GPT-2's transposed Conv1D and learned positions), refusals naming family and stage; and, with llama.cpp
itself (slow tier), identical tokenization, logits and greedy decoding."""

from __future__ import annotations

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
from llmforge.export.parity import MULTILINGUAL_TEXTS  # noqa: E402
from tests.families import build_family  # noqa: E402

FAMILIES = ("llama3", "qwen2", "mistral", "gemma2", "phi3", "gpt2")  # the families GGUF export writes

EXPECTED = {"llama3": ("llama", "gpt2", "llama-bpe"), "qwen2": ("qwen2", "gpt2", "qwen2"),
            "mistral": ("llama", "llama", None), "gemma2": ("gemma2", "llama", None),
            "phi3": ("phi3", "llama", None), "gpt2": ("gpt2", "gpt2", "gpt-2"),
            }  # (arch, tokenizer.ggml.model, tokenizer.ggml.pre)
# tokenizer_config's bos, eos, unk, pad and the end-of-turn token where it is not eos (None: not written)
SPECIALS = {
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", None, "<|end_of_text|>", None),
    "qwen2": (None, "<|im_end|>", None, "<|endoftext|>", None),
    "mistral": ("<s>", "</s>", "<unk>", None, None),
    "gemma2": ("<bos>", "<eos>", "<unk>", "<pad>", "<end_of_turn>"),
    "phi3": ("<s>", "<|endoftext|>", "<unk>", "<|endoftext|>", "<|end|>"),
    "gpt2": ("<|endoftext|>", "<|endoftext|>", "<|endoftext|>", None, None),
}
TEXTS = [
    "",
    "héllo wörld ✓ 日本語 🙂",
    "x = [1, 22, 333, 4444]\n\n\tif y:\n  return 12345",
    "  leading and  double  spaces, don't I'll",
    "alpha beta<|eot_id|>gamma<|im_end|>delta</s>",
    " x",
    "a<start_of_turn>user\nhi<end_of_turn>\n<|user|>\n hey <|end|>\n\n<|endoftext|> z",
    *MULTILINGUAL_TEXTS,
]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: build_family(name, root) for name in FAMILIES}


def _reader(path: str) -> Any:
    import gguf

    return gguf.GGUFReader(path)


def _field(reader: Any, key: str) -> Any:
    return reader.fields[key].contents()


def _hf(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    return {k: v.numpy() for k, v in load_file(str(model_dir / "model.safetensors")).items()}


def _tensors(reader: Any) -> dict[str, np.ndarray]:
    """GGUF tensors in numpy/PyTorch order (GGUF lists dims fastest-first)."""
    return {t.name: np.array(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}


def _copy(src: Path, dst: Path, config: dict[str, Any] | None = None) -> Path:
    shutil.copytree(src, dst)
    if config is not None:
        cfg = json.loads((dst / "config.json").read_text()) | config
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("family", FAMILIES)
def test_arch_tokenizer_model_and_pre(family: str, family_dirs: dict[str, Path], tmp_path: Path) -> None:
    import gguf

    reader = _reader(export.export_gguf(family_dirs[family], tmp_path, outtype="f32")["path"])
    arch, tokenizer_model, pre = EXPECTED[family]
    assert _field(reader, "general.architecture") == arch
    assert _field(reader, "tokenizer.ggml.model") == tokenizer_model
    if pre is None:  # SentencePiece: scores rank the merges, byte tokens are BYTE, `▁` prefix as the normalizer says
        tokens, types = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.token_type")
        scores = _field(reader, "tokenizer.ggml.scores")
        assert "tokenizer.ggml.pre" not in reader.fields and "tokenizer.ggml.merges" not in reader.fields
        assert types[tokens.index("<0x41>")] == gguf.TokenType.BYTE
        assert _field(reader, "tokenizer.ggml.add_space_prefix") is (family != "gemma2")  # Gemma: no dummy prefix
        normal = [i for i, t in enumerate(types) if t == gguf.TokenType.NORMAL]
        assert all(scores[a] > scores[b] for a, b in zip(normal, normal[1:]))  # earlier merges first
    else:
        assert _field(reader, "tokenizer.ggml.pre") == pre and len(_field(reader, "tokenizer.ggml.merges")) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_special_ids_types_and_end_of_turn(family: str, family_dirs: dict[str, Path], tmp_path: Path) -> None:
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(family_dirs[family]))
    reader = _reader(export.export_gguf(family_dirs[family], tmp_path, outtype="f32")["path"])
    keys = ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id", "eot_token_id")
    for key, token in zip(keys, SPECIALS[family]):
        want = None if token is None else tok.convert_tokens_to_ids(token)
        assert (_field(reader, f"tokenizer.ggml.{key}") if f"tokenizer.ggml.{key}" in reader.fields else None) == want
    assert _field(reader, "tokenizer.ggml.add_bos_token") is (tok("a")["input_ids"][0] == tok.bos_token_id)
    types = _field(reader, "tokenizer.ggml.token_type")
    added = {i for i, t in tok.added_tokens_decoder.items() if t.special}
    assert {i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL} == added  # parsed whole, not rendered
    if tok.chat_template is None:  # GPT-2: the GGUF carries no template either
        assert "tokenizer.chat_template" not in reader.fields
    else:
        assert _field(reader, "tokenizer.chat_template") == tok.chat_template


@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral"])
def test_rope_rows_permuted_only_for_llama_and_qwen2_biases(family: str, family_dirs: dict[str, Path],
                                                            tmp_path: Path) -> None:
    model_dir = family_dirs[family]
    tensors = _tensors(_reader(export.export_gguf(model_dir, tmp_path, outtype="f32")["path"]))
    hf = _hf(model_dir)
    q_hf = hf["model.layers.0.self_attn.q_proj.weight"]
    heads = json.loads((model_dir / "config.json").read_text())["num_attention_heads"]
    if family == "qwen2":  # NEOX rope reads HF's rows as they are; the biases are written
        np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"], q_hf)
        for proj in ("q", "k", "v"):
            np.testing.assert_array_equal(tensors[f"blk.0.attn_{proj}.bias"],
                                          hf[f"model.layers.0.self_attn.{proj}_proj.bias"])
    else:  # llama's rope NORM: rows interleaved per head
        np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"], export.permute_rope(q_hf, heads))
        assert not any(name.endswith(".bias") for name in tensors)


def test_gemma2_norms_plus_one_softcaps_window_and_tied_output(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    model_dir = family_dirs["gemma2"]
    cfg = json.loads((model_dir / "config.json").read_text())
    reader = _reader(export.export_gguf(model_dir, tmp_path, outtype="f32")["path"])
    tensors, hf = _tensors(reader), _hf(model_dir)
    norms = {"attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
             "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}
    for gg, name in norms.items():  # Gemma's RMSNorm scales by (1 + w); llama.cpp's by w
        np.testing.assert_array_equal(tensors[f"blk.1.{gg}.weight"], hf[f"model.layers.1.{name}.weight"] + 1)
    np.testing.assert_array_equal(tensors["output_norm.weight"], hf["model.norm.weight"] + 1)
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"], hf["model.layers.0.self_attn.q_proj.weight"])
    assert "output.weight" not in tensors  # tied: llama.cpp's gemma2 graph reads token_embd
    assert _field(reader, "gemma2.attn_logit_softcapping") == pytest.approx(cfg["attn_logit_softcapping"])
    assert _field(reader, "gemma2.final_logit_softcapping") == pytest.approx(cfg["final_logit_softcapping"])
    assert _field(reader, "gemma2.attention.sliding_window") == cfg["sliding_window"]
    assert _field(reader, "gemma2.attention.key_length") == _field(reader, "gemma2.attention.value_length") == 16


def test_phi3_fused_qkv_and_gate_up(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    model_dir = family_dirs["phi3"]
    reader = _reader(export.export_gguf(model_dir, tmp_path, outtype="f32")["path"])
    tensors, hf = _tensors(reader), _hf(model_dir)
    np.testing.assert_array_equal(tensors["blk.0.attn_qkv.weight"], hf["model.layers.0.self_attn.qkv_proj.weight"])
    up = tensors["blk.0.ffn_up.weight"]  # (2 * ffn, hidden): gate rows then up rows, split by llama.cpp's swiglu
    np.testing.assert_array_equal(up, hf["model.layers.0.mlp.gate_up_proj.weight"])
    assert up.shape[0] == 2 * _field(reader, "phi3.feed_forward_length")
    assert not any(name.startswith("blk.0.attn_q.") or name.startswith("blk.0.ffn_gate") for name in tensors)
    assert _field(reader, "phi3.rope.dimension_count") == 16  # partial_rotary_factor 1.0 x head_dim
    assert _field(reader, "phi3.rope.scaling.original_context_length") == 1024


def test_gpt2_conv1d_transposed_positions_and_layer_norm(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    model_dir = family_dirs["gpt2"]
    reader = _reader(export.export_gguf(model_dir, tmp_path, outtype="q8_0")["path"])
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["position_embd.weight"] == "F32" and types["blk.0.attn_qkv.weight"] == "Q8_0"  # as the converter
    tensors, hf = _tensors(_reader(export.export_gguf(model_dir, tmp_path / "f32", outtype="f32")["path"])), _hf(model_dir)
    np.testing.assert_array_equal(tensors["position_embd.weight"], hf["transformer.wpe.weight"])  # (n_positions, C)
    np.testing.assert_array_equal(tensors["blk.0.attn_qkv.weight"], hf["transformer.h.0.attn.c_attn.weight"].T)
    np.testing.assert_array_equal(tensors["blk.1.ffn_down.weight"], hf["transformer.h.1.mlp.c_proj.weight"].T)
    np.testing.assert_array_equal(tensors["blk.0.attn_qkv.bias"], hf["transformer.h.0.attn.c_attn.bias"])
    np.testing.assert_array_equal(tensors["output_norm.bias"], hf["transformer.ln_f.bias"])
    assert "output.weight" not in tensors and "gpt2.attention.head_count_kv" not in reader.fields
    assert _field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert _field(reader, "gpt2.context_length") == hf["transformer.wpe.weight"].shape[0]


@pytest.mark.parametrize(("family", "config", "match"), [
    ("gemma2", {"query_pre_attn_scalar": 64}, "Gemma 2.*query_pre_attn_scalar 64.*16"),
    ("gemma2", {"final_logit_softcapping": None}, "Gemma 2.*soft-caps"),
    ("gemma2", {"tie_word_embeddings": False}, "Gemma 2.*untied"),
    ("phi3", {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, "long_factor": [1.0] * 8,
                                  "short_factor": [1.0] * 8}}, "Phi-3.*longrope"),
    ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "GPT-2.*attention scaling"),
    ("qwen2", {"use_sliding_window": True}, "Qwen2.*sliding-window"),
])
def test_variants_llama_cpp_would_compute_differently_are_refused(
        family: str, config: dict[str, Any], match: str, family_dirs: dict[str, Path], tmp_path: Path) -> None:
    model_dir = _copy(family_dirs[family], tmp_path / "variant", config)
    with pytest.raises(LlmforgeError, match=match) as info:
        export.export_gguf(model_dir, tmp_path / "out")
    assert str(info.value).startswith("GGUF export of ") and ("convert_hf_to_gguf" in str(info.value)
                                                              or "ONNX" in str(info.value))
    assert not (tmp_path / "out").exists()


def test_sentencepiece_style_tokenizer_refused_with_the_converter_named(family_dirs: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    model_dir = _copy(family_dirs["llama3"], tmp_path / "spm")
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok["model"]["byte_fallback"] = True
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(LlmforgeError, match="Llama models.*byte fallback.*convert_hf_to_gguf"):
        export.export_gguf(model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.gguf"))


def test_an_unknown_split_regex_is_refused(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    model_dir = _copy(family_dirs["qwen2"], tmp_path / "odd")
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(LlmforgeError, match="GPT-2, Llama 3 or Qwen2 pre-tokenizer"):
        export.export_gguf(model_dir, tmp_path / "out")


def _phi3_rstrip(family_dirs: dict[str, Path], dst: Path) -> Path:
    """The tiny Phi-3 with the real tokenizer.json's strips: its specials (and </s>) eat the whitespace after them,
    except <unk>, <s>, <|endoftext|>."""
    model_dir = _copy(family_dirs["phi3"], dst)
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    for added in tok["added_tokens"]:
        added["rstrip"] = added["content"] not in ("<unk>", "<s>", "<|endoftext|>")
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))
    return model_dir


def test_general_name_makes_llama_cpp_strip_after_specials_exactly_when_the_tokenizer_does(
        family_dirs: dict[str, Path], tmp_path: Path) -> None:
    # llama.cpp strips whitespace after special tokens iff general.name contains phi-3/phi3; the tiny Phi-3 does not
    assert _field(_reader(export.export_gguf(family_dirs["phi3"], tmp_path / "a")["path"]), "general.name") == "phi 3"
    stripping = _phi3_rstrip(family_dirs, tmp_path / "chat-mini")
    assert "phi-3" in _field(_reader(export.export_gguf(stripping, tmp_path / "b")["path"]), "general.name")
    tok = json.loads((stripping / "tokenizer.json").read_text())
    tok["added_tokens"][0]["rstrip"] = True  # <unk> too: no rule of llama.cpp's strips that set
    (stripping / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(LlmforgeError, match="Phi-3 models.*rstrip"):
        export.export_gguf(stripping, tmp_path / "c")


def _tokenizes_as_hf(llm: Any, tok: Any, texts: list[str]) -> None:
    adds_bos = tok.bos_token_id is not None  # llama.cpp adds it only where the GGUF says add_bos_token
    for text in texts:  # specials parsed as single tokens, as HF does
        assert llm.tokenize(text.encode(), add_bos=adds_bos, special=True) == tok(text)["input_ids"], text
    if tok.chat_template is None:
        return  # GPT-2: no chat template to render
    chat = tok.apply_chat_template([{"role": "user", "content": "hi there 42"}], tokenize=False,
                                   add_generation_prompt=True)
    assert llm.tokenize(chat.encode(), add_bos=False, special=True) == tok(chat, add_special_tokens=False)["input_ids"]


def _scores_and_decodes_as_hf(llm: Any, model_dir: Path, tok: Any, text: str) -> None:
    """f32 logits within 1e-3 of transformers' on `text`, then greedy decoding token for token."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    prompt = tok(text)["input_ids"]
    with torch.no_grad():
        hf_logits = model(torch.tensor([prompt])).logits[0].numpy()  # (T, V)
        hf_new = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    llm.eval(prompt)
    assert np.abs(np.asarray(llm.scores[: len(prompt)]) - hf_logits).max() < 1e-3
    cpp_new: list[int] = []
    for _ in range(len(hf_new)):  # greedy, stopping where HF stopped
        cpp_new.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([cpp_new[-1]])
    assert cpp_new == hf_new


def _llama(llama_cpp: Any, path: str) -> Any:
    # f32 KV cache: llama.cpp's default f16 cache alone moves logits by ~1e-2; this isolates the conversion
    return llama_cpp.Llama(path, n_ctx=256, n_threads=1, logits_all=True, verbose=False, type_k=0, type_v=0)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_tokenizes_scores_and_decodes_as_transformers(family: str, family_dirs: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    model_dir = family_dirs[family]
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    llm = _llama(llama_cpp, export.export_gguf(model_dir, tmp_path, outtype="f32")["path"])
    _tokenizes_as_hf(llm, tok, TEXTS)
    _scores_and_decodes_as_hf(llm, model_dir, tok, "alpha beta gamma 123 delta")
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    for token in {tok.eos_token, SPECIALS[family][4]} - {None}:  # generation ends at eos and at the end of a turn
        assert llama_cpp.llama_vocab_is_eog(vocab, tok.convert_tokens_to_ids(token)), token
    llm.close()


@pytest.mark.slow
def test_llama_cpp_gemma2_sliding_window_as_transformers(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    model_dir = _copy(family_dirs["gemma2"], tmp_path / "window", {"sliding_window": 4})  # shorter than the prompt
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    llm = _llama(llama_cpp, export.export_gguf(model_dir, tmp_path / "out", outtype="f32")["path"])
    _scores_and_decodes_as_hf(llm, model_dir, tok, "alpha beta gamma 123 delta epsilon zeta")
    llm.close()


@pytest.mark.slow
def test_llama_cpp_strips_after_phi3_specials_as_its_tokenizer_json_says(family_dirs: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    model_dir = _phi3_rstrip(family_dirs, tmp_path / "chat-mini")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    llm = llama_cpp.Llama(export.export_gguf(model_dir, tmp_path / "out", outtype="f32")["path"], n_ctx=64,
                          verbose=False)
    assert tok("<|user|>\n hi")["input_ids"] == tok("<|user|>hi")["input_ids"]  # HF strips: so must llama.cpp
    _tokenizes_as_hf(llm, tok, TEXTS)
    llm.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_modelfile_template_default_system_prompt_and_stops(family: str, family_dirs: dict[str, Path],
                                                            tmp_path: Path) -> None:
    text = Path(export.export_gguf(family_dirs[family], tmp_path, outtype="f16")["modelfile"]).read_text()
    if family == "qwen2":  # its template adds a system turn to every conversation without one: Ollama's SYSTEM
        assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>" in text
        assert 'SYSTEM """You are a helpful assistant."""' in text and 'PARAMETER stop "<|im_end|>"' in text
    elif family == "mistral":  # Ollama uses the template stored in the GGUF; eos ends a turn
        assert "TEMPLATE" not in text.replace("# no TEMPLATE", "") and 'PARAMETER stop "</s>"' in text
    elif family == "gemma2":  # the assistant is "model"; turns end with <end_of_turn>, eos ends the text
        assert '<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}user{{ end }}\n{{ .Content }}' in text
        assert text.count("<start_of_turn>model\n") == 1 and "SYSTEM" not in text
        assert 'PARAMETER stop "<eos>"' in text and 'PARAMETER stop "<end_of_turn>"' in text
    elif family == "phi3":
        assert "<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n" in text and "SYSTEM" not in text
        assert 'PARAMETER stop "<|endoftext|>"' in text and 'PARAMETER stop "<|end|>"' in text
    elif family == "gpt2":  # no chat template: DialoGPT's turns, each followed by eos
        assert 'TEMPLATE """{{- range .Messages }}{{ .Content }}<|endoftext|>{{ end }}"""' in text
        assert text.count("PARAMETER stop") == 1 and 'PARAMETER stop "<|endoftext|>"' in text
    else:
        assert "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>" in text
        assert "SYSTEM" not in text and 'PARAMETER stop "<|eot_id|>"' in text


def test_dialogpt_template_gets_the_eos_separated_modelfile(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    # a GPT-2 trained with llmforge carries the named `dialogpt` template (each turn followed by eos)
    model_dir = _copy(family_dirs["gpt2"], tmp_path / "dialogpt")
    (model_dir / "chat_template.jinja").write_text("{% for message in messages %}{{ message['content'] + eos_token }}"
                                                   "{% endfor %}")
    text = Path(export.export_gguf(model_dir, tmp_path / "out", outtype="f16")["modelfile"]).read_text()
    assert 'TEMPLATE """{{- range .Messages }}{{ .Content }}<|endoftext|>{{ end }}"""' in text


# ------------------------------------------------------------------ Mistral v0.3: Metaspace, prepend_scheme "first"
V03_CONTENTS = [*TEXTS, "[INST] inner [/INST] and </s> too", "  two leading", "trailing  ", "a\n\n b \t c",
                "multiple   inner    spaces", "\n", " ", "▁already", "Größe ĳ 🙂 日本語のテキスト"]


@pytest.fixture(scope="module")
def v03_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_family("mistral-v03", tmp_path_factory.mktemp("v03"))


def _v03_chats(tok: Any) -> list[str]:
    """Each content as a user turn, and as both turns of a two-round conversation: what runtimes render."""
    chats = []
    for content in V03_CONTENTS:
        one = [{"role": "user", "content": content}]
        two = [*one, {"role": "assistant", "content": content or "ok"}, {"role": "user", "content": " x " + content}]
        chats += [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in (one, two)]
    return chats


def test_mistral_v03_written_without_the_prefix_for_chat_prompts(v03_dir: Path, family_dirs: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    facts = export.export_gguf(v03_dir, tmp_path, outtype="f32")
    reader = _reader(facts["path"])
    assert _field(reader, "tokenizer.ggml.model") == "llama" and "tokenizer.ggml.pre" not in reader.fields
    # `▁` after no special token (HF's Metaspace "first"), not after each (llama.cpp's default, the converter's)
    assert _field(reader, "tokenizer.ggml.add_space_prefix") is False
    assert "tokenizer.ggml.eot_token_id" not in reader.fields  # `[/INST]` ends a user turn, not the assistant's
    assert facts["chat_prompts_only"] is True
    assert export.export_gguf(family_dirs["mistral"], tmp_path / "v01", outtype="f32")["chat_prompts_only"] is False


def test_llama_cpp_tokenizes_mistral_v03_chat_prompts_as_hf(v03_dir: Path, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(v03_dir))
    llm = llama_cpp.Llama(export.export_gguf(v03_dir, tmp_path, outtype="f32")["path"], vocab_only=True,
                          verbose=False)
    for chat in _v03_chats(tok):  # the template writes <s> itself
        assert llm.tokenize(chat.encode(), add_bos=False, special=True) == tok(chat, add_special_tokens=False)[
            "input_ids"], chat
    specials = ("<s>", "</s>", "[INST]", "[/INST]")
    for text in [t for t in V03_CONTENTS if t.startswith((" ", "▁", *specials))]:  # not "\n": HF puts `▁` there
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text)["input_ids"], text
    # The divergence left: plain text that begins with a word has HF's `▁` before it, llama.cpp's not
    hf, cpp = tok("Hello")["input_ids"], llm.tokenize(b"Hello", add_bos=True, special=True)
    assert tok.convert_ids_to_tokens(hf)[1].startswith("▁") and hf[1:] != cpp[1:] and hf[0] == cpp[0]
    llm.close()


@pytest.mark.parametrize(("template", "match"), [
    ("{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}", "begins with text: 'User: '"),
    (None, "no chat template"),
])
def test_mistral_v03_refused_where_chat_prompts_begin_with_text(template: str | None, match: str, v03_dir: Path,
                                                                tmp_path: Path) -> None:
    model_dir = _copy(v03_dir, tmp_path / "v03")
    (model_dir / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    if template is not None:
        (model_dir / "chat_template.jinja").write_text(template)
    with pytest.raises(LlmforgeError, match=f"Mistral models.*Metaspace.*{match}.*ONNX"):
        export.export_gguf(model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ non-NFC text: a known llama.cpp divergence
@pytest.mark.slow
def test_llama_cpp_does_not_nfc_normalize_as_qwen2s_tokenizer_does(family_dirs: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    """Qwen2's tokenizer.json normalizes to NFC; llama.cpp has no normalizer, so Hangul written in conjoining jamo
    (U+1112 U+1161 U+11AB, which NFC composes to 한) tokenizes differently there. Every text in the parity corpus is
    NFC, where both agree; callers of a Qwen2 GGUF must NFC-normalize their text first. This pins the difference,
    so a llama.cpp that learns to normalize shows up here."""
    import unicodedata

    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(family_dirs["qwen2"]))
    llm = _llama(llama_cpp, export.export_gguf(family_dirs["qwen2"], tmp_path, outtype="f32")["path"])
    jamo = "조합형 \u1112\u1161\u11ab"
    cpp = llm.tokenize(jamo.encode(), add_bos=False, special=True)
    assert cpp != tok(jamo)["input_ids"]
    assert llm.tokenize(unicodedata.normalize("NFC", jamo).encode(), add_bos=False, special=True) == tok(jamo)[
        "input_ids"]
    assert all(unicodedata.is_normalized("NFC", t) for t in MULTILINGUAL_TEXTS)
    llm.close()
