"""Image priors added to the loss."""
