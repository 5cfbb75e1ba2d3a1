"""Training and evaluation data: files, record formats, sources, tokenization."""
