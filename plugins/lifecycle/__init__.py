"""Plugins on the run's lifecycle hooks."""
