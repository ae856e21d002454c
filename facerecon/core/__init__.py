"""The bottom layer: errors, plugin kinds, hookspecs, the registry, run contexts, specs,
schedules and the cache; no TensorFlow."""
