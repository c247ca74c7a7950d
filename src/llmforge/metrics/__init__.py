"""Metrics every stage reports, shared below the stages: `tokens` (NLL, perplexity, KL, top-1 agreement: pure
tensor functions), `text` (ROUGE, exact match, syntax validity, repetition) and `score` (the perplexity of any
model runtime over a prepared split)."""
