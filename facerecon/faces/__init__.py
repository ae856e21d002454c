"""Face material: photos and built-ins, labelled collections, embedding files, nearest
strangers, image grids."""


def __getattr__(name: str):
    # ``facerecon.faces`` was the module ``photos`` until it became a package: its names stay
    # reachable from here for one release
    import importlib

    try:
        return getattr(importlib.import_module("facerecon.faces.photos"), name)
    except AttributeError:
        raise AttributeError(f"module 'facerecon.faces' has no attribute {name!r}") from None
