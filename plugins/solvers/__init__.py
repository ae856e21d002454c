"""Solvers: iterative ones and the feed-forward generator."""
