"""GGUF export of the Llama 3 and Qwen2 families, written as llama.cpp's own converter writes them: the arch, the
pre-tokenizer name llama.cpp knows the split regex by, Qwen2's q/k/v biases, rope rows permuted only for llama;
and, with llama.cpp itself (slow tier), identical tokenization, logits and greedy decoding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")

from llmforge.errors import LlmforgeError  # noqa: E402
from llmforge.export import gguf as export  # noqa: E402
from tests.families import FAMILIES, build_family  # noqa: E402

EXPECTED = {"llama3": ("llama", "gpt2", "llama-bpe"), "qwen2": ("qwen2", "gpt2", "qwen2"),
            "mistral": ("llama", "llama", None)}  # (arch, tokenizer.ggml.model, tokenizer.ggml.pre)
TEXTS = [
    "",
    "héllo wörld ✓ 日本語 🙂",
    "x = [1, 22, 333, 4444]\n\n\tif y:\n  return 12345",
    "  leading and  double  spaces, don't I'll",
    "alpha beta<|eot_id|>gamma<|im_end|>delta</s>",
    " x",
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


@pytest.mark.parametrize("family", FAMILIES)
def test_arch_pre_tokenizer_and_tensors(family: str, family_dirs: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model_dir = family_dirs[family]
    result = export.export_gguf(model_dir, tmp_path, outtype="f32")
    reader = _reader(result["path"])
    arch, tokenizer_model, pre = EXPECTED[family]
    assert _field(reader, "general.architecture") == arch
    assert _field(reader, "tokenizer.ggml.model") == tokenizer_model
    if pre is None:  # SentencePiece: scores rank the merges, byte tokens are BYTE, the space prefix is added
        import gguf

        tokens, types = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.token_type")
        scores = _field(reader, "tokenizer.ggml.scores")
        assert "tokenizer.ggml.pre" not in reader.fields and "tokenizer.ggml.merges" not in reader.fields
        assert types[tokens.index("<0x41>")] == gguf.TokenType.BYTE and _field(reader, "tokenizer.ggml.add_space_prefix")
        normal = [i for i, t in enumerate(types) if t == gguf.TokenType.NORMAL]
        assert all(scores[a] > scores[b] for a, b in zip(normal, normal[1:]))  # earlier merges first
    else:
        assert _field(reader, "tokenizer.ggml.pre") == pre
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    hf = load_file(str(model_dir / "model.safetensors"))
    q_hf = hf["model.layers.0.self_attn.q_proj.weight"].numpy()
    q_gg = tensors["blk.0.attn_q.weight"].reshape(q_hf.shape)
    heads = json.loads((model_dir / "config.json").read_text())["num_attention_heads"]
    if family == "qwen2":  # NEOX rope reads HF's rows as they are; the biases are written
        np.testing.assert_array_equal(q_gg, q_hf)
        for proj in ("q", "k", "v"):
            np.testing.assert_array_equal(tensors[f"blk.0.attn_{proj}.bias"],
                                          hf[f"model.layers.0.self_attn.{proj}_proj.bias"].numpy())
    else:  # llama's rope NORM: rows interleaved per head
        np.testing.assert_array_equal(q_gg, export.permute_rope(q_hf, heads))
        assert not any(name.endswith(".bias") for name in tensors)


def test_sentencepiece_style_tokenizer_refused_with_the_converter_named(family_dirs: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    import shutil

    model_dir = tmp_path / "spm"
    shutil.copytree(family_dirs["llama3"], model_dir)
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok["model"]["byte_fallback"] = True
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(LlmforgeError, match="byte fallback.*convert_hf_to_gguf"):
        export.export_gguf(model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.gguf"))


def test_an_unknown_split_regex_is_refused(family_dirs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    model_dir = tmp_path / "odd"
    shutil.copytree(family_dirs["qwen2"], model_dir)
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"
    (model_dir / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(LlmforgeError, match="GPT-2, Llama 3 or Qwen2 pre-tokenizer"):
        export.export_gguf(model_dir, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_llama_cpp_tokenizes_scores_and_decodes_as_transformers(family: str, family_dirs: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = family_dirs[family]
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    path = export.export_gguf(model_dir, tmp_path, outtype="f32")["path"]
    llm = llama_cpp.Llama(path, n_ctx=256, n_threads=1, logits_all=True, verbose=False, type_k=0, type_v=0)
    adds_bos = tok.bos_token_id is not None
    for text in TEXTS:  # specials parsed as single tokens, as HF does
        assert llm.tokenize(text.encode(), add_bos=adds_bos, special=True) == tok(text)["input_ids"], text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi there 42"}], tokenize=False,
                                   add_generation_prompt=True)
    assert llm.tokenize(chat.encode(), add_bos=False, special=True) == tok(chat, add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    prompt = tok("alpha beta gamma 123 delta")["input_ids"]
    with torch.no_grad():
        hf_logits = model(torch.tensor([prompt])).logits[0].numpy()  # (T, V)
        hf_new = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    llm.eval(prompt)
    assert np.abs(np.asarray(llm.scores[: len(prompt)]) - hf_logits).max() < 1e-3
    cpp_new: list[int] = []
    for _ in range(len(hf_new)):  # greedy, stopping where HF stopped
        cpp_new.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([cpp_new[-1]])
    llm.close()
    assert cpp_new == hf_new


@pytest.mark.parametrize("family", FAMILIES)
def test_modelfile_template_default_system_prompt_and_stops(family: str, family_dirs: dict[str, Path],
                                                            tmp_path: Path) -> None:
    text = Path(export.export_gguf(family_dirs[family], tmp_path, outtype="f16")["modelfile"]).read_text()
    if family == "qwen2":  # its template adds a system turn to every conversation without one: Ollama's SYSTEM
        assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>" in text
        assert 'SYSTEM """You are a helpful assistant."""' in text and 'PARAMETER stop "<|im_end|>"' in text
    elif family == "mistral":  # Ollama uses the template stored in the GGUF; eos ends a turn
        assert "TEMPLATE" not in text.replace("# no TEMPLATE", "") and 'PARAMETER stop "</s>"' in text
    else:
        assert "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>" in text
        assert "SYSTEM" not in text and 'PARAMETER stop "<|eot_id|>"' in text
