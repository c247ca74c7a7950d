from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmforge.artifacts import read_manifest
from llmforge.config import ModelConfig
from llmforge.data.config import DataConfig, SplitConfig
from llmforge.errors import DataError, LlmforgeError
from llmforge.prepare.config import PrepareConfig
from llmforge.prepare.runner import prepare
from tests.families import GEMMA2_TEMPLATE
from tests.helpers import qa_records, write_jsonl


def cfg(model: Path, data: list[Path], out: Path, **data_opts) -> PrepareConfig:
    return PrepareConfig(model=ModelConfig(name_or_path=str(model)),
                         data=DataConfig(path=[str(p) for p in data], **data_opts), output_dir=out)


def load(out: Path, split: str):
    from datasets import load_from_disk

    return load_from_disk(str(out / split))


def test_prepare_writes_splits_report_and_manifest(tiny_model_dir: Path, qa_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "prep"
    result = prepare(cfg(tiny_model_dir, [qa_file], out, split=SplitConfig(validation=0.1, test=0.1)))
    report = result.metrics
    assert report["records_read"] == 120 and report["records_kept"] == 120
    assert sum(report["samples"].values()) == 120
    assert all(report["samples"][s] > 0 for s in ("train", "validation", "test"))
    assert 0 < report["trainable_token_fraction"] < 1
    train = load(out, "train")
    assert set(train.column_names) == {"input_ids", "labels", "attention_mask"}
    assert all(len(a) == len(b) for a, b in zip(train["input_ids"], train["labels"]))
    manifest = read_manifest(out)
    assert manifest["kind"] == "prepared-dataset" and len(manifest["dataset_fingerprint"]) == 64
    assert (out / "lint.json").exists() and (out / "lengths.png").stat().st_size > 1000


def test_split_is_deterministic_and_grouped(tiny_model_dir: Path, tmp_path: Path) -> None:
    records = [{**r, "group": f"g{r['id'] % 10}"} for r in qa_records()]
    data = write_jsonl(tmp_path / "g.jsonl", records)
    split = SplitConfig(validation=0.2, test=0.2, group_by="group")
    a = prepare(cfg(tiny_model_dir, [data], tmp_path / "a", split=split)).metrics["samples"]
    b = prepare(cfg(tiny_model_dir, [data], tmp_path / "b", split=split)).metrics["samples"]
    assert a == b
    assert all(n % 12 == 0 for n in a.values())  # each of the 10 groups holds 12 records, never split


def test_split_column_names_the_split(tiny_model_dir: Path, tmp_path: Path) -> None:
    records = [{**r, "split": "test" if r["id"] < 30 else "train"} for r in qa_records()]
    data = write_jsonl(tmp_path / "s.jsonl", records)
    report = prepare(cfg(tiny_model_dir, [data], tmp_path / "o", split=SplitConfig(column="split"))).metrics
    assert report["samples"] == {"train": 90, "validation": 0, "test": 30}


def test_second_prepare_is_cached_and_changes_invalidate(tiny_model_dir: Path, qa_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "prep"
    first = prepare(cfg(tiny_model_dir, [qa_file], out))
    second = prepare(cfg(tiny_model_dir, [qa_file], out))
    assert second.cached and second.metrics == first.metrics  # (its speed: benchmarks/prepare.py)
    assert not prepare(cfg(tiny_model_dir, [qa_file], out, max_length=64)).cached
    qa_file.write_text(qa_file.read_text() + json.dumps({"input": "new", "output": "record"}) + "\n")
    assert not prepare(cfg(tiny_model_dir, [qa_file], out, max_length=64)).cached


def test_duplicates_removed_and_counted(tiny_model_dir: Path, tmp_path: Path) -> None:
    records = qa_records(20)
    data = write_jsonl(tmp_path / "d.jsonl", [{k: v for k, v in r.items() if k != "id"} for r in records * 2])
    report = prepare(cfg(tiny_model_dir, [data], tmp_path / "o")).metrics
    assert report["dropped"]["duplicate"] == 20 and report["records_kept"] == 20


def test_strict_mode_lists_every_bad_record_with_file_line_field(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"input": "a", "output": "b"}\n{"input": "a"\n{"input": "c", "output": 3}\n'
                    '{"input": "d", "output": "  "}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        prepare(cfg(tiny_model_dir, [data], tmp_path / "o"))
    message = str(err.value)
    assert "3 problem(s)" in message
    assert f"{data}:2" in message and f"{data}:3: field 'output'" in message and f"{data}:4: field 'output'" in message
    assert not (tmp_path / "o").exists()  # nothing that looks complete


def test_lenient_mode_skips_to_rejects_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in qa_records(30)] + ['{"input": "x", "output": 5}', "not json"]
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = prepare(cfg(tiny_model_dir, [data], tmp_path / "o", strict=False))
    assert result.metrics["dropped"]["invalid_record"] == 2 and result.metrics["records_kept"] == 30
    rejects = [json.loads(x) for x in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [31, 32]


def test_overlong_policies_are_counted_never_silent(tiny_model_dir: Path, qa_file: Path, tmp_path: Path) -> None:
    full = prepare(cfg(tiny_model_dir, [qa_file], tmp_path / "f")).metrics
    limit = int(full["tokens"]["p50"])
    dropped = prepare(cfg(tiny_model_dir, [qa_file], tmp_path / "d", max_length=limit)).metrics
    assert 0 < dropped["dropped"]["too_long"] < 120
    assert dropped["records_kept"] + dropped["dropped"]["too_long"] == 120
    truncated = prepare(cfg(tiny_model_dir, [qa_file], tmp_path / "t", max_length=limit, overlong="truncate")).metrics
    assert truncated["truncated"] == dropped["dropped"]["too_long"]
    assert truncated["tokens"]["max"] <= limit
    with pytest.raises(DataError, match=f"tokens > data.max_length={limit}"):
        prepare(cfg(tiny_model_dir, [qa_file], tmp_path / "e", max_length=limit, overlong="error"))


def test_max_length_is_held_to_the_models_context(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The tiny model takes 256 positions: data.max_length 1024 (the default) cannot give it longer samples, which a
    learned-position model could not train on and the server would refuse; the report says so."""
    text = " ".join(["alpha beta gamma"] * 200)  # ~600 tokens
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": text}])
    report = prepare(cfg(tiny_model_dir, [data], tmp_path / "o", format="text", overlong="chunk",
                         split=SplitConfig(validation=0, test=0))).metrics
    assert report["max_length"] == 256 and report["tokens"]["max"] <= 256 and report["chunked"] == 1
    assert "data.max_length 1024 is beyond the model's context" in report["max_length_note"]
    assert sum(len(x) for x in load(tmp_path / "o", "train")["input_ids"]) == report["tokens"]["total"]
    with pytest.raises(LlmforgeError, match="data.max_length 1024 was held to the model's context, 256 tokens"):
        prepare(cfg(tiny_model_dir, [data], tmp_path / "d", format="text", split=SplitConfig(validation=0, test=0)))
    small = prepare(cfg(tiny_model_dir, [data], tmp_path / "s", format="text", overlong="chunk", max_length=64,
                        split=SplitConfig(validation=0, test=0))).metrics
    assert small["max_length"] == 64 and "max_length_note" not in small  # within the context: as asked


def test_text_chunking_keeps_every_token(tiny_model_dir: Path, tmp_path: Path) -> None:
    text = " ".join(["alpha beta gamma"] * 60)
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": text}])
    report = prepare(cfg(tiny_model_dir, [data], tmp_path / "o", format="text", max_length=32, overlong="chunk",
                         split=SplitConfig(validation=0, test=0))).metrics
    assert report["chunked"] == 1 and report["samples"]["train"] > 1
    train = load(tmp_path / "o", "train")
    assert sum(len(x) for x in train["input_ids"]) == report["tokens"]["total"]


def test_no_data_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LlmforgeError, match="no input data"):
        prepare(cfg(tiny_model_dir, [], tmp_path / "o"))
    with pytest.raises(LlmforgeError, match="missing.jsonl"):
        prepare(cfg(tiny_model_dir, [tmp_path / "missing.jsonl"], tmp_path / "o"))


def test_preference_pairs_are_kept_for_preference_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    records = [{"prompt": f"pick {i}", "chosen": "good answer", "rejected": f"bad answer {i}"} for i in range(20)]
    data = write_jsonl(tmp_path / "p.jsonl", records)
    report = prepare(cfg(tiny_model_dir, [data], tmp_path / "o", split=SplitConfig(validation=0, test=0))).metrics
    assert report["kinds"] == {"preference": 20} and report["samples"]["train"] == 20
    train = load(tmp_path / "o", "train")
    assert set(train.column_names) == {"prompt", "chosen", "rejected"}
    row = train[0]
    assert row["prompt"].endswith("<|im_start|>assistant\n") and "pick" in row["prompt"]
    assert row["chosen"] == "good answer<|im_end|>"


def test_empty_split_loads_as_empty_dataset(tiny_model_dir: Path, qa_file: Path, tmp_path: Path) -> None:
    from llmforge.data.splits import load_split

    prepare(cfg(tiny_model_dir, [qa_file], tmp_path / "o", split=SplitConfig(validation=0, test=0.2)))
    empty = load_split(tmp_path / "o", "validation")
    assert len(empty) == 0 and set(empty.column_names) == {"input_ids", "labels", "attention_mask"}


def _write_csv(path: Path, records: list[dict]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["input", "output"])
        writer.writeheader()
        writer.writerows({"input": r["input"], "output": r["output"]} for r in records)
    return path


def test_files_per_split_are_used_as_given(tiny_model_dir: Path, tmp_path: Path) -> None:
    records = qa_records(160)
    train = write_jsonl(tmp_path / "train.jsonl", records[:100])
    validation = write_jsonl(tmp_path / "val.jsonl", records[100:130])
    test = _write_csv(tmp_path / "test.csv", records[130:])
    out = tmp_path / "o"
    report = prepare(cfg(tiny_model_dir, [train], out, test_path=[str(test)], validation_path=[str(validation)],
                         split=SplitConfig(validation=0.2, test=0.2))).metrics
    assert report["samples"] == {"train": 100, "validation": 30, "test": 30}  # no fraction taken from train
    sources = report["split_sources"]
    assert "test.csv" in sources["test"] and "data.split.test not applied" in sources["test"]
    assert "data.split.validation not applied" in sources["validation"]
    assert json.loads((out / "lint.json").read_text())["split_sources"] == sources
    expected = prepare(cfg(tiny_model_dir, [write_jsonl(tmp_path / "t.jsonl", records[130:])], tmp_path / "e",
                           split=SplitConfig(validation=0, test=0)))
    assert load(out, "test")["input_ids"] == load(expected.output_dir, "train")["input_ids"]  # same rows, same order


def test_a_split_without_its_own_file_keeps_its_fraction(tiny_model_dir: Path, tmp_path: Path) -> None:
    records = qa_records(140)
    train = write_jsonl(tmp_path / "train.jsonl", records[:120])
    test = _write_csv(tmp_path / "test.csv", records[120:])
    report = prepare(cfg(tiny_model_dir, [train], tmp_path / "o", test_path=[str(test)],
                         split=SplitConfig(validation=0.25, test=0.5))).metrics
    assert report["samples"]["test"] == 20 and report["samples"]["validation"] == 30  # 25% of the 120
    assert "data.split.validation=0.25" in report["split_sources"]["validation"]


def test_held_out_copy_of_a_duplicate_is_kept(tiny_model_dir: Path, tmp_path: Path) -> None:
    records = qa_records(60)
    train = write_jsonl(tmp_path / "train.jsonl", records[:50])
    test = write_jsonl(tmp_path / "test.jsonl", records[40:])  # 10 of them also in train
    report = prepare(cfg(tiny_model_dir, [train], tmp_path / "o", test_path=[str(test)],
                         split=SplitConfig(validation=0, test=0))).metrics
    assert report["samples"] == {"train": 40, "validation": 0, "test": 20}
    assert report["dropped"]["duplicate"] == 10


def test_split_file_errors_name_the_key_and_file(tiny_model_dir: Path, qa_file: Path, tmp_path: Path) -> None:
    with pytest.raises(LlmforgeError, match=r"data\.test_path: .*missing\.csv"):
        prepare(cfg(tiny_model_dir, [qa_file], tmp_path / "o", test_path=["missing.csv"]))
    empty = tmp_path / "empty.csv"
    empty.write_text("input,output\n", encoding="utf-8")
    with pytest.raises(LlmforgeError, match=r"empty\.csv.*data\.validation_path"):
        prepare(cfg(tiny_model_dir, [qa_file], tmp_path / "o", validation_path=[str(empty)]))
    bad = tmp_path / "bad.csv"
    bad.write_text("input,output\nok,fine\nno answer,\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{bad}:3: field 'output'"):  # line 3 of the file: the header is 1
        prepare(cfg(tiny_model_dir, [qa_file], tmp_path / "o", test_path=[str(bad)]))


def test_split_files_config_shape_and_flags() -> None:
    from llmforge.errors import ConfigError
    from llmforge.stages import load_config

    data = DataConfig(path="train.jsonl", validation_path="val.csv", test_path=["a.jsonl", "b.jsonl"])
    assert data.split_files() == {"validation": ["val.csv"], "test": ["a.jsonl", "b.jsonl"]}
    flags = load_config(None, None, {"data.path": ["t.jsonl"], "data.test_path": ["x.csv"]})
    assert flags.data.test_path == ["x.csv"] and flags.data.validation_path == []
    with pytest.raises(ConfigError, match="data.split.column"):
        load_config(None, ["data.split.column=split", "data.test_path=x.csv"])


def test_a_template_that_cannot_render_a_record_names_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    chats = [{"messages": [{"role": "user", "content": f"hello {i}"}, {"role": "assistant", "content": "hi"}]}
             for i in range(6)]
    chats[3]["messages"][0]["content"] = "forbidden"  # a template may refuse what the data format allows
    chats[1]["messages"].insert(0, {"role": "system", "content": "be brief"})  # no system role: folded
    data = write_jsonl(tmp_path / "chats.jsonl", chats)
    gemma = tmp_path / "gemma.jinja"
    gemma.write_text("{% for m in messages %}{% if m['content'] == 'forbidden' %}{{ raise_exception('no') }}"
                     "{% endif %}{% endfor %}" + GEMMA2_TEMPLATE, encoding="utf-8")
    with pytest.raises(DataError, match=r"chats\.jsonl:4: field 'messages'.*cannot render it: no"):
        prepare(cfg(tiny_model_dir, [data], tmp_path / "o", chat_template=str(gemma), split=SplitConfig(test=0.2)))
    kept = prepare(cfg(tiny_model_dir, [data], tmp_path / "lenient", chat_template=str(gemma), strict=False,
                       split=SplitConfig(test=0.2)))
    assert sum(kept.metrics["samples"].values()) == 5
    assert kept.metrics["system_folded"] == 1


def test_a_system_message_is_folded_where_the_template_has_no_system_role(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from llmforge.models.chat import TEMPLATES, with_system_folded
    from tests.families import build_family

    tok = AutoTokenizer.from_pretrained(str(build_family("gemma2", tmp_path)))
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    text, folded = with_system_folded(lambda m: tok.apply_chat_template(m, tokenize=False), chat)
    assert folded and text == "<bos><start_of_turn>user\nbe brief\n\nhi<end_of_turn>\n"
    tok.chat_template = TEMPLATES["chatml"]  # a template with a system role renders it as it is
    text, folded = with_system_folded(lambda m: tok.apply_chat_template(m, tokenize=False), chat)
    assert not folded and "<|im_start|>system\nbe brief" in text
    tok.chat_template = TEMPLATES["dialogpt"]
    with pytest.raises(Exception, match="no system role"):  # folding cannot help a lone system message
        with_system_folded(lambda m: tok.apply_chat_template(m, tokenize=False), chat[:1])


def test_a_jinja_file_is_a_chat_template(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    template = tmp_path / "mine.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}"
                        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    data = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                                {"role": "assistant", "content": "a"}]}] * 3)
    out = prepare(cfg(tiny_model_dir, [data], tmp_path / "o", chat_template=str(template), dedupe=False,
                      split=SplitConfig(validation=0, test=0))).output_dir
    assert (out / read_manifest(out)["chat_template"]).read_text() == template.read_text()
    from llmforge.config import TrainOptions
    from llmforge.train.config import TrainConfig
    from llmforge.train.runner import train

    trained = train(TrainConfig(model=ModelConfig(name_or_path=str(tiny_model_dir)), data=out,
                                train=TrainOptions(method="full", max_steps=1, batch_size=2), output_dir=tmp_path / "t"))
    saved = AutoTokenizer.from_pretrained(str(trained.output_dir / "model"))
    assert saved.chat_template == template.read_text()  # served with the template it was trained on
