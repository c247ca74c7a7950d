"""Data: readers (files), formats (records -> examples), tokenize (labels), prepare (the workflow)."""
