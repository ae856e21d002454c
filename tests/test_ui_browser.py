"""The MLflow comparison of reconstructions, end to end in a real browser.

Two tiny-model runs are logged into a fresh store, `facerecon ui` serves it on a loopback
port, and Playwright drives Debian's chromium (`/usr/bin/chromium`, no browser download)
through the three places the README promises: a run's metrics tab (image card with a step
slider), the experiment's chart view (both runs' images under one slider) and the
compare-runs page (`final.png` side by side). The same artifacts are checked over REST.

Without chromium or playwright the browser tests skip, except under CI=true, where they
fail: `.ci/run` installs chromium and the `test` extra installs playwright.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from facerecon import api
from facerecon.core.registry import plugin_manager
from facerecon.engine.validation import validate
from facerecon.tracking import runs
from facerecon.tracking import store as tracking
from facerecon.tracking.store import TRAINING_VIEW

from . import tiny_model
from .servers import Server, free_port, serving

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1920, "height": 1200}  # narrower, the compare page's previews overlap its tree
TIMEOUT_MS = 60_000
STEPS, IMAGE_EVERY = 5, 2
IMAGE_STEPS = [0, 2, 4]  # every IMAGE_EVERY steps, and the last step
RUNS = (("browser-a", 1), ("browser-b", 2))

STEP_IMAGES = "img[src*='get-artifact'][src*='reconstruction']"
FINAL_NODE = "[data-testid=artifact-tree-node][artifact-name='final.png']"
SEARCH_CHARTS = "Search metric charts"

# (selector) -> {run_id: step} of the step images that have loaded.
LOADED_STEPS = """sel => Object.fromEntries(
    [...document.querySelectorAll(sel)]
        .filter(i => i.complete && i.naturalWidth > 0)
        .map(i => {
            const url = new URL(i.src);
            const m = url.searchParams.get('path').match(/\\+step\\+(\\d+)\\+/);
            return [url.searchParams.get('run_uuid'), m ? Number(m[1]) : null];
        }))"""
# ([selector, {run_id: step}]) -> whether every run shows that step, loaded.
SHOWS_STEPS = (
    "([sel, want]) => { const got = (" + LOADED_STEPS + ")(sel);"
    " return Object.entries(want).every(([run, step]) => got[run] === step); }"
)
# ([width, height]) -> distinct blob images of that size that have loaded and are displayed
# (each preview also holds a hidden 0x0 copy with the same src).
SHOWN_BLOBS = """([w, h]) => [...new Set(
    [...document.querySelectorAll('img[src^="blob:"]')]
        .filter(i => i.complete && i.naturalWidth === w && i.naturalHeight === h)
        .filter(i => i.getBoundingClientRect().width > 0)
        .map(i => i.src))]"""


@dataclass
class Served(Server):
    experiment_id: str = ""
    run_ids: list[str] = field(default_factory=list)
    folder: Path = Path(".")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])


def _image_step(path: str) -> int:
    return int(path.split("+step+")[1].split("+")[0])


def _spec(name: str, seed: int) -> dict:
    return {
        "name": "ui-browser",
        "model": {"name": "tiny"},
        "targets": [{"image": "builtin:astronaut"}],
        "solver": {"name": "adam", "steps": STEPS, "lr": 0.05},
        "seed": seed,
        "tracking": {"experiment": "ui-browser", "image_every": IMAGE_EVERY, "run_name": name},
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two finished runs in a fresh sqlite store, and `facerecon ui` serving it."""
    folder = tmp_path_factory.mktemp("ui-browser")
    uri = f"sqlite:///{folder}/mlflow.db"
    pm = plugin_manager()
    if not pm.is_registered(tiny_model):
        pm.register(tiny_model, name="tests.tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(folder)
        # the store exists before the server starts, so it boots while the runs are logged;
        # the experiment is made as facerecon makes it (tagged for the model-training view)
        experiment_id = runs.experiment_id(tracking.client(uri), "ui-browser")
        port = free_port()
        cmd = [sys.executable, "-m", "facerecon.cli", "ui", "--port", str(port)]
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        with serving(cmd, port, cwd=folder, env=env) as server:
            run_ids = [api.run(validate(_spec(name, seed))).run_id for name, seed in RUNS]
            server.wait_healthy()
            yield Served(server.base, server.process, server.log, experiment_id, run_ids, folder)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{reason}; under CI=true the browser test must run (.ci/run installs Debian's "
            "chromium, `pip install -e '.[test]'` installs playwright)",
            pytrace=False,
        )
    pytest.skip(f"{reason}; install Debian's chromium and `pip install playwright` to run it")


@pytest.fixture(scope="module")
def browser_context():
    """One chromium for the whole file, one context (and its cache) for every page."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no chromium at {CHROMIUM}")
    if importlib.util.find_spec("playwright") is None:
        _unavailable("the Python package playwright is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()
            browser.close()


@pytest.fixture
def page(browser_context, served, request, tmp_path):
    """A fresh page; on failure a screenshot lands in the test's tmp_path."""
    failed_before = request.session.testsfailed
    page = browser_context.new_page()
    yield page
    try:
        if request.session.testsfailed > failed_before:
            shot = tmp_path / f"{request.node.name}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failing page: {shot} ({page.url})")
    finally:
        page.close()


def _classic(served: Served, route: str) -> str:
    """The classic (not GenAI) view of a route under the experiment."""
    sep = "&" if "?" in route else "?"
    route = f"/experiments/{served.experiment_id}{route}{sep}workflowType=machine_learning"
    return f"{served.base}/#{route}"


def _show_image_cards(page) -> None:
    """Image cards render lazily, when scrolled into view: filter the charts down to them."""
    page.get_by_placeholder(SEARCH_CHARTS).fill("reconstruction")


def test_rest_serves_the_step_images_final_png_and_metrics(served):
    for run_id in served.run_ids:
        run = served.get_json("/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
        assert run["info"]["status"] == "FINISHED"
        listing = served.get_json("/api/2.0/mlflow/artifacts/list", run_id=run_id, path="images")
        paths = [f["path"] for f in listing["files"]]
        assert all(p.startswith("images/reconstruction+step+") for p in paths), paths
        assert sorted({_image_step(p) for p in paths}) == IMAGE_STEPS
        # each step: the PNG and the UI's compressed thumbnail
        assert sum(p.endswith("+compressed.webp") for p in paths) == len(IMAGE_STEPS), paths
        root = served.get_json("/api/2.0/mlflow/artifacts/list", run_id=run_id)
        assert "final.png" in {f["path"] for f in root["files"]}
        width, height = _png_size(served.get("/get-artifact", path="final.png", run_uuid=run_id))
        assert width > 2 * height  # one row: target | guide | reconstruction
        for key in ("loss/total", "cosine"):
            history = served.get_json(
                "/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key
            )["metrics"]
            assert sorted(m["step"] for m in history) == list(range(STEPS)), key
    names = {
        served.get_json("/api/2.0/mlflow/runs/get", run_id=r)["run"]["info"]["run_name"]
        for r in served.run_ids
    }
    assert names == {name for name, _ in RUNS}
    experiment = served.get_json(
        "/api/2.0/mlflow/experiments/get", experiment_id=served.experiment_id
    )
    tags = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_printed_experiment_url_opens_in_the_model_training_view(page, served):
    # MLflow 3.17.2's UI ignores the experiment's kind tag (its GenAI / Model-training
    # switch is always on and starts at GenAI): the URL `facerecon ui` prints picks the view
    printed = served.log.read_text().split("ui-browser: ", 1)[1].split()[0]
    assert printed == f"{served.base}/#/experiments/{served.experiment_id}?{TRAINING_VIEW}"
    page.goto(printed)
    for name, _ in RUNS:
        page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=TIMEOUT_MS)
    # the README's other way: pick "Model training" once; the UI remembers it
    page.goto(f"{served.base}/#/experiments")
    page.get_by_text("Model training", exact=True).first.click()
    page.goto(f"{served.base}/#/experiments/{served.experiment_id}")
    for name, _ in RUNS:
        page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=TIMEOUT_MS)


def test_run_metrics_tab_shows_the_image_and_its_step_slider(page, served):
    run_id = served.run_ids[0]
    page.goto(_classic(served, f"/runs/{run_id}/model-metrics"))
    _show_image_cards(page)
    page.wait_for_function(SHOWS_STEPS, arg=[STEP_IMAGES, {run_id: 0}], timeout=TIMEOUT_MS)
    slider = page.get_by_role("slider")
    assert slider.count() == 1
    assert slider.get_attribute("aria-valuemax") == str(IMAGE_STEPS[-1])
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        SHOWS_STEPS, arg=[STEP_IMAGES, {run_id: IMAGE_STEPS[1]}], timeout=TIMEOUT_MS
    )
    assert page.evaluate(LOADED_STEPS, STEP_IMAGES) == {run_id: IMAGE_STEPS[1]}


def test_chart_view_shows_both_runs_images_under_one_slider(page, served):
    page.goto(_classic(served, "/runs?compareRunsMode=CHART"))
    _show_image_cards(page)
    first = dict.fromkeys(served.run_ids, 0)
    page.wait_for_function(SHOWS_STEPS, arg=[STEP_IMAGES, first], timeout=TIMEOUT_MS)
    slider = page.get_by_role("slider")
    assert slider.count() == 1  # one slider for both runs' images
    slider.focus()
    page.keyboard.press("ArrowRight")
    second = dict.fromkeys(served.run_ids, IMAGE_STEPS[1])
    page.wait_for_function(SHOWS_STEPS, arg=[STEP_IMAGES, second], timeout=TIMEOUT_MS)


def test_compare_page_shows_both_runs_final_png(page, served):
    size = list(
        _png_size(served.get("/get-artifact", path="final.png", run_uuid=served.run_ids[0]))
    )
    fetched: dict[str, int] = {}

    def record(response):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(response.url).query)
        if "/get-artifact" in response.url and query.get("path") == ["final.png"]:
            fetched[query["run_uuid"][0]] = response.status

    page.on("response", record)
    runs = urllib.parse.quote(json.dumps(served.run_ids))
    experiments = urllib.parse.quote(json.dumps([served.experiment_id]))
    page.goto(f"{served.base}/#/compare-runs?runs={runs}&experiments={experiments}")
    node = page.locator(FINAL_NODE)
    node.first.wait_for(state="visible", timeout=TIMEOUT_MS)
    node.first.scroll_into_view_if_needed()
    node.first.click()
    page.wait_for_function(
        f"size => ({SHOWN_BLOBS})(size).length >= {len(served.run_ids)}",
        arg=size,
        timeout=TIMEOUT_MS,
    )
    assert len(page.evaluate(SHOWN_BLOBS, size)) == len(served.run_ids)
    assert fetched == dict.fromkeys(served.run_ids, 200)
