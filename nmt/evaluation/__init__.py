"""Scores (sacrebleu), figures, decoding and scoring a test set, significance, comparisons."""
