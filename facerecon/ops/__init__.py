"""Tensor operations shared by the host and plugins: warps, pyramids, distances, the model's
one forward pass."""
