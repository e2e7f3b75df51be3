"""Metrics, scores, ranking and evaluation runs for the IUGC challenges."""
