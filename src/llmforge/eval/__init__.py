"""The eval stage: score a model (any runtime) on a prepared split (`runner.evaluate`), with answer metrics, a
general-ability probe, functional pass rates and lm-eval tasks. The metrics themselves live in `llmforge.metrics`."""
