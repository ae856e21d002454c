"""The MLflow store: its URI, the pre-run check, authentication, the UI server."""


def __getattr__(name: str):
    # ``facerecon.tracking`` was the module ``store`` until it became a package: its names stay
    # reachable from here for one release
    import importlib

    try:
        return getattr(importlib.import_module("facerecon.tracking.store"), name)
    except AttributeError:
        raise AttributeError(f"module 'facerecon.tracking' has no attribute {name!r}") from None
