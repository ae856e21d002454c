"""Plugin loading: built-ins and third parties alike come in through the "facerecon" group."""

from __future__ import annotations

import importlib.metadata
import warnings
from dataclasses import dataclass, field
from functools import cache

import pluggy

from facerecon.core import hookspecs
from facerecon.core.errors import FaceReconError
from facerecon.core.kinds import Plugin, Solver

ENTRY_POINT_GROUP = "facerecon"


@dataclass(frozen=True)
class Registered:
    """One class a plugin registered, with where it came from."""

    kind: str
    cls: type[Plugin]
    plugin: str  # entry-point name (or the module name for plugins registered in code)
    distribution: str


@dataclass
class Registry:
    """Every registered class by kind and name."""

    by_kind: dict[str, dict[str, Registered]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> type[Plugin]:
        return self.by_kind[kind][name].cls

    def names(self, kind: str) -> list[str]:
        return sorted(self.by_kind.get(kind, {}))

    def generator_solver(self) -> type[Solver]:
        """The solver that trains (and so loads and applies) one-pass generators."""
        for name in self.names("solver"):
            cls = self.get("solver", name)
            if getattr(cls, "trains_generators", False):
                return cls
        raise FaceReconError("no installed solver trains generators (the built-in: feedforward)")


class PluginLoadWarning(UserWarning):
    """A plugin package is installed but could not be imported."""


def _load_entry_points(pm: pluggy.PluginManager) -> dict[str, str]:
    """Import every "facerecon" entry point; returns plugin name -> distribution name.

    A plugin that fails to import is skipped with a warning naming it and its
    distribution (and remembered in :data:`failures`), so one broken package does not
    take every other plugin down with it.
    """
    origins: dict[str, str] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            module = ep.load()
        except Exception as exc:
            message = (
                f"plugin {ep.name!r} from distribution {dist!r} failed to import "
                f"({ep.value}): {type(exc).__name__}: {exc}"
            )
            failures[ep.name] = message
            warnings.warn(message, PluginLoadWarning, stacklevel=2)
            continue
        pm.register(module, name=ep.name)
        origins[ep.name] = dist
    return origins


@cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every installed plugin loaded."""
    pm = pluggy.PluginManager("facerecon")
    pm.add_hookspecs(hookspecs)
    _origins.update(_load_entry_points(pm))
    return pm


_origins: dict[str, str] = {}
#: plugin name -> the one-line reason it could not be imported
failures: dict[str, str] = {}


def _registrar(table: dict[str, Registered], kind: str, plugin: str):
    """The ``register`` callable handed to one plugin's ``register_<kind>`` hook."""

    def register(cls: type[Plugin]) -> None:
        entry = Registered(kind, cls, plugin, _origins.get(plugin, "(registered in code)"))
        if cls.name in table:
            first = table[cls.name]
            raise FaceReconError(
                f"{kind} {cls.name!r} is registered twice: by plugin {first.plugin!r} "
                f"({first.distribution}) and by plugin {plugin!r} ({entry.distribution})"
            )
        table[cls.name] = entry

    return register


def registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Collect every (kind, name) -> class pair; a name registered twice is an error."""
    pm = pm or plugin_manager()
    reg = Registry()
    for hook_name, kind in hookspecs.HOOK_KINDS.items():
        table = reg.by_kind.setdefault(kind, {})
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            impl.function(register=_registrar(table, kind, plugin_name))
    return reg
