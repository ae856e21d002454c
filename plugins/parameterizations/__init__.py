"""Built-in image parameterizations (one module each)."""
