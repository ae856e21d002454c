"""Running specs: validation, the objective, the runner, sweeps, executors."""
