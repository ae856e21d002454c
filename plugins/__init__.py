"""facerecon's built-in plugins, registered through the "facerecon" entry-point group."""

import facerecon  # noqa: F401  (serves the import paths of plugins that moved, for a release)
