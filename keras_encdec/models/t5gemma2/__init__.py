"""T5Gemma 2: the Gemma 3 based encoder-decoder family."""
