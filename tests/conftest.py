"""Shared fixtures: the tiny model registered in code, an isolated MLflow store."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from facerecon import hookimpl
from facerecon.core.registry import failures, plugin_manager

from . import tiny_model
from .entry_points import ROOT, plugin_site


@pytest.fixture(autouse=True)
def tiny() -> None:
    """The tiny test model, registered in code in whatever plugin manager is current."""
    pm = plugin_manager()
    if not pm.is_registered(tiny_model):
        pm.register(tiny_model, name="tests.tiny")


class CalibratedTiny(tiny_model.TinyModel):
    """The tiny network with calibrated thresholds (a test may set its own): it can tell
    strangers, and would be a default judge, so it is registered only on request."""

    name = "tiny-calibrated"
    thresholds = {"1e-2": 0.99, "1e-3": 0.995}


class _Calibrated:
    @hookimpl
    def register_models(self, register):
        register(CalibratedTiny)


@pytest.fixture
def calibrated():
    """``CalibratedTiny``, registered for the test."""
    pm = plugin_manager()
    pm.register(_Calibrated(), name="tests.calibrated")
    yield CalibratedTiny
    pm.unregister(name="tests.calibrated")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh sqlite MLflow store; returns its URI."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture
def plugins_on_path(tmp_path, monkeypatch):
    """Test plugins visible to this process (a fresh plugin manager) and to child processes
    (local workers, Ray's), which inherit this environment."""
    site = plugin_site(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
    plugin_manager.cache_clear()
    yield site
    monkeypatch.undo()
    plugin_manager.cache_clear()
    failures.clear()
