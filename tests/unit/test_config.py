from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmforge.demo import demo_config
from llmforge.errors import ConfigError
from llmforge.stages import PipelineConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.model.trust_remote_code is False


def test_demo_yaml_is_the_demo_config() -> None:
    assert load_config(ROOT / "configs" / "demo.yaml") == demo_config()


def test_precedence_defaults_yaml_flags_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"learning_rate": 1e-3, "epochs": 2}, "data": {"path": "a.jsonl"}}))
    cfg = load_config(path, ["train.learning_rate=5e-5", "train.lora.r=4"], {"train.epochs": 3, "model.name_or_path": None})
    assert cfg.train.learning_rate == 5e-5  # --set beats YAML
    assert cfg.train.epochs == 3  # flag beats YAML
    assert cfg.train.lora.r == 4
    assert cfg.data.path == ["a.jsonl"]  # a single path becomes a list
    assert cfg.model.name_or_path == "demo"  # an unset flag leaves the default
    assert cfg.train.batch_size == 8  # default


def test_unknown_key_names_it_and_lists_allowed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "unknown key 'train.learning_rat'" in message
    assert "learning_rate" in message and str(path) in message
    assert "\n" not in message  # one short paragraph, not a traceback


def test_bad_value_names_key_value_and_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.method=qlorax"])
    message = str(err.value)
    assert "'train.method' = 'qlorax'" in message and "'full'" in message and "'lora'" in message


def test_bad_number_and_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="train.learning_rate"):
        load_config(None, ["train.learning_rate=-1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["learning_rate"])


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(path)


def test_split_fractions_must_leave_training_data() -> None:
    with pytest.raises(ConfigError, match="validation \\+ test"):
        load_config(None, ["data.split.validation=0.5", "data.split.test=0.5"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "deepspeed").glob("*.json")), ids=lambda p: p.name)
def test_shipped_deepspeed_configs_parse(path: Path) -> None:
    import json

    stage = json.loads(path.read_text())["zero_optimization"]["stage"]
    assert stage in (2, 3) and path.stem == f"zero{stage}"
    assert load_config(None, [f"train.deepspeed={path}"]).train.deepspeed == str(path)


def test_a_partial_recovery_train_section_keeps_the_recovery_defaults() -> None:
    from llmforge.compress.config import RECOVERY_DEFAULTS, PruneOptions

    opts = PruneOptions(train={"max_steps": 2, "distill": {"alpha": 0.5}})
    assert opts.train.max_steps == 2 and opts.train.method == RECOVERY_DEFAULTS["method"]
    assert opts.train.learning_rate == RECOVERY_DEFAULTS["learning_rate"]
    assert opts.train.distill.alpha == 0.5 and opts.train.distill.temperature == 1.0
    assert PruneOptions.model_validate(opts.model_dump()) == opts  # a dumped config reloads unchanged
