from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmforge.data.tokenize import (
    IGNORE,
    ChatRenderer,
    Tokenized,
    fit_length,
    render_chat,
    render_text,
    tokenize_batch,
)
from tests.multilingual import multilingual_text


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def trained_text(tokenizer, sample: Tokenized) -> str:
    return tokenizer.decode([t for t, lab in zip(sample.input_ids, sample.labels) if lab != IGNORE])


def trained_runs(sample: Tokenized) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive trained tokens (one run per assistant turn)."""
    trained = [label != IGNORE for label in sample.labels] + [False]
    starts = [i for i, on in enumerate(trained) if on and (not i or not trained[i - 1])]
    return [(i, trained.index(False, i)) for i in starts]


def assert_turns_trained(tokenizer, sample: Tokenized, messages: list[dict[str, str]], end: str) -> None:
    """The property, exactly: each assistant turn is one run of trained tokens, whose text is what the model writes
    after serve's prompt (the generation prompt rendered before the turn): the template's text between that prompt
    and the answer (Llama 2's space), the answer, and `end`. Only where the whole-text tokenization joins the
    prompt's last characters to the answer (a byte-level token over a newline and the answer's leading
    whitespace), so that serve's prompt ids are no prefix of the sample's, does that token bring them along."""
    render = ChatRenderer(tokenizer)
    full = render(messages)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    runs = trained_runs(sample)
    assert len(runs) == len(turns), (runs, messages)
    for (lo, hi), i in zip(runs, turns):
        prompt = render(messages[:i], add_generation_prompt=True)
        content = messages[i]["content"]
        body = full[len(prompt) : full.index(content, len(prompt))] + content + end
        text = tokenizer.decode(sample.input_ids[lo:hi])
        assert text.endswith(body), (text, body)
        lead = text[: len(text) - len(body)]
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if sample.input_ids[: len(prompt_ids)] == prompt_ids:
            assert lead == "", (lead, body)
        else:
            assert lead and prompt.endswith(lead), (lead, prompt)


def test_single_turn_labels_exactly_the_answer_and_eos(tokenizer) -> None:
    messages = [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi there"}]
    (sample,) = tokenize_batch(tokenizer, [render_chat(tokenizer, messages)])
    assert trained_text(tokenizer, sample) == "hi there" + tokenizer.eos_token
    assert len(sample.input_ids) == len(sample.labels)
    # labels are aligned with inputs (the model shifts): each trained label equals its own input id
    assert all(lab in (IGNORE, tok) for tok, lab in zip(sample.input_ids, sample.labels))
    assert sample.labels[-2] == tokenizer.eos_token_id  # eos closes the turn; the trailing newline is context


def test_every_assistant_turn_is_trained_and_nothing_else(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "second answer"},
    ]
    (sample,) = tokenize_batch(tokenizer, [render_chat(tokenizer, messages)])
    eos = tokenizer.eos_token
    assert trained_text(tokenizer, sample) == f"first answer{eos}second answer{eos}"


def test_train_on_inputs_trains_everything(tokenizer) -> None:
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    (sample,) = tokenize_batch(tokenizer, [render_chat(tokenizer, messages, train_on_inputs=True)])
    assert sample.labels == sample.input_ids


def test_text_gets_bos_and_eos_and_is_all_trainable(tokenizer) -> None:
    (sample,) = tokenize_batch(tokenizer, [render_text("alpha beta")])
    assert sample.input_ids[0] == tokenizer.bos_token_id
    assert sample.input_ids[-1] == tokenizer.eos_token_id
    assert sample.labels == sample.input_ids


def test_batch_keeps_order_with_mixed_kinds(tokenizer) -> None:
    chat = render_chat(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    text = render_text("alpha")
    out = tokenize_batch(tokenizer, [text, chat, text])
    assert out[0] == out[2] and out[1].input_ids[0] == tokenizer.bos_token_id
    assert out[0].labels == out[0].input_ids and out[1].labels != out[1].input_ids


def test_length_policies() -> None:
    sample = Tokenized(list(range(10)), list(range(10)))
    assert fit_length(sample, 10, "drop") == [sample]
    assert fit_length(sample, 4, "drop") == []
    assert fit_length(sample, 4, "truncate") == [Tokenized([0, 1, 2, 3], [0, 1, 2, 3])]
    chunks = fit_length(sample, 4, "chunk")
    assert [c.input_ids for c in chunks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


content = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
content = st.one_of(content, multilingual_text)  # CJK, Arabic, Devanagari, emoji ZWJ sequences kept whole
content = content.filter(lambda s: s.strip() and "<|" not in s and "<s>" not in s)


@settings(max_examples=60, deadline=None)
@given(turns=st.lists(st.tuples(content, content), min_size=1, max_size=4), system=st.one_of(st.none(), content))
def test_property_trainable_tokens_decode_to_assistant_contents(tokenizer, turns, system) -> None:
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    (sample,) = tokenize_batch(tokenizer, [render_chat(tokenizer, messages)])
    assert sample.input_ids == tokenizer(render_chat(tokenizer, messages).text, add_special_tokens=False)["input_ids"]
    assert_turns_trained(tokenizer, sample, messages, tokenizer.eos_token)


# --- other families' templates -------------------------------------------------------------------------------------

PHI3_TEMPLATE = (  # Phi-3-mini-4k-instruct's tokenizer_config.json: eos closes a conversation with no generation prompt
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@pytest.fixture(scope="module")
def phi3_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.add_special_tokens({"eos_token": "<|endoftext|>",
                            "additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]})
    tok.chat_template = PHI3_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def family_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from transformers import AutoTokenizer

    from tests.families import FAMILIES, build_family

    root = tmp_path_factory.mktemp("families")
    return {name: AutoTokenizer.from_pretrained(str(build_family(name, root))) for name in (*FAMILIES, "mistral-v03")}


def _chat(turns: list[tuple[str, str]], system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


family_content = content.map(str.strip).filter(lambda s: s and "<|" not in s)


@settings(max_examples=40, deadline=None)
@given(turns=st.lists(st.tuples(content, content), min_size=1, max_size=3), system=st.one_of(st.none(), content))
def test_phi3_template_closing_eos_is_not_trained_and_each_turn_ends_with_end(phi3_tokenizer, turns, system) -> None:
    (sample,) = tokenize_batch(phi3_tokenizer, [render_chat(phi3_tokenizer, _chat(turns, system))])
    assert_turns_trained(phi3_tokenizer, sample, _chat(turns, system), "<|end|>")
    assert sample.input_ids[-1] == phi3_tokenizer.eos_token_id and sample.labels[-1] == IGNORE


@settings(max_examples=30, deadline=None)
@given(turns=st.lists(st.tuples(family_content, family_content), min_size=1, max_size=3),
       system=st.one_of(st.none(), family_content), family=st.sampled_from(["llama3", "qwen2"]))
def test_family_templates_train_each_answer_and_its_end_of_turn_token(family_tokenizers, turns, system,
                                                                      family) -> None:
    tok = family_tokenizers[family]
    (sample,) = tokenize_batch(tok, [render_chat(tok, _chat(turns, system))])
    end = {"llama3": "<|eot_id|>", "qwen2": "<|im_end|>"}[family]
    nfc = (lambda a: unicodedata.normalize("NFC", a)) if family == "qwen2" else str  # Qwen2 normalizes to NFC
    assert trained_text(tok, sample) == "".join(nfc(a) + end for _, a in turns)


@pytest.fixture(scope="module")
def any_template_tokenizer(tiny_model_dir: Path):
    """The tiny tokenizer with every named template's special tokens (eos stays <|im_end|>)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.add_special_tokens({"additional_special_tokens": [
        "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<start_of_turn>", "<end_of_turn>",
        "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]})
    return tok


def _turn_end(template: str, eos: str) -> str:
    """What each named template trains after an answer: its end-of-turn token (the tiny tokenizer's eos is
    <|im_end|>, so eos-terminated templates end with it)."""
    return {"chatml": eos, "llama-3": "<|eot_id|>", "llama-2": " " + eos, "mistral": eos, "gemma": "<end_of_turn>",
            "phi-3": "<|end|>", "user-assistant": eos, "dialogpt": eos}[template]


@settings(max_examples=25, deadline=None)
@given(turns=st.lists(st.tuples(family_content, family_content), min_size=1, max_size=3),
       system=st.one_of(st.none(), family_content))
@pytest.mark.parametrize("template", ["chatml", "llama-3", "llama-2", "mistral", "gemma", "phi-3", "user-assistant",
                                      "dialogpt"])
def test_every_named_template_trains_each_answer_and_its_end_of_turn(any_template_tokenizer, template, turns,
                                                                     system) -> None:
    from llmforge.models.chat import TEMPLATES

    tok = any_template_tokenizer
    tok.chat_template = TEMPLATES[template]
    if template == "dialogpt" and system:  # no system role there: refused, naming why
        from jinja2 import TemplateError

        with pytest.raises(TemplateError, match="no system role"):
            render_chat(tok, _chat(turns, system))
        return
    (sample,) = tokenize_batch(tok, [render_chat(tok, _chat(turns, system))])
    assert_turns_trained(tok, sample, _chat(turns, system), _turn_end(template, tok.eos_token))
    if system and template in ("mistral", "gemma", "llama-2"):  # folded into the first user turn, not dropped
        assert system in tok.decode(sample.input_ids)


# --- whole-text tokenization: the ids serve gives the same conversation -------------------------------------------

def test_a_token_across_the_generation_prompt_end_is_trained(tiny_model_dir: Path) -> None:
    """A token over the prompt's last newline and the answer's first one is the model's to write: trained."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.add_tokens(["\n\n"])
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\nok"}]
    (sample,) = tokenize_batch(tok, [render_chat(tok, messages)])
    tokens = tok.convert_ids_to_tokens(sample.input_ids)
    trained = [t for t, lab in zip(tokens, sample.labels) if lab != IGNORE]
    assert tokens[-len(trained) - 2 :] == ["t", *trained, "Ċ"]  # ...assistant, then the newline after <|im_end|>
    assert trained[0] == "\n\n"
    assert_turns_trained(tok, sample, messages, tok.eos_token)  # its lead: the prompt's newline


def test_llama2_space_before_the_answer_is_trained_with_it(any_template_tokenizer) -> None:
    """Llama 2's template writes ' ' + answer after [/INST], where serve's prompt ends: the model writes the
    space, here in one byte-level token with the answer's first letters."""
    from llmforge.models.chat import TEMPLATES

    tok = any_template_tokenizer
    tok.chat_template = TEMPLATES["llama-2"]
    (sample,) = tokenize_batch(tok, [render_chat(tok, [{"role": "user", "content": "q"},
                                                       {"role": "assistant", "content": "ok"}])])
    assert trained_text(tok, sample) == " ok " + tok.eos_token
    assert tok.decode(sample.input_ids).endswith("[/INST] ok " + tok.eos_token)


@pytest.mark.parametrize("family", ["mistral-v03", "mistral", "phi3"])
def test_sentencepiece_families_get_no_piece_prefix(family_tokenizers, family) -> None:
    """Issue 15: SentencePiece tokenizers prefix `▁` to every text encoded alone; the answer must not get one."""
    from llmforge.serve.prompts import chat_ids

    tok = family_tokenizers[family]
    messages = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "ok fine"}]
    (sample,) = tokenize_batch(tok, [render_chat(tok, messages)])
    prompt = len(chat_ids(tok, messages[:1], "tiny"))
    tokens = tok.convert_ids_to_tokens(sample.input_ids)
    head = {"mistral-v03": ["▁", "o", "k"], "mistral": ["o", "k"], "phi3": ["o", "k"]}[family]  # v0.3: ' ' + answer
    assert tokens[prompt : prompt + len(head)] == head  # was ▁ ▁ o k, ▁ o k, ▁ o k
    trained = [i for i, lab in enumerate(sample.labels) if lab != IGNORE]
    assert trained[0] == prompt and tokens[trained[-1]] == {"phi3": "<|end|>"}.get(family, "</s>")


FAMILY_END = {"llama3": "<|eot_id|>", "qwen2": "<|im_end|>", "mistral": "</s>", "mistral-v03": "</s>",
              "gemma2": "<end_of_turn>", "gemma3": "<end_of_turn>", "phi3": "<|end|>", "gpt2": "<|endoftext|>"}
whitespace_content = st.text(alphabet=st.one_of(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                                                st.sampled_from(" \n\t")),
                             min_size=1, max_size=30)
whitespace_content = st.one_of(whitespace_content, multilingual_text)
whitespace_content = whitespace_content.map(str.strip).filter(lambda s: s and "<" not in s and "INST]" not in s)


@settings(max_examples=20, deadline=None)
@given(turns=st.lists(st.tuples(whitespace_content, whitespace_content), min_size=1, max_size=3),
       system=st.one_of(st.none(), whitespace_content))
@pytest.mark.parametrize("family", sorted(FAMILY_END))
def test_prepared_ids_are_the_whole_text_tokens_serve_gives(family_tokenizers, family, turns, system) -> None:
    """prepare's ids are the tokenization of the whole rendered chat, by serve's call; serve's prompt before each
    assistant turn is a prefix of them; each turn's trained tokens cover exactly what the model writes there."""
    from llmforge.models.chat import TEMPLATES, fold_system, with_system_folded
    from llmforge.serve.prompts import chat_ids

    tok = family_tokenizers[family]
    if not tok.chat_template:  # GPT-2: the family's default template (llmforge.models.families)
        tok.chat_template = TEMPLATES["dialogpt"]
    messages = _chat(turns, system)
    rendered, folded = with_system_folded(lambda m: render_chat(tok, m), messages)
    (sample,) = tokenize_batch(tok, [rendered])
    whole = tok(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    assert sample.input_ids == whole["input_ids"]
    assert all(lab in (IGNORE, t) for t, lab in zip(sample.input_ids, sample.labels))

    shown = fold_system(messages) if folded else messages  # the conversation as the template saw it
    render = ChatRenderer(tok)
    turns_at = [i for i, m in enumerate(shown) if m["role"] == "assistant"]
    runs = trained_runs(sample)
    assert len(runs) == len(turns_at)
    for (lo, hi), i in zip(runs, turns_at):
        prompt_ids = chat_ids(tok, messages[: i + folded], "tiny")  # serve's prompt for this turn
        assert sample.input_ids[: len(prompt_ids)] == prompt_ids
        prompt = render(shown[:i], add_generation_prompt=True)
        content = shown[i]["content"]
        body = rendered.text[len(prompt) : rendered.text.index(content, len(prompt))] + content + FAMILY_END[family]
        covered = rendered.text[whole["offset_mapping"][lo][0] : whole["offset_mapping"][hi - 1][1]]
        assert covered == body, (covered, body)
