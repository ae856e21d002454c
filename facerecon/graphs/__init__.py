"""Readers of model formats, rebuilt as differentiable TensorFlow graphs."""
