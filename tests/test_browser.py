"""In a real browser: JupyterLab runs notebook 07 and headless Chromium moves the query slider; the
exported report opens offline with every figure drawn.

Playwright for Python drives Debian's Chromium (`apt-get install chromium`), launched by its path; the
page may only talk to the JupyterLab server on 127.0.0.1, every other request is aborted. A screenshot
of the page after the move is kept in build/test-artifacts/explorer.png (a failure leaves
explorer-failure.png there).

Covers: JupyterLab (with the project's overrides.json: no news or update checks) runs notebook 07 on a
trained smoke run, and moving the "query col" slider redraws the attention maps; the exported report.html
opens with no network and every figure drawn. Without Chromium both tests skip, saying so.
"""
import json
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
from conftest import ROOT, chromium, open_offline, train_smoke_runs
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from attnlib.report.export import CHROMIUM_FLAGS, export_report

ARTIFACTS = ROOT / "build" / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a folder with notebook 07 parameterised for a trained smoke run."""
    overrides = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert overrides.exists() and json.loads(overrides.read_text()) == json.loads(
        (ROOT / "jupyter" / "overrides.json").read_text()), "JupyterLab settings not installed: run `make lab-settings`"
    results_dir, params_dir, served = tmp_path / "results", tmp_path / "params", tmp_path / "served"
    train_smoke_runs(results_dir, params_dir, {"02_quadratic": {"models": ["sa_quadratic"]}})
    viz_params = "07_visualizations.yaml"  # the notebook reads its own file from the same folder
    (params_dir / "smoke" / viz_params).write_text((ROOT / "params" / "smoke" / viz_params).read_text())
    served.mkdir()
    nb = parameterize_notebook(load_notebook_node(str(ROOT / "notebooks" / "07_visualizations.ipynb")), dict(
        profile="smoke", results_dir=str(results_dir), params_dir=str(params_dir), data_root=str(ROOT / "data"),
        experiments=["02_quadratic"], average_images=8, device="cpu", query_row=4, query_col=4))
    nbformat.write(nb, served / "explorer.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "user-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "PYTHONPATH": str(ROOT)}
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "lab", "--ip", "127.0.0.1", "--port", str(port),
                             "--no-browser", "--allow-root", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={served}"], stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=served)
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "lab.log").read_text()[-3000:]
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.notebook
def test_moving_the_query_slider_in_jupyterlab_redraws_the_attention_maps(lab):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    blocked = []

    def only_localhost(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.route("**/*", only_localhost)
            page.goto(lab)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            # run the cells only once the kernel is up and idle, or JupyterLab may not queue them
            page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).wait_for(timeout=90_000)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            status = page.locator(".attention-status")
            status.wait_for(timeout=300_000)
            # textContent: JupyterLab skips rendering cells scrolled out of view, whose innerText is then empty
            page.wait_for_function("document.querySelector('.attention-status').textContent.includes('query pixel')")
            # the explorer comes first and shows while the figures' cells still run: wait for the last one's output
            page.get_by_text(re.compile(r"wrote .*explorer\.html")).wait_for(timeout=300_000)
            status.scroll_into_view_if_needed()
            before = status.text_content()
            picture = page.locator("img.attention-maps")
            picture.scroll_into_view_if_needed()
            before_png = picture.screenshot()
            assert "query pixel (4, 4) = token (2, 2)" in before, before

            slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="query col"))
            handle = slider.locator(".noUi-handle")
            handle.scroll_into_view_if_needed()
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] - 60, box["y"] + box["height"] / 2, steps=8)
            page.mouse.up()
            col = int(slider.locator(".widget-readout").inner_text())
            assert col < 4, col
            # every drag step is a round trip to the kernel: wait for the one of the slider's final value
            page.wait_for_function("c => document.querySelector('.attention-status').textContent"
                                   ".includes(`query pixel (4, ${c})`)", arg=col, timeout=30_000)
            page.wait_for_timeout(300)  # the picture is set in the same update as the status
            after = status.text_content()
            page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=True)
            assert f"query pixel (4, {col}) = token (2, {col // 2})" in after, (col, after)
            assert picture.screenshot() != before_png  # the maps were redrawn for the new query
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "explorer-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    print(f"aborted {len(blocked)} requests to other hosts")


def test_the_report_opens_offline_with_every_figure_drawn(tmp_path):
    """report.html loads nothing from outside the file: every request but file:// and data: is aborted and
    counted, and each figure must have been decoded. The committed quick report is exported afresh."""
    chromium()
    export_report(ROOT / "results" / "quick" / "notebooks" / "08_report.ipynb", tmp_path)
    figures = []
    outside, errors = open_offline(tmp_path / "report.html", lambda page: figures.extend(
        page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth])")))
    assert outside == [] and errors == []
    assert len(figures) >= 10 and all(done and width > 0 for done, width in figures), figures
