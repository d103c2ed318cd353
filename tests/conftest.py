"""Helpers shared by the tests: driving the notebook runner (python -m attnlib.run), training smoke runs,
and opening a page in headless Chromium with no network."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from attnlib.report.export import CHROMIUM_FLAGS, NO_CHROMIUM, find_chromium

ROOT = Path(__file__).resolve().parent.parent


def run_runner(*args: str) -> subprocess.CompletedProcess:
    """`python -m attnlib.run --profile smoke ARGS...` from the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", "attnlib.run", "--profile", "smoke", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def assert_every_field_injected(executed_notebook: Path, params_cls: type):
    """papermill injected one cell setting every field of params_cls: no notebook default can leak in."""
    executed = json.loads(Path(executed_notebook).read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1
    source = "".join(injected[0]["source"])
    for field in dataclasses.fields(params_cls):
        assert f"{field.name} = " in source, field.name


def train_smoke_runs(results_dir: Path, params_dir: Path, changes: dict[str, dict]) -> None:
    """Train smoke-profile runs into results_dir: for each notebook name, its params/smoke file with
    `changes` applied (per_model kept only for the models left), written under params_dir/smoke/."""
    import yaml

    from attnlib.experiments import params
    from attnlib.experiments import runs as experiment

    (params_dir / "smoke").mkdir(parents=True, exist_ok=True)
    for name, change in changes.items():
        values = {**yaml.safe_load((ROOT / "params" / "smoke" / f"{name}.yaml").read_text()), **change}
        values["per_model"] = {k: v for k, v in values.get("per_model", {}).items() if k in values["models"]}
        (params_dir / "smoke" / f"{name}.yaml").write_text(yaml.safe_dump(values))
        p = params.load_with(params_dir / "smoke" / f"{name}.yaml", {"profile": "smoke", "results_dir": str(results_dir)})
        experiment.run_grid(p, name, progress=False)


def hard_shift_model():
    """A 2-layer quadratic model on 12x12 one-channel images (6x6 tokens) whose 9 heads attend (hard,
    alpha = DEFAULT_ALPHA) to the 9 shifts of a 3x3 kernel."""
    import math

    import torch

    from attnlib.conv_as_attention import DEFAULT_ALPHA, kernel_shifts
    from attnlib.models import create_model

    torch.manual_seed(0)
    model = create_model("sa_quadratic", heads=9, layers=2, hidden=8, ff=8, image_size=12, in_channels=1)
    with torch.no_grad():
        for block in model.layer_blocks():
            block.attn.positional.centers.copy_(kernel_shifts(3).float())
            block.attn.positional.spreads.fill_(math.sqrt(2 * DEFAULT_ALPHA))
    return model


def chromium() -> str:
    """Debian's Chromium, which `make setup` installs as root; without it the browser tests skip, saying why."""
    path = find_chromium()
    if not path:
        pytest.skip(NO_CHROMIUM)
    return path


def open_offline(page_path: Path, check, ready: str | None = None, viewport=(1300, 900)) -> tuple[list, list]:
    """Open a local page in headless Chromium with every request but file:// and data: aborted and counted;
    wait for the JS expression `ready`, run check(page), and return (requests aborted, console and page errors)."""
    from playwright.sync_api import sync_playwright

    outside, errors = [], []

    def only_the_file(route):
        if urlparse(route.request.url).scheme in ("file", "data"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.route("**/*", only_the_file)
            page.goto(Path(page_path).as_uri(), wait_until="load")
            if ready:
                page.wait_for_function(ready, timeout=30_000)
            check(page)
        finally:
            browser.close()
    return outside, errors
