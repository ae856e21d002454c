"""facerecon's built-in plugins, registered through the "facerecon" entry-point group."""
