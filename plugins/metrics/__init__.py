"""Embedding distances."""
