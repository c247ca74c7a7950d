"""Retrieval-augmented generation: chunk documents, embed them with a local encoder, index them with FAISS
(`build_index`), and retrieve passages for a query (`RagIndex.search`); serve and eval consume it."""

from llmforge.rag.index import Hit, RagIndex, RagIndexConfig, build_index, load_index
from llmforge.rag.prompt import context_block, last_user_text, sources_header, with_passages

__all__ = ["Hit", "RagIndex", "RagIndexConfig", "build_index", "context_block", "last_user_text", "load_index",
           "sources_header", "with_passages"]
