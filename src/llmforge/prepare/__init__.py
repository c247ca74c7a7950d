"""The prepare stage: raw records -> tokenized, labelled, split `datasets` directories (`runner.prepare`)."""
