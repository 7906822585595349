"""The MLflow UI in a real headless Chromium over a finished sweep: the parent run lists its children, plots load,
the sweep is a training run with who ran it, and the compare page shows each param once.

Debian's chromium driven by Playwright's Python package (`.ci/run` installs both; Playwright's own
browser download is never used). The UI is `mlflow ui` on a free loopback port, stopped by its PID.
"""

import base64
import getpass
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import NN_RUN
from servers import BIN, free_port, process_group

from runner.tracking import record

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
WAIT_MS = 60_000  # for any one element or response; the UI's first page load compiles a large bundle
SWEEP = ["-m", "model.hidden=[3],[5]", "train.iterations=200", "train.log_every=50", "tracking.log_plots=true"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# in the page: the bytes behind an <img>'s src (the UI shows artifacts from blob: URLs), as base64
SHOWN_BYTES = """async img => {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let text = "";
    for (const byte of bytes) text += String.fromCharCode(byte);
    return btoa(text);
}"""


def browser_missing():
    """Why the browser test cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: .ci/run installs Debian's chromium (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A real `nn-run -m` sweep in a fresh folder with the default store; its end-of-sweep comparison logged."""
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("ui-sweep")
    done = subprocess.run([*NN_RUN, *SWEEP], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("nn-runner").experiment_id
    runs = client.search_runs([experiment_id])
    (parent,) = [r for r in runs if record.SWEEP_ID_TAG in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    # the sweep's last line: the experiment's runs page, on the port `mlflow ui` serves by default
    printed = done.stdout.splitlines()[-1]  # each job prints its own run's lines too; the sweep's come last
    assert printed.startswith(f"runs page: http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning (serve it with: ")
    page_path = printed.split()[2].removeprefix("http://127.0.0.1:5000")
    return folder, uri, experiment_id, parent, children, page_path


@pytest.fixture(scope="module")
def mlflow_ui(finished_sweep):
    """`mlflow ui` over the sweep's store on a free loopback port; yields its URL; stopped by its PID."""
    folder, uri = finished_sweep[:2]
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [str(BIN / "mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", url.rsplit(":", 1)[1], "--workers", "1"]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with process_group(cmd, folder / "ui.log", f"{url}/health", env=env, cwd=folder):
        yield url


@pytest.fixture
def page(mlflow_ui, tmp_path):
    """A Chromium page that may load only from 127.0.0.1 (nothing off this machine)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            def local_only(route):
                host = urlparse(route.request.url).hostname
                if host in ("127.0.0.1", None):  # None: blob: and data: URLs of the page itself
                    route.continue_()
                else:
                    route.abort()

            context.route("**/*", local_only)
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


def run_link(page, experiment_id, run_id):
    return page.locator(f'a[href="#/experiments/{experiment_id}/runs/{run_id}"]')


def open_artifact(page, url, experiment_id, run_id, path, screenshot):
    """Open `path` in the run's artifact view; returns the bytes of the image the UI shows, and its width."""
    from playwright.sync_api import expect

    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/artifacts")
    *folders, name = path.split("/")
    for folder in folders:  # unfold the tree down to the file
        page.get_by_text(folder, exact=True).first.click()
    wanted = f"path={path.replace('/', '%2F')}"
    with page.expect_response(lambda r: "get-artifact" in r.url and wanted in r.url and run_id in r.url) as fetched:
        page.get_by_text(name, exact=True).first.click()
    response = fetched.value
    assert response.status == 200 and response.headers["content-type"] == "image/png"
    image = page.locator(f'img[alt="{path}"]').first  # the UI names the image by its artifact path
    expect(image).to_be_visible(timeout=WAIT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    page.screenshot(path=str(screenshot))
    shown = image.evaluate(SHOWN_BYTES)
    return base64.b64decode(shown), image.evaluate("img => img.naturalWidth")


@pytest.mark.browser
@pytest.mark.slow
def test_ui_nests_the_children_under_the_parent_and_shows_the_plots(finished_sweep, mlflow_ui, page, tmp_path):
    from mlflow import MlflowClient
    from PIL import Image
    from playwright.sync_api import expect

    folder, uri, experiment_id, parent, children, page_path = finished_sweep
    url = mlflow_ui

    # the runs table at the page the sweep printed: one row for the sweep; its children appear under it expanded
    page.goto(f"{url}{page_path}")
    parent_link = run_link(page, experiment_id, parent.info.run_id).first
    expect(parent_link).to_have_text("sweep over model.hidden", timeout=WAIT_MS)
    for child in children:
        expect(run_link(page, experiment_id, child.info.run_id)).to_have_count(0)  # folded under the parent
    parent_row = page.locator('[role="row"]', has=parent_link)
    parent_row.locator('button[data-component-id*="runnamecellrenderer"]').first.click()
    for child in children:
        expect(run_link(page, experiment_id, child.info.run_id).first).to_be_visible(timeout=WAIT_MS)
    page.screenshot(path=str(tmp_path / "ui_experiment.png"))

    # the parent's comparison plot: the UI fetches the very file the sweep logged, and shows it
    logged = Path(MlflowClient(uri).download_artifacts(parent.info.run_id, record.COMPARISON_PLOT,
                                                  str(tmp_path / "logged")))
    body, width = open_artifact(page, url, experiment_id, parent.info.run_id, record.COMPARISON_PLOT,
                                tmp_path / "ui_comparison.png")
    assert body.startswith(PNG_SIGNATURE) and body == logged.read_bytes()
    with Image.open(logged) as image:
        assert width == image.width

    # a child's own plot, one folder down in its artifact tree
    child = children[0]
    body, width = open_artifact(page, url, experiment_id, child.info.run_id, record.DECISION_BOUNDARY_PLOT,
                                tmp_path / "ui_child_plot.png")
    assert body.startswith(PNG_SIGNATURE) and width > 300


@pytest.mark.browser
@pytest.mark.slow
def test_ui_shows_the_sweep_as_training_runs_created_by_the_user_with_each_param_once(finished_sweep, mlflow_ui, page,
                                                                                       tmp_path):
    from playwright.sync_api import expect

    folder, uri, experiment_id, parent, children, page_path = finished_sweep
    url = mlflow_ui

    # the printed runs page opens in the UI's model-training layout (its "Runs", not the GenAI layout's "Training
    # runs" beside "Evaluation runs"), with the sweep in it
    page.goto(f"{url}{page_path}")
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible(timeout=WAIT_MS)
    expect(run_link(page, experiment_id, parent.info.run_id).first).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("Evaluation runs", exact=True)).to_have_count(0)
    expect(page.get_by_text("Training runs", exact=True)).to_have_count(0)
    page.screenshot(path=str(tmp_path / "ui_training_runs.png"))

    # "Created by" on the parent's and a child's page: the user who ran the sweep (MLflow's context tags)
    for run in (parent, children[0]):
        page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run.info.run_id}")
        created_by = page.get_by_text("Created by", exact=True).first.locator("xpath=..")
        expect(created_by).to_have_text(re.compile(rf"^\s*Created by\s*{re.escape(getpass.getuser())}\s*$"),
                                        timeout=WAIT_MS)
    page.screenshot(path=str(tmp_path / "ui_created_by.png"))

    # the compare page of the children: the swept key once in the params table and once on the plot's axes,
    # never again as MLflow's model-config param (model/hidden)
    ids = json.dumps([child.info.run_id for child in children])
    page.goto(f"{url}/#/compare-runs?runs={ids}&experiments={json.dumps([experiment_id])}")
    expect(page.locator("th").get_by_text("model.hidden", exact=True)).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("svg text").get_by_text("model.hidden", exact=True)).to_have_count(1, timeout=WAIT_MS)
    expect(page.get_by_text("model/hidden")).to_have_count(0)
    expect(page.locator("th").get_by_text("train.lr", exact=True)).to_have_count(1)
    page.screenshot(path=str(tmp_path / "ui_compare.png"), full_page=True)
