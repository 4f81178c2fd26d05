"""Corpora → cleaned pairs → SentencePiece ids → length-bucketed batches."""
