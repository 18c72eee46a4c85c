"""`workbench export fiftyone` and `workbench app` from the command line, and the App in headless
Chromium: the grid shows every sample and the sidebar lists the workbench's fields, for a
two-stage run and, served by the same App, each single-stage run (``conftest.dense_exports``).

The screenshot and the page's DOM are saved under ``test-output/`` at the repository root; the
screenshot is the one in the README (``docs/fiftyone_app.png``), taken as a returning user sees the
App, without its first-run Enterprise popover (``chromium_page``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chromium_page import capture_app
from export_support import DENSE_METHODS, TEST_OUTPUT, listening_addresses, stop_process

from workbench.export.app import dataset_url
from workbench.export.database import free_port
from workbench.methods import get_method

NAME = "wb-app-test"
#: The sidebar lists the ground truth, the evaluation counts and every field KL-RPN declares
#: for the App (its sigma heatmap ``offset_sigma`` once its ``METHOD`` lists its map views).
FIELDS = ("ground_truth", *[v.field for v in get_method("kl_rpn").record_views if v.app and v.kind != "attribute"],
          "eval_tp", "eval_fp", "eval_fn")
NUM_SAMPLES = 4


def workbench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def wait_for_line(log: Path, pattern: str, process: subprocess.Popen, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"`workbench app` printed no {pattern!r}; its output:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def app(fiftyone_db, kl_run, tmp_path_factory):
    """The CLI-exported dataset served by `workbench app`: (url, port, process, export output)."""
    exported = workbench("export", "fiftyone", "--run", str(kl_run), "--name", NAME, "-q")
    assert exported.returncode == 0, exported.stderr[-3000:]
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "workbench", "app", "--name", NAME, "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        match = wait_for_line(log, r"at (http://\S+) \(Ctrl-C", process, timeout=180)
        yield match.group(1), port, process, exported.stdout
    finally:
        stop_process(process, signal.SIGINT, timeout=30)


def test_export_command_reports_the_dataset(app):
    _, _, _, output = app
    assert f"FiftyOne dataset '{NAME}': 4 samples" in output
    assert f"workbench app --name {NAME}" in output


def test_app_is_bound_to_loopback_and_prints_the_dataset_url(app):
    url, port, _, _ = app
    assert url == f"http://127.0.0.1:{port}/datasets/{NAME}"
    assert listening_addresses(port) == {"127.0.0.1"}


def _loaded_page(url: str, attempts: int = 4, stem: str = "fiftyone_app"):
    """DOM and screenshot of the App once every grid tile is drawn (the first loads can be slow)."""
    TEST_OUTPUT.mkdir(exist_ok=True)
    page = None
    for _ in range(attempts):
        page = capture_app(url, TEST_OUTPUT / f"{stem}.png", min_tiles=NUM_SAMPLES)
        if page.drawn_tiles >= NUM_SAMPLES:
            break
    (TEST_OUTPUT / f"{stem}_dom.html").write_text(page.dom)
    return page


def test_the_app_renders_the_grid_and_lists_the_fields(app):
    url, _, _, _ = app
    page = _loaded_page(url)
    print(f"\nFiftyOne App screenshot: {page.screenshot}")
    assert 'data-cy="fo-grid"' in page.dom, "the App did not render its sample grid"
    assert "Accelerate your workflow" not in page.dom, "the Enterprise popover covers the App"
    assert page.tiles == NUM_SAMPLES and page.drawn_tiles == NUM_SAMPLES, "the grid did not finish loading"
    count = re.search(r'data-cy="entry-count-part"[^>]*>\s*([\d,]+)\s*</span>\s*samples', page.dom)
    assert count is not None and count.group(1) == str(NUM_SAMPLES)
    for field in FIELDS:
        assert f'data-cy="checkbox-{field}"' in page.dom, f"the sidebar does not list {field}"
    assert page.screenshot.is_file(), page.stderr[-2000:]
    from PIL import Image

    with Image.open(page.screenshot) as image:
        assert image.size == (1400, 900)
        colors = image.convert("RGB").resize((140, 90)).getcolors(maxcolors=140 * 90)
    assert colors is not None and len(colors) > 50  # a rendered page, not a blank one


@pytest.mark.parametrize("method", DENSE_METHODS)
def test_the_app_lists_a_single_stage_runs_detections_and_suppressed_boxes(app, dense_exports, method):
    """The fields come from the method's declaration (its detections and the boxes its final NMS
    suppressed), as for any run; a single-stage detector has no proposals."""
    _, port, _, _ = app
    _, name, _ = dense_exports[method]
    page = _loaded_page(dataset_url(name, port=port), stem=f"fiftyone_app_{method}")
    assert page.tiles == NUM_SAMPLES and page.drawn_tiles == NUM_SAMPLES, "the grid did not finish loading"
    declared = [v.field for v in get_method(method).record_views if v.app and v.kind != "attribute"]
    assert {"predictions", "suppressed"} <= set(declared)
    for field in ("ground_truth", *declared, "eval_tp", "eval_fp", "eval_fn"):
        assert f'data-cy="checkbox-{field}"' in page.dom, f"the sidebar of {name} does not list {field}"
    assert 'data-cy="checkbox-proposals"' not in page.dom


def test_the_app_lists_both_runs_of_a_two_run_dataset(app, kl_run, frcnn_run):
    """One dataset of two runs (``workbench export fiftyone --run A --run B``): the sidebar lists
    each run's declared fields under its name and its evaluation counts, and the ground truth."""
    from workbench.export.fiftyone import export_runs, run_names

    _, port, _, _ = app
    name = "wb-app-two-runs"
    export_runs([kl_run, frcnn_run], name=name)
    page = _loaded_page(dataset_url(name, port=port), stem="fiftyone_app_two_runs")
    assert page.tiles == NUM_SAMPLES and page.drawn_tiles == NUM_SAMPLES, "the grid did not finish loading"
    expected = ["ground_truth"]
    for run, method in zip(run_names([kl_run, frcnn_run]), ("kl_rpn", "faster_rcnn")):
        declared = [v.field for v in get_method(method).record_views if v.app and v.kind != "attribute"]
        expected += [f"{run}_{f}" for f in declared] + [f"{run}_eval_{c}" for c in ("tp", "fp", "fn")]
    for field in expected:
        assert f'data-cy="checkbox-{field}"' in page.dom, f"the sidebar of {name} does not list {field}"
    assert 'data-cy="checkbox-predictions"' not in page.dom


def test_ctrl_c_stops_the_app_and_its_server(app):
    _, port, process, _ = app
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    while listening_addresses(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert listening_addresses(port) == set()


def test_app_names_the_dataset_of_a_run_or_asks_for_one(frcnn_run):
    from workbench.errors import WorkbenchError
    from workbench.export.app import dataset_url, resolve_dataset_name

    assert resolve_dataset_name(None, frcnn_run, None) == f"workbench-{frcnn_run.name}-val"
    assert resolve_dataset_name("mine", None, None) == "mine"
    with pytest.raises(WorkbenchError, match="either --name"):
        resolve_dataset_name(None, None, None)
    with pytest.raises(WorkbenchError, match="either --name"):
        resolve_dataset_name("mine", frcnn_run, None)
    assert dataset_url("a b", "0.0.0.0", 8080) == "http://127.0.0.1:8080/datasets/a%20b"
