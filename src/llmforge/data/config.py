"""The data section: where the records are, how they are read, split and tokenized (`llmforge prepare` and the
pipeline's `data:`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmforge.config import Section

DataFormat = Literal[
    "auto", "input_output", "alpaca", "dolly", "sharegpt", "messages", "text", "preference"
]

class SplitConfig(Section):
    validation: float = Field(0.05, ge=0, lt=1, description="Fraction of records for validation.")
    test: float = Field(0.05, ge=0, lt=1, description="Fraction of records held out for testing.")
    seed: int = Field(0, description="Seed of the deterministic split.")
    group_by: str | None = Field(
        None, description="Column whose equal values always land in the same split (e.g. a source id)."
    )

    column: str | None = Field(
        None, description="Column that names each record's split (train, validation or test); overrides the fractions."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SplitConfig:
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must be below 1 so that training data remains")
        if self.group_by and self.column:
            raise ValueError("set either group_by or column, not both")
        return self

class DataConfig(Section):
    path: list[str] = Field(
        default_factory=list,
        description="Input files, globs or saved `datasets` directories (.jsonl, .json, .csv, .parquet), split "
        "into train / validation / test by data.split, except for a split given its own files below.",
    )
    validation_path: list[str] = Field(
        default_factory=list,
        description="Files of the validation split, used as given (CLI --eval-data): data.split.validation is "
        "then not applied to data.path.",
    )
    test_path: list[str] = Field(
        default_factory=list,
        description="Files of the test split, used as given (CLI --test-data): data.split.test is then not "
        "applied to data.path.",
    )
    format: DataFormat = Field("auto", description="Record format; 'auto' detects it from the keys.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map llmforge field -> your column, e.g. {input: question}."
    )
    max_length: int = Field(1024, ge=8, description="Maximum tokens per sample.")
    overlong: Literal["drop", "truncate", "error", "chunk"] = Field(
        "drop",
        description="What to do with samples over max_length; 'chunk' splits plain text into windows.",
    )
    train_on_inputs: bool = Field(False, description="Also train on prompt tokens, not only the assistant's.")
    chat_template: str | None = Field(
        None, description="Chat template to render with instead of the tokenizer's own: a name (chatml, llama-3, "
        "llama-2, mistral, gemma, phi-3, user-assistant, dialogpt) or a Jinja file. Saved with the prepared data's "
        "tokenizer, so training and serving see the same."
    )
    strict: bool = Field(True, description="Stop on bad records (listing them); else skip them to a rejects file.")
    dedupe: bool = Field(True, description="Drop exact duplicate records.")
    max_records: int | None = Field(None, ge=1, description="Read at most this many records per split.")
    split: SplitConfig = Field(default_factory=SplitConfig)

    @model_validator(mode="before")
    @classmethod
    def _path_as_list(cls, data: Any) -> Any:
        for key in ("path", "validation_path", "test_path"):
            if isinstance(data, dict) and isinstance(data.get(key), str):
                data = {**data, key: [data[key]]}
        return data

    @model_validator(mode="after")
    def _one_way_to_split(self) -> DataConfig:
        if self.split.column and (self.validation_path or self.test_path):
            raise ValueError("data.split.column names each record's split; it cannot be combined with "
                             "data.validation_path or data.test_path (files per split): use one or the other")
        return self

    def split_files(self) -> dict[str, list[str]]:
        """The splits given their own files (validation, test), each mapped to its inputs."""
        return {split: paths for split, paths in (("validation", self.validation_path), ("test", self.test_path))
                if paths}
