"""The static explorer page (attnlib.explorer.page) and your own image (attnlib.explorer.image): the page's data, the
command `python -m attnlib.explore`, the notebook explorer's upload, and the page in headless Chromium.

Covers: the 8-bit quantisation (each row within half a step); the page's data round-trips, stores the
positional-only maps once and leaves out test images a run does not have; the query pixel lands on the
object; your image resized, cropped, converted and normalised, taken by the notebook explorer's upload and
by notebook 07; the command writing the page, and saying in one line that a file is not an image;
explorer.html redrawing for another query pixel in Chromium with no network (a screenshot in
build/test-artifacts/explorer-page.png), and the committed results/quick page opening on the quadratic run.
The Chromium tests skip without Chromium, the committed page's without results/quick/explorer.html.
"""
import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, chromium, open_offline, train_smoke_runs
from PIL import Image

from attnlib.data import normalize
from attnlib.evidence.attention_maps import LayerMaps, attention_maps, mean_attention
from attnlib.explorer import cli
from attnlib.explorer import live as explorer
from attnlib.explorer import page as explore
from attnlib.explorer.image import NotAnImage, open_image, prepare_image, query_on_object
from attnlib.explorer.trained_runs import trained_runs
from attnlib.explorer.widget import ExplorerWidget

ARTIFACTS = ROOT / "build" / "test-artifacts"
NOW = datetime.datetime.now(datetime.timezone.utc)
EXPERIMENTS = ["01_learned_2d", "02_quadratic", "03_san"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Smoke runs trained for an epoch: quadratic (positional only), learned + content, and a patchwise SAN
    (3x3 windows, weights that are not probabilities)."""
    results_dir = tmp_path_factory.mktemp("results")
    params_dir = tmp_path_factory.mktemp("params")
    train_smoke_runs(results_dir, params_dir, {"01_learned_2d": {"models": ["sa_learned_content"]},
                                               "02_quadratic": {"models": ["sa_quadratic"]},
                                               "03_san": {"models": ["san_patchwise"], "hierarchical": [False]}})
    runs, missing = trained_runs(EXPERIMENTS, "smoke", results_dir, params_dir)
    assert [r.run.model for r in runs] == ["sa_learned_content", "sa_quadratic", "san_patchwise"], missing
    return results_dir, params_dir, runs


def page_json(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', html, re.S)
    return json.loads(block.group(1))


def blob(entry: dict, key: str) -> list[np.ndarray]:
    import base64

    return explore.decode_layers(base64.b64decode(entry["blobs"][key]), entry["layers"])


def assert_within_quantisation(decoded: np.ndarray, weights: np.ndarray):
    """Every weight back within half a step of 255 between its row's minimum and maximum."""
    w = np.asarray(weights, dtype=np.float64)
    step = (w.max(-1, keepdims=True) - w.min(-1, keepdims=True)) / 255
    assert decoded.shape == w.shape
    assert (np.abs(decoded - w) <= step / 2 + 1e-6).all(), np.abs(decoded - w).max()


def test_quantize_keeps_each_row_within_half_a_step():
    w = np.array([[[0.0, 0.25, 0.75], [0.2, 0.2, 0.2], [-1.0, 0.5, 2.0]]])
    lo, hi, q = explore.quantize(w)
    assert q.dtype == np.uint8 and list(q[0, 0]) == [0, 85, 255] and list(q[0, 1]) == [0, 0, 0]
    back = explore.dequantize(lo, hi, q)
    assert_within_quantisation(back, w)
    assert np.allclose(back[0, 1], 0.2)  # a flat row comes back exactly (its minimum)


def test_recorded_epochs_are_spaced_from_initialisation_and_must_match_the_layers():
    layers = [LayerMaps("layer 1", torch.zeros(1, 4, 9, 9), (3, 3), 1), LayerMaps("layer 2", torch.zeros(1, 4, 9, 9), (3, 3), 1)]
    snaps = [{"epoch": e, "layers": [torch.full((4, 9, 9), float(e), dtype=torch.float16)] * 2} for e in range(31)]
    kept = explore.recorded_epochs(snaps, layers, final_epoch=30)
    epochs = [e for e, _ in kept]
    assert epochs[0] == 0 and len(epochs) == explore.EPOCHS_SHOWN - 1 and 30 not in epochs  # the trained maps: epoch 30
    assert epochs == sorted(set(epochs)) and max(np.diff(epochs)) - min(np.diff(epochs)) <= 1  # evenly spaced
    e, maps = kept[3]
    assert [m.weights.shape for m in maps] == [(1, 4, 9, 9)] * 2 and float(maps[1].weights.max()) == e
    assert [e for e, _ in explore.recorded_epochs(snaps[:3], layers, final_epoch=2)] == [0, 1]
    other = [{"epoch": 0, "layers": [torch.zeros(4, 16, 16)] * 2}]  # not the maps drawn: nothing
    assert explore.recorded_epochs(other, layers, final_epoch=1) == []
    assert explore.recorded_epochs([], layers, final_epoch=1) == []


def test_test_images_beyond_a_runs_test_split_are_left_out_of_its_image_set(trained):
    """Indices are picked on one run's data; another data set's test split may be smaller."""
    _, _, runs = trained
    beyond = len(runs[0].data.x_test) + 5
    data = explore.page_data(runs[:1], [1, beyond], average_images=0)
    assert [item["label"].split(" (")[0] for item in data["imageSets"][0]["images"]] == ["test image 1"]


def test_page_data_round_trips_and_stores_positional_maps_once(trained):
    _, _, runs = trained
    images = [0, 3, 5]
    data = explore.page_data(runs, images, average_images=8)
    entries = {e["model"]: e for e in data["runs"]}
    x = {r.run.model: normalize(r.data.x_test[images], r.data.mean, r.data.std) for r in runs}
    models = {r.run.model: r.load() for r in runs}

    # positional only: one copy, and indeed the same maps on every image
    quad = entries["sa_quadratic"]
    assert quad["positional"] and set(quad["blobs"]) == {"shared", "epoch:0"} and quad["meanOver"] == 0
    true = attention_maps(models["sa_quadratic"], x["sa_quadratic"])
    for layer, decoded in zip(true, blob(quad, "shared")):
        assert torch.allclose(layer.weights[0], layer.weights[2], atol=1e-6)
        assert_within_quantisation(decoded, layer.weights[1].numpy())

    # content-based: every image, and the mean over the first 8 test images
    for model in ("sa_learned_content", "san_patchwise"):
        entry = entries[model]
        epochs = {"epoch:0"} if model == "sa_learned_content" else set()  # SAN records no snapshots
        assert not entry["positional"] and set(entry["blobs"]) == {"0", "1", "2", "mean"} | epochs
        assert entry["meanOver"] == 8
        true = attention_maps(models[model], x[model])
        for i in range(len(images)):
            for layer, decoded in zip(true, blob(entry, str(i))):
                assert_within_quantisation(decoded, layer.weights[i].numpy())
        assert not np.array_equal(blob(entry, "0")[0], blob(entry, "1")[0])  # depends on the image
        run = next(r for r in runs if r.run.model == model)
        mean = mean_attention(models[model], run.images(0, 8))
        for layer, decoded in zip(mean, blob(entry, "mean")):
            assert_within_quantisation(decoded, layer.weights[0].numpy())
    san = entries["san_patchwise"]["layers"][0]
    assert san["window"] == 3 and not san["normalized"] and san["grid"] == [8, 8]

    # the maps after each earlier epoch, as the checkpoint recorded them: here initialisation, then the trained ones
    for model in ("sa_quadratic", "sa_learned_content"):
        run = next(r for r in runs if r.run.model == model)
        (start, _trained) = run.snapshots()
        assert entries[model]["epochs"] == [0, 1]
        for recorded, decoded in zip(start["layers"], blob(entries[model], "epoch:0")):
            assert_within_quantisation(decoded, recorded.float().numpy())
    assert entries["san_patchwise"]["epochs"] == []

    # the images, and the first view: the quadratic run, every layer, the query on the object of the first image
    (image_set,) = data["imageSets"]
    assert image_set["probe"] == 0  # test image 0: the one each epoch's maps were recorded on
    assert [im["label"].split(" (")[0] for im in image_set["images"]] == ["test image 0", "test image 3", "test image 5"]
    first = runs[0].data.x_test[0]
    assert image_set["images"][0]["query"] == list(query_on_object(first))
    assert data["start"] == {"run": 1, "layer": "all", "image": 0, "mean": False, "zoom": False,
                             "row": image_set["images"][0]["query"][0], "col": image_set["images"][0]["query"][1]}


def test_query_on_object_lands_inside_the_object():
    x = np.zeros((1, 28, 28), dtype=np.uint8)
    x[0, 4:24, 4:10] = 200  # two legs and a gap between them: the centre of mass falls in the gap
    x[0, 4:24, 18:24] = 200
    r, c = query_on_object(torch.from_numpy(x))
    assert x[0, r, c] == 200 and (5 <= c <= 8 or 19 <= c <= 22) and 5 <= r <= 22, (r, c)  # not on an edge
    assert query_on_object(torch.zeros(3, 8, 8, dtype=torch.uint8)) == (4, 4)  # no object: the middle


def test_your_image_is_resized_cropped_converted_and_normalised(trained, tmp_path):
    _, _, runs = trained
    wide = Image.new("RGB", (80, 40), (0, 0, 0))
    wide.paste((255, 0, 0), (30, 0, 50, 40))  # a red band in the middle; the sides are cropped away
    path = tmp_path / "wide.png"
    wide.save(path)
    grey = prepare_image(open_image(path), 28, 1)
    assert grey.shape == (1, 28, 28) and grey.dtype == torch.uint8
    band = (grey[0, 14] > 40).nonzero().flatten().tolist()
    assert band[0] in (6, 7) and band[-1] in (20, 21), band  # 20 of 80 pixels -> 14 of 56, cropped 14 from the left
    assert int(grey[0, 14, 14]) == 76  # red in grey: 0.299 * 255
    rgb = prepare_image(open_image(path), 8, 3)
    assert rgb.shape == (3, 8, 8) and rgb[:, 4, 4].tolist() == [255, 0, 0]
    tall = Image.new("LA", (10, 30), (255, 0))  # transparent white: black, like Fashion-MNIST's background
    assert prepare_image(tall, 5, 1).max() == 0

    # the explorer takes it like a test image: the run's size and channels, normalised with its data's mean/std
    quad = runs[1]
    ex = explorer.AttentionExplorer(runs, average_images=4)
    assert ex.set_own_image(path) == "wide.png"
    pixels = ex.own_pixels(quad.label)
    assert pixels.shape == (quad.data.channels, quad.data.image_size, quad.data.image_size)
    ex.state.run = runs[0].label  # content-based: the maps are those of the normalised picture
    expected = attention_maps(runs[0].load(), normalize(ex.own_pixels()[None], runs[0].data.mean, runs[0].data.std))
    got = ex.layers()
    assert all(torch.allclose(a.weights, b.weights) for a, b in zip(got, expected))
    assert "your image wide.png" in ex.describe()


def test_the_notebook_explorer_takes_an_uploaded_image(trained, tmp_path):
    _, _, runs = trained
    ex = explorer.AttentionExplorer(runs, average_images=4)
    shown = ExplorerWidget(ex)
    box, c = shown.box, shown.controls
    status, picture = box.children[-2], box.children[-1]
    assert c["own"].disabled and not c["own"].value
    before = picture.value
    img = Image.fromarray((np.arange(64, dtype=np.uint8).reshape(8, 8) * 4))
    img.save(tmp_path / "mine.png")
    content = (tmp_path / "mine.png").read_bytes()
    c["upload"].value = ({"name": "mine.png", "type": "image/png", "size": len(content), "content": memoryview(content),
                          "last_modified": NOW},)
    assert "your image mine.png" in status.value and c["own"].value and not c["own"].disabled
    assert picture.value != before
    c["upload"].value = ({"name": "notes.txt", "type": "text/plain", "size": 5, "content": memoryview(b"hello"),
                          "last_modified": NOW},)
    assert status.value == "<code>notes.txt is not an image (PIL cannot identify its format)</code>"


def run_cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnlib.explore", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_the_command_writes_the_page_for_your_image(trained, tmp_path):
    results_dir, params_dir, runs = trained
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    quad = runs[1].run.run_id
    out = run_cli(tmp_path / "photo.png", "--run", quad.rsplit("-", 1)[0], "--run", runs[0].run.run_id,
                  "--out", tmp_path / "page.html", "--results-dir", results_dir, "--params-dir", params_dir,
                  "--experiments", ",".join(EXPERIMENTS))
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"^wrote .*page\.html \(\d+ kB\): 2 runs \(sa_quadratic .*, sa_learned_content .*\), 1 image,",
                     out.stdout, re.M), out.stdout
    data = page_json((tmp_path / "page.html").read_text())
    assert [r["runId"] for r in data["runs"]] == [quad, runs[0].run.run_id]  # the profile found from the checkpoints
    (image_set,) = data["imageSets"]
    assert [im["label"] for im in image_set["images"]] == ["your image photo.png"]
    assert set(data["runs"][1]["blobs"]) == {"0"}  # content-based: your image only, no mean over test images
    assert data["start"]["run"] == 0


def test_the_command_says_in_one_line_that_a_file_is_not_an_image(tmp_path, capsys):
    """In process (the command itself runs above): exit status 2 and one line, before any run is loaded."""
    (tmp_path / "notes.txt").write_text("not a picture\n")
    code = cli.main([str(tmp_path / "notes.txt"), "--run", "sa_quadratic", "--out", str(tmp_path / "page.html")])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    assert out.err == f"error: {tmp_path / 'notes.txt'} is not an image (PIL cannot identify its format)\n"
    (tmp_path / "empty.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a PNG's signature and nothing else
    assert cli.main([str(tmp_path / "empty.png"), "--out", str(tmp_path / "page.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'empty.png'} is not an image (") and err.count("\n") == 1, err
    with pytest.raises(NotAnImage, match=r"^missing\.png is not an image \(no such file\)$"):
        open_image(tmp_path / "missing.png", "missing.png")
    assert not (tmp_path / "page.html").exists()


def open_page(page_path: Path, check):
    """The page offline once it has drawn; the page's own list of errors joins the console's."""
    def check_and_collect(page):
        check(page)
        page_errors.extend(page.evaluate("window.explorer.errors"))

    page_errors = []
    outside, errors = open_offline(page_path, check_and_collect, ready="window.explorer && window.explorer.ready")
    return outside, errors + page_errors


HEADS = "() => [...document.querySelectorAll('#heads canvas.head-map')].map(c => c.toDataURL())"
TAPS = "() => [...document.querySelectorAll('#heads canvas.taps')].map(c => c.toDataURL())"


def status_has(page, text: str):
    page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)", arg=text)


def move_query_far(page) -> tuple[int, int]:
    """Move the mouse over the image to a pixel far from the present query; check that every head's map
    was redrawn and differs. Returns the new query pixel."""
    start = page.evaluate("window.explorer.state")
    side = int(page.evaluate("() => document.querySelector('#row').max")) + 1
    before, draws = page.evaluate(HEADS), page.evaluate("window.explorer.draws")
    row, col = (1, 1) if start["row"] + start["col"] > side else (side - 2, side - 2)
    box = page.locator("#query-canvas").bounding_box()
    page.mouse.move(box["x"] + (col + 0.5) * box["width"] / side, box["y"] + (row + 0.5) * box["height"] / side)
    page.wait_for_function("n => window.explorer.draws > n", arg=draws)
    assert f"query pixel ({row}, {col})" in page.locator("#status").inner_text()
    after = page.evaluate(HEADS)
    assert len(after) == len(before) > 0 and all(a != b for a, b in zip(before, after))
    return row, col


def trained_page(trained, tmp_path) -> tuple[Path, list]:
    """The page of the trained runs on test images 0 and 1 (means over 4), for Chromium (skips without it)."""
    chromium()
    _, _, runs = trained
    page_path, _, _ = explore.write_page(tmp_path / "explorer.html", runs, [0, 1], average_images=4)
    return page_path, runs


def test_the_page_in_chromium_redraws_for_another_query_offline(trained, tmp_path):
    chromium()
    _, _, runs = trained
    page_path, size, _ = explore.write_page(tmp_path / "explorer.html", runs, [0, 1], average_images=4)
    assert size < 2_000_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def check(page):
        status = page.locator("#status")
        start = page.evaluate("window.explorer.state")
        # it opens on every layer of the quadratic run: all heads at once, then each head
        assert status.inner_text().startswith(f"{runs[1].label} · all layers · query pixel ({start['row']}, {start['col']})")
        layers = runs[1].params.layers
        assert len(page.evaluate(TAPS)) == layers and len(page.evaluate(HEADS)) == layers * runs[1].run.heads
        assert "the query follows the pointer" in status.inner_text()
        row, col = move_query_far(page)
        box = page.locator("#query-canvas").bounding_box()
        page.mouse.click(box["x"] + (col + 0.5) * box["width"] / 8, box["y"] + (row + 0.5) * box["height"] / 8)
        status_has(page, "query pinned")
        pinned = page.evaluate("window.explorer.draws")
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)  # pinned: no move
        page.wait_for_timeout(200)
        assert page.evaluate("window.explorer.draws") == pinned and f"query pixel ({row}, {col})" in status.inner_text()
        page.locator("#query-canvas").press("Escape")
        status_has(page, "the query follows the pointer")

        # the sliders, a content-based run on another image and its mean, all layers, a SAN run zoomed
        page.locator("#col").fill("3")
        page.wait_for_function("() => document.querySelector('#status').innerText.includes(', 3) = token')")
        page.select_option("#run", "0")
        page.select_option("#image", "1")
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('test image 1')")
        page.check("#mean")
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('mean over 4 test images')")
        page.select_option("#layer", "all")
        page.select_option("#run", "2")
        page.check("#zoom")
        page.wait_for_function("() => document.querySelector('#status').innerText.startsWith('san_patchwise')")
        layers = attention_maps(runs[2].load(), runs[2].images(0, 1))
        assert len(page.evaluate(HEADS)) == sum(layer.heads for layer in layers)
        page.screenshot(path=str(ARTIFACTS / "explorer-page.png"), full_page=True)

    outside, errors = open_page(page_path, check)
    assert outside == [] and errors == []


def test_the_page_shows_training_epoch_by_epoch_on_one_colour_scale_and_keeps_the_picture_still(trained, tmp_path):
    page_path, runs = trained_page(trained, tmp_path)

    def check(page):
        status, picture = page.locator("#status"), page.locator("#query-canvas")
        where, tall = picture.bounding_box(), status.bounding_box()["height"]
        trained_maps, trained_taps = page.evaluate(HEADS), page.evaluate(TAPS)
        assert "epoch 1 of 1 (trained)" in status.inner_text()

        # the maps at initialisation, then the play button back to the trained ones, where it stops
        page.locator("#epoch").fill("0")
        status_has(page, "epoch 0 of 1 (initialisation)")
        assert page.evaluate(HEADS) != trained_maps
        page.click("#play")
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('(trained)') && "
                               "!document.querySelector('#play').textContent.includes('stop')", timeout=10_000)
        assert page.evaluate(HEADS) == trained_maps and page.evaluate(TAPS) == trained_taps

        # one colour scale per layer, named beside it; a head's own scale on request
        assert page.locator(".layer-name .scale").first.inner_text().startswith("colour 0.0 to ")
        page.check("#own-scale")
        page.wait_for_function("() => document.querySelector('.layer-name .scale').innerText === 'own scale per head'")
        assert page.evaluate(HEADS) != trained_maps
        page.uncheck("#own-scale")

        # a content-based run was recorded on test image 0: on another image the trained maps stay, and it says so
        page.select_option("#run", "0")
        page.select_option("#image", "1")
        page.locator("#epoch").fill("0")
        status_has(page, "trained maps shown: earlier epochs were recorded on test image 0")
        page.select_option("#image", "0")
        status_has(page, "epoch 0 of 1 (initialisation)")

        # other runs, layers and status lines of other lengths: the picture never moves under the pointer
        for run, layer in (("2", "all"), ("2", "0"), ("1", "1"), ("1", "all")):
            page.select_option("#run", run)
            page.select_option("#layer", layer)
            move_query_far(page)
            assert picture.bounding_box() == where and status.bounding_box()["height"] == tall

    outside, errors = open_page(page_path, check)
    assert outside == [] and errors == []


def test_the_page_fits_a_phone_and_follows_a_finger(trained, tmp_path):
    page_path, runs = trained_page(trained, tmp_path)

    def check(page):
        for run in ("1", "0", "2"):
            page.select_option("#run", run)
            page.wait_for_timeout(100)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            rights = page.evaluate("() => [...document.querySelectorAll('#heads canvas')].map(c => "
                                   "c.getBoundingClientRect().right)")
            assert rights and max(rights) <= 390  # every head on screen: the rows wrap
        box = page.locator("#query-canvas").bounding_box()
        for kind, (row, col) in (("pointerdown", (1, 1)), ("pointermove", (6, 5)), ("pointerup", (6, 5))):
            page.locator("#query-canvas").dispatch_event(kind, {
                "pointerType": "touch", "pointerId": 7, "isPrimary": True, "buttons": 0 if kind == "pointerup" else 1,
                "clientX": box["x"] + (col + 0.5) * box["width"] / 8, "clientY": box["y"] + (row + 0.5) * box["height"] / 8})
        status_has(page, "query pixel (6, 5)")
        assert "query pinned" in page.locator("#status").inner_text()

    outside, errors = open_offline(page_path, check, ready="window.explorer && window.explorer.ready", viewport=(390, 844))
    assert outside == [] and errors == []


COMMITTED = ROOT / "results" / "quick" / "explorer.html"


@pytest.mark.skipif(not COMMITTED.exists(), reason="no results/quick/explorer.html (make reproduce PROFILE=quick writes it)")
def test_the_committed_quick_page_opens_offline_on_the_quadratic_run_and_follows_the_query():
    chromium()
    size = COMMITTED.stat().st_size
    assert size <= 10_500_000, f"{size / 1e6:.1f} MB"
    data = page_json(COMMITTED.read_text())
    models = {r["model"] for r in data["runs"]}
    assert {"sa_quadratic", "sa_quadratic_aniso", "sa_learned", "sa_learned_content", "vit", "san_pairwise"} <= models
    positional = [r for r in data["runs"] if r["positional"]]
    assert positional and all(set(r["blobs"]) == {"shared"} | {f"epoch:{e}" for e in r["epochs"][:-1]} for r in positional)
    assert all(r["epochs"][0] == 0 and len(r["epochs"]) >= 3 for r in positional)  # initialisation, then each epoch

    def check(page):
        assert page.locator("#status").inner_text().startswith("sa_quadratic (")
        assert " · all layers · " in page.locator("#status").inner_text()
        assert "(trained)" in page.locator("#status").inner_text()
        move_query_far(page)
        for i, run in enumerate(data["runs"]):  # every run decodes and draws
            if i == data["start"]["run"]:
                continue
            draws = page.evaluate("window.explorer.draws")
            page.select_option("#run", str(i))
            page.wait_for_function("n => window.explorer.draws > n", arg=draws)
            assert page.locator("#status").inner_text().startswith(run["label"])

    outside, errors = open_page(COMMITTED, check)
    print(f"results/quick/explorer.html: {size / 1e6:.1f} MB, {len(data['runs'])} runs; "
          f"aborted requests {len(outside)}, errors {len(errors)}")
    assert outside == [] and errors == []


@pytest.mark.notebook
def test_notebook_07_explores_your_image_and_writes_the_page(trained, tmp_path):
    """Notebook 07 with own_image set: the explorer shows the picture, and explorer.html has it beside the
    test images; a file that is not an image gets one line, and the notebook goes on."""
    import papermill as pm

    results_dir, params_dir, runs = trained
    (params_dir / "smoke" / "07_visualizations.yaml").write_text(
        (ROOT / "params" / "smoke" / "07_visualizations.yaml").read_text())
    Image.fromarray(np.tile(np.arange(0, 250, 25, dtype=np.uint8), (10, 1))).save(tmp_path / "mine.png")
    out = tmp_path / "07.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "07_visualizations.ipynb"), str(out), cwd=str(ROOT / "notebooks"),
                        parameters=dict(profile="smoke", results_dir=str(results_dir), params_dir=str(params_dir),
                                        experiments=["02_quadratic"], own_image=str(tmp_path / "mine.png"),
                                        average_images=4, page_images=2, device="cpu"),
                        progress_bar=False, kernel_name="python3")
    printed = "".join("".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", []))
    assert f"exploring your image mine.png ({tmp_path / 'mine.png'})" in printed
    assert re.search(r"wrote .*/smoke/explorer\.html \(\d+ kB\): 1 run \(sa_quadratic .*\), 3 images,", printed), printed
    data = page_json((results_dir / "smoke" / "explorer.html").read_text())
    assert [im["label"].split(" (")[0] for im in data["imageSets"][0]["images"]] == [
        "test image 0", "test image 1", "your image mine.png"]
    with pytest.raises(NotAnImage, match=r"^notes\.txt is not an image \(PIL cannot identify its format\)$"):
        explorer.AttentionExplorer(runs).set_own_image(b"hello", "notes.txt")
