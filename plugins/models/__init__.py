"""Face models."""
