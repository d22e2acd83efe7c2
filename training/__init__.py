"""Training, evaluation and reports for the segserve models."""
