"""`llmforge bench`'s config: the variants and how each is measured."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmforge.config import Section


class BenchOptions(Section):
    prompt_tokens: int = Field(128, ge=1, description="Prompt length of the measured request.")
    new_tokens: int = Field(64, ge=2, description="Tokens generated per measured request.")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8], description="Batch sizes for decode speed.")
    repeats: int = Field(5, ge=1, description="Timed repetitions of each measurement (medians are reported).")
    warmup: int = Field(2, ge=0, description="Untimed runs first.")
    quality_samples: int = Field(200, ge=1, description="Test samples scored for perplexity, when data is given.")

class BenchConfig(Section):
    """`llmforge bench`: speed, memory, size (and quality) of each model variant, each in a fresh process."""

    models: list[str] = Field(..., min_length=1, description="Variants as NAME=MODEL or MODEL (dir, run dir, hub id).")
    data: Path | None = Field(None, description="Prepared dataset: adds held-out perplexity for each variant.")
    bench: BenchOptions = Field(default_factory=BenchOptions)
    output_dir: Path = Field(Path("runs/bench"))
