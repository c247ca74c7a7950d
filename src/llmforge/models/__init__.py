"""Models and tokenizers: load from a hub id, a local directory or a run directory; build demo models."""

from llmforge.models.loader import load_model, load_tokenizer
from llmforge.models.reference import resolve_model

__all__ = ["load_model", "load_tokenizer", "resolve_model"]
