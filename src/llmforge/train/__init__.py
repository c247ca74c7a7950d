"""The train stage: one recipe (`runner.train`) for every method (full, LoRA, DoRA, QLoRA, distillation)."""
