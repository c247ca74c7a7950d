"""Models in every form they take: resolve a reference once (`reference.ModelRef`), load it (`loader`), its
formats and runtimes (int8, ONNX, llama.cpp), what it weighs (`footprint`), presets and pulls, tiny test models."""

from llmforge.models.loader import load_model, load_tokenizer
from llmforge.models.reference import resolve_model

__all__ = ["load_model", "load_tokenizer", "resolve_model"]
