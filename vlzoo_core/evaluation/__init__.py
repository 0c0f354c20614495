"""Evaluation: retrieval metrics."""
