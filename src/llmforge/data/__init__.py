"""Data: readers (files), formats (records -> examples), tokenize (labels), splits (made and read), and
`prepare`, the prepare stage."""
