"""The model-family registry: how a model is recognised, what the README's table says, and that the table in
README.md is the registry's (never typed by hand). The cells themselves run in tests/integration/test_family_matrix."""

from __future__ import annotations

import re
from pathlib import Path

from llmforge.models.families import BY_KEY, FAMILIES, STAGES, Family, cell, family_of, family_of_dir, markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_family_is_known_by_its_architecture(tmp_path: Path) -> None:
    assert family_of({"architectures": ["Qwen2ForCausalLM"]}) is BY_KEY["qwen2"]
    assert family_of({"architectures": ["FalconForCausalLM"]}) is None
    assert family_of({}) is None
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    assert family_of_dir(tmp_path) is BY_KEY["gpt2"]
    assert family_of_dir(tmp_path / "missing") is None


def test_cells_say_why() -> None:
    family = Family("x", "X", ("XForCausalLM",), "chatml", "", refused={"gguf": "no llama.cpp graph"},
                    limits={"prune": "MLP only"})
    assert cell(family, "gguf") == "no: no llama.cpp graph"
    assert cell(family, "prune") == "yes (MLP only)"
    assert cell(family, "onnx") == "yes"


def test_every_stage_of_every_family_is_said() -> None:
    for family in FAMILIES:
        assert set(family.refused) | set(family.limits) <= set(STAGES), family.key
        assert family.default_template is None or family.default_template in family.template


def test_readme_table_is_the_registry() -> None:
    block = re.search(r"<!-- families:start -->\n(.*?)\n<!-- families:end -->", README.read_text(), re.S)
    assert block, "README.md lost its families block"
    assert block.group(1) == markdown_table(), "run `python benchmarks/readme_results.py --families-only`"
