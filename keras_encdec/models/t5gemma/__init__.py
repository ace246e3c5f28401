"""T5Gemma: encoder-decoder Gemma 2 (arXiv 2504.06225)."""
