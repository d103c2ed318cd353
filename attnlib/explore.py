"""A static attention explorer: one self-contained HTML file that shows where every head of every layer
attends, for every query pixel, with no Python, no kernel and no network.

`write_page(path, runs, ...)` (notebook 07 writes results/<profile>/explorer.html with it) stores, per run:

- positional-only models (sa_quadratic, sa_quadratic_aniso, sa_learned: no content term), whose attention
  is the same for every image: each layer's (heads, T, T) once;
- the content-based models (learned + content, ViT, SAN): each image's maps, and their mean over
  `average_images` test images (the paper averages over 100).

Each query's map over its keys (a head's row of the attention matrix) is quantised to uint8 between its own
minimum and maximum (two float32 per row), so the error is at most (max - min) / 510 per weight; the rows
of a run and image, all layers together, are gzipped and base64-encoded into the page, which decodes them
with the browser's DecompressionStream only when that run or image is first shown. The page draws with
<canvas>: pick the run, the layer (or all layers) and the image; move over the image (or click, or use
the sliders) to move the query pixel; every head's map is drawn at once, over the image.

`python -m attnlib.explore IMAGE --run RUN_ID --out page.html` writes the page for your own image(s):
resized and cropped to the run's input, converted to its data set's channels and normalised like its
training data (attnlib.explore_image). A file that is not an image gets one line saying so (exit 2).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import html
import io
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps

from attnlib import results
from attnlib.attention_maps import LayerMaps, attention_maps, mean_attention
from attnlib.data import DataError, normalize
from attnlib.explore_image import NotAnImage, open_image, prepare_image, query_on_object
from attnlib.trained_runs import TrainedRun, first_view, trained_runs
from attnlib.models.sa_net import SelfAttentionNet
from attnlib.params import ParamsError

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ("01_learned_2d", "02_quadratic", "03_san", "04_vit")


# -- what is stored --------------------------------------------------------------------------------
def is_positional(model: torch.nn.Module) -> bool:
    """Whether the model's attention depends on positions only (a self-attention network without the
    content term): then it is the same for every image and is stored once."""
    return isinstance(model, SelfAttentionNet) and not model.cfg.content


def quantize(weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, q) of (..., K) weights: each row's minimum and maximum (float32) and the row as uint8,
    q = round(255 (w - lo) / (hi - lo)) (0 where hi == lo)."""
    w = np.asarray(weights, dtype=np.float64)
    lo, hi = w.min(-1), w.max(-1)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.rint((w - lo[..., None]) / span[..., None] * 255.0).clip(0, 255).astype(np.uint8)
    return lo.astype(np.float32), hi.astype(np.float32), q


def dequantize(lo: np.ndarray, hi: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The weights back from quantize, as the page computes them."""
    return lo[..., None] + q.astype(np.float32) / 255.0 * (hi - lo)[..., None]


def _pad4(n: int) -> int:
    return -n % 4


def encode_layers(layers: list[LayerMaps], image: int = 0) -> bytes:
    """Image `image`'s maps of every layer, gzipped: per layer lo, hi (float32 little-endian, heads x T
    each) then q (uint8, heads x T x K), each section padded to 4 bytes. The page reads this layout."""
    parts = []
    for layer in layers:
        lo, hi, q = quantize(layer.weights[image].numpy())
        for block in (lo.astype("<f4").tobytes(), hi.astype("<f4").tobytes(), q.tobytes()):
            parts += [block, b"\0" * _pad4(len(block))]
    return gzip.compress(b"".join(parts), compresslevel=9, mtime=0)


def decode_layers(blob: bytes, layers: list[dict]) -> list[np.ndarray]:
    """encode_layers' bytes back to one (heads, T, K) float32 array per layer (`layers`: the page's layer
    entries), the way the page's script decodes them."""
    raw, out, off = gzip.decompress(blob), [], 0
    for meta in layers:
        t = meta["grid"][0] * meta["grid"][1]
        k = meta["window"] ** 2 if meta["window"] else t
        n = meta["heads"] * t
        lo = np.frombuffer(raw, "<f4", n, off)
        off += 4 * n
        hi = np.frombuffer(raw, "<f4", n, off)
        off += 4 * n
        q = np.frombuffer(raw, np.uint8, n * k, off)
        off += n * k + _pad4(n * k)
        out.append(dequantize(lo, hi, q.reshape(n, k)).reshape(meta["heads"], t, k))
    if off != len(raw):
        raise ValueError(f"{len(raw) - off} bytes left over: the blob does not match the layers")
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _layer_entry(layer: LayerMaps) -> dict:
    return {"name": layer.name, "grid": [int(g) for g in layer.grid], "stride": int(layer.stride),
            "window": int(layer.window), "heads": int(layer.heads), "normalized": bool(layer.normalized)}


def pick_test_images(run: TrainedRun, count: int, first: int = 0) -> list[int]:
    """`count` test images: `first`, then the first image of each class not yet shown, then the next ones."""
    y = run.data.y_test.tolist()
    first = min(max(first, 0), len(y) - 1)
    chosen, classes = [first], {y[first]}
    for i, label in enumerate(y):
        if len(chosen) >= count:
            break
        if label not in classes:
            chosen.append(i)
            classes.add(label)
    for i in range(len(y)):
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(i)
    return chosen[:count]


def _image_set_key(run: TrainedRun) -> tuple:
    return (run.data.name, run.data.image_size, run.data.channels)


# -- the page's data -------------------------------------------------------------------------------
def _image_set(run: TrainedRun, test_images: Sequence[int], own_images: Sequence[tuple]) -> tuple[dict, torch.Tensor]:
    """(the page's entry for the images of a run's data set: its name, size and channels, and each image's label,
    pixels and query pixel on its object; their pixels, (N, C, H, W) uint8): the test images, then your images
    prepared for the run's input."""
    items, pixels = [], []
    # indices picked on one data set may lie beyond a smaller one's test split: those are left out there
    for index in [i for i in test_images if i < len(run.data.x_test)] or ([0] if test_images else []):
        x = run.data.x_test[index]
        items.append({"label": f"test image {index} ({run.data.classes[int(run.data.y_test[index])]})"})
        pixels.append(x)
    for name, img in own_images:
        items.append({"label": f"your image {name}"})
        pixels.append(prepare_image(img, run.data.image_size, run.data.channels))
    stacked = torch.stack(pixels).to(torch.uint8)
    for item, x in zip(items, stacked):
        item["pixels"] = _b64(x.numpy().tobytes())
        item["query"] = list(query_on_object(x))
    return {"name": run.data.name, "size": run.data.image_size, "channels": run.data.channels, "images": items}, stacked


def _run_entry(run: TrainedRun, model: torch.nn.Module, pixels: torch.Tensor, image_set: int, mean_over: int,
               mean: list[LayerMaps] | None, device: str) -> dict:
    """The page's entry for a run: what it is, its layers, and its maps gzipped (encode_layers): once for a
    positional-only model, else for each image of its set (`pixels`) and, when mean_over > 0, their mean over
    that many test images (`mean`, when it is that mean, else computed here)."""
    x = normalize(pixels, run.data.mean, run.data.std).to(device)
    positional = is_positional(model)
    layers = attention_maps(model, x[:1] if positional else x)
    if positional:
        blobs = {"shared": _b64(encode_layers(layers, 0))}
    else:
        blobs = {str(i): _b64(encode_layers(layers, i)) for i in range(len(pixels))}
    if not positional and mean_over > 0:
        if mean is None or mean[0].weights.shape[0] != 1:
            mean = mean_attention(model, run.images(0, mean_over).to(device))
        blobs["mean"] = _b64(encode_layers(mean, 0))
    return {"label": run.label, "runId": run.run.run_id, "model": run.run.model, "variant": run.run.variant,
            "experiment": run.experiment, "describe": run.describe(), "positional": positional,
            "imageSet": image_set, "meanOver": mean_over if not positional else 0,
            "layers": [_layer_entry(layer) for layer in layers], "blobs": blobs}


def page_data(runs: Sequence[TrainedRun], test_images: Sequence[int] = (0,), own_images: Sequence[tuple] = (),
              average_images: int = 100, means: dict | None = None, device: str = "cpu", models: dict | None = None,
              start_run: TrainedRun | None = None) -> dict:
    """Everything the page shows, as JSON-able values. `own_images`: (name, PIL image) pairs, prepared for
    each run's input. `means`: {run label: mean_attention(...)} already computed over `average_images`
    test images (the notebook's), else computed here; average_images=0 or no test images: no mean.
    `models`: {run label: loaded model}, else each run is loaded once here."""
    if not runs:
        raise ValueError("no trained runs to put in the page: run the training notebooks (01-04) first")
    if not test_images and not own_images:
        raise ValueError("no images to put in the page")
    sets: dict[tuple, dict] = {}
    set_pixels: dict[tuple, torch.Tensor] = {}
    for run in runs:
        key = _image_set_key(run)
        if key not in sets:
            sets[key], set_pixels[key] = _image_set(run, test_images, own_images)
    set_index = {key: i for i, key in enumerate(sets)}
    entries = []
    for run in runs:
        model = (models or {}).get(run.label)
        model = run.load(device) if model is None else model
        mean_over = min(average_images, len(run.data.x_test)) if test_images else 0
        entries.append(_run_entry(run, model, set_pixels[_image_set_key(run)], set_index[_image_set_key(run)],
                                  mean_over, (means or {}).get(run.label), device))
    start = start_run if any(start_run is r for r in runs) else first_view(list(runs))
    start_index = next(i for i, r in enumerate(runs) if r is start)
    first_image = sets[_image_set_key(start)]["images"][0]
    return {"runs": entries, "imageSets": list(sets.values()), "cmap": _colormap_hex(),
            "start": {"run": start_index, "layer": 0, "image": 0, "mean": False, "zoom": False,
                      "row": first_image["query"][0], "col": first_image["query"][1]}}


def _colormap_hex(name: str = "inferno") -> str:
    rgb = (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return rgb.tobytes().hex()


def describe_page(data: dict) -> str:
    """One line: what the page covers."""
    runs = data["runs"]
    images = sum(len(s["images"]) for s in data["imageSets"])
    content = [r for r in runs if not r["positional"]]
    means = [r for r in content if "mean" in r["blobs"]]
    text = (f"{_count(len(runs), 'run')} ({', '.join(r['label'] for r in runs)}), {_count(images, 'image')}, every "
            f"layer and head for every query pixel; {_count(len(runs) - len(content), 'positional-only run')} stored once")
    if means:
        text += (f"; the mean over {max(r['meanOver'] for r in means)} test images for "
                 f"{_count(len(means), 'content-based run')}")
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def render_page(data: dict, title: str = "Attention explorer", subtitle: str = "") -> str:
    """The HTML page: the template with the data inlined (no external script, style, font or request)."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (PAGE.replace("__TITLE__", html.escape(title)).replace("__SUBTITLE__", html.escape(subtitle))
            .replace("__DATA__", payload))


def write_page(path: str | Path, runs: Sequence[TrainedRun], test_images: Sequence[int] = (0,),
               own_images: Sequence[tuple] = (), average_images: int = 100, means: dict | None = None,
               device: str = "cpu", title: str = "Attention explorer", source: str = "",
               models: dict | None = None, start_run: TrainedRun | None = None) -> tuple[Path, int, str]:
    """Write the page to `path` (atomically); returns (path, size in bytes, describe_page line)."""
    data = page_data(runs, test_images, own_images, average_images, means, device, models, start_run)
    names = ", ".join(sorted({s["name"] for s in data["imageSets"]}))
    profiles = ", ".join(sorted({r.params.profile for r in runs}))
    subtitle = (f"{names}, profile {profiles}. Everything is in this file: no network, no Python, no kernel."
                + (f" {source}" if source else ""))
    text = render_page(data, title, subtitle)
    path = Path(path)
    results.atomic_write_text(path, text)
    return path, len(text.encode()), describe_page(data)


def human_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


# -- the command -----------------------------------------------------------------------------------
def _guess_profile(results_dir: Path, wanted: list[str]) -> str:
    for profile in ("quick", "paper", "smoke"):
        ckpts = [p.stem for p in (results_dir / profile / "checkpoints").glob("*.pt")]
        if ckpts and (not wanted or all(any(c.startswith(w) for c in ckpts) for w in wanted)):
            return profile
    return "quick"


def select_runs(runs: list[TrainedRun], wanted: list[str]) -> list[TrainedRun]:
    """The runs named by id or unique id prefix (e.g. sa_quadratic-h9-s42), in the order named; all when
    none is named. Raises ValueError (one line) for a name that matches none or several."""
    if not wanted:
        return runs
    chosen = []
    for name in wanted:
        exact = [r for r in runs if r.run.run_id == name]
        match = exact or [r for r in runs if r.run.run_id.startswith(name)]
        if len(match) != 1:
            known = ", ".join(r.run.run_id for r in runs) or "none"
            why = "matches no trained run" if not match else f"matches {len(match)} runs"
            raise ValueError(f"--run {name} {why} (trained runs: {known})")
        chosen.append(match[0])
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m attnlib.explore",
        description="Write a self-contained HTML page showing where every head of trained attention models attends "
                    "on your own image(s), for every query pixel.")
    ap.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s) (PNG, JPEG, ...)")
    ap.add_argument("--run", action="append", default=[], metavar="RUN_ID",
                    help="a trained run's id or a unique prefix of it (e.g. sa_quadratic-h9-s42); repeat for several; "
                         "default: every trained run of the profile")
    ap.add_argument("--out", required=True, help="the HTML file to write")
    ap.add_argument("--profile", default="", help="default: the profile whose checkpoints hold the runs")
    ap.add_argument("--results-dir", default=str(ROOT / "results"))
    ap.add_argument("--params-dir", default=str(ROOT / "params"))
    ap.add_argument("--data-root", default=str(ROOT / "data"))
    ap.add_argument("--dataset", default="", help="as the runner's --dataset, if the runs were trained with one")
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS), help="the training notebooks whose runs to look in")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    try:
        pictures = [(Path(p).name, open_image(p)) for p in args.images]
    except NotAnImage as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results_dir = Path(args.results_dir)
    profile = args.profile or _guess_profile(results_dir, args.run)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the data sets' banners: this command prints one line
            runs, _ = trained_runs([e for e in args.experiments.split(",") if e], profile, results_dir,
                                   args.params_dir, args.data_root, args.dataset)
        if not runs:
            raise ValueError(f"no trained runs in {results_dir / profile} (checkpoints are not committed): "
                             f"train them with `make reproduce PROFILE={profile}` first")
        runs = select_runs(runs, args.run)
        path, size, what = write_page(args.out, runs, test_images=(), own_images=pictures, average_images=0,
                                      device=args.device, title="Attention on your image",
                                      source="Written by python -m attnlib.explore.")
    except (ValueError, ParamsError, DataError, OSError) as err:
        print(f"error: {results.one_line(err)}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({human_size(size)}): {what}")
    return 0


PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 16px 24px; color: #222; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 2px; }
.sub, .note { color: #555; font-size: 12.5px; }
.sub { margin: 0 0 12px; }
.controls { display: flex; flex-wrap: wrap; gap: 6px 20px; align-items: center; margin-bottom: 8px; }
.controls label { white-space: nowrap; }
.controls input[type=range] { width: 180px; vertical-align: middle; }
output { display: inline-block; min-width: 2.2em; font-family: ui-monospace, Menlo, monospace; }
#status { font-family: ui-monospace, Menlo, monospace; font-size: 12px; background: #fff; border: 1px solid #ddd; padding: 5px 8px; margin: 6px 0 10px; }
.main { display: flex; gap: 22px; align-items: flex-start; }
.query-box { width: 256px; flex: none; }
.maps { flex: 1; min-width: 260px; }
#query-canvas { cursor: crosshair; border: 1px solid #888; display: block; }
#query-canvas:focus { outline: 2px solid #39f; }
.layer-row { display: flex; gap: 5px; align-items: flex-start; margin-bottom: 6px; flex-wrap: wrap; }
.layer-name { width: 84px; font-size: 12px; color: #444; padding-top: 30px; }
figure.head { margin: 0; text-align: center; font-size: 11px; color: #444; }
figure.head canvas { display: block; border: 1px solid #ccc; }
#hover { font-family: ui-monospace, Menlo, monospace; font-size: 12px; min-height: 1.5em; margin-top: 4px; }
#error { color: #b00020; font-weight: bold; white-space: pre-wrap; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<p class="sub">__SUBTITLE__</p>
<div class="controls">
  <label>run <select id="run"></select></label>
  <label>layer <select id="layer"></select></label>
  <label>image <select id="image"></select></label>
  <label><input type="checkbox" id="mean"> <span id="mean-text">mean over test images</span></label>
  <label><input type="checkbox" id="zoom"> 7x7 token zoom</label>
</div>
<div class="controls">
  <label>query row <input type="range" id="row" min="0" max="0" value="0"> <output id="row-out"></output></label>
  <label>query col <input type="range" id="col" min="0" max="0" value="0"> <output id="col-out"></output></label>
</div>
<div id="status" class="attention-status">decoding the maps...</div>
<div id="error"></div>
<div class="main">
  <div class="query-box">
    <canvas id="query-canvas" width="252" height="252" tabindex="0" aria-label="the image: move over it to pick the query pixel"></canvas>
    <p class="note">Move over the image to move the query pixel; click to pin it there (click again to follow the
    mouse). Arrow keys move it too. Cyan: the query's token in the layer shown (yellow: the pixel).</p>
  </div>
  <div class="maps">
    <div id="heads"></div>
    <div id="hover"></div>
  </div>
</div>
<p class="note" id="run-info"></p>
<p class="note">Each panel: one head's attention from the query (cyan frame) to every key, over the image in grey;
colour from dark (none) to yellow (the head's largest weight for this query; each panel has its own scale).
SAN's weights cover the 3x3 window of tokens around the query. Positional-only models (quadratic, anisotropic,
learned without content) attend the same way on every image. Maps are stored as 8 bits per weight, scaled per
query between the row's minimum and maximum.</p>
<script type="application/json" id="attention-data">__DATA__</script>
<script>
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const info = { draws: 0, ready: false, errors: [] };
  window.explorer = info;
  function fail(err) {
    const text = String(err && err.stack || err);
    info.errors.push(text);
    $("error").textContent = "The explorer failed: " + text;
    console.error(err);
  }
  window.addEventListener("error", (e) => fail(e.error || e.message));
  window.addEventListener("unhandledrejection", (e) => fail(e.reason));

  const D = JSON.parse($("attention-data").textContent);
  const ALPHA = 0.7, QUERY_PX = 252;
  const CMAP = bytesOfHex(D.cmap);
  const state = Object.assign({ pinned: false }, D.start);
  info.state = state;
  const decoded = new Map(), pictures = new Map();
  const work = document.createElement("canvas");
  let ticket = 0, panels = [];

  function bytesOfHex(hex) {
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
    return out;
  }
  function bytesOfBase64(text) {
    const bin = atob(text), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  async function gunzip(bytes) {
    if (typeof DecompressionStream === "undefined") {
      throw new Error("this browser has no DecompressionStream: open the page in a current Chromium, Firefox or Safari");
    }
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  // Per layer: lo, hi (float32, heads x T), q (uint8, heads x T x K), each padded to 4 bytes.
  function decodeLayers(run, bytes) {
    let off = 0;
    const layers = run.layers.map((L) => {
      const T = L.grid[0] * L.grid[1], K = L.window ? L.window * L.window : T, n = L.heads * T;
      const lo = new Float32Array(bytes.buffer, bytes.byteOffset + off, n); off += 4 * n;
      const hi = new Float32Array(bytes.buffer, bytes.byteOffset + off, n); off += 4 * n;
      const q = new Uint8Array(bytes.buffer, bytes.byteOffset + off, n * K); off += n * K + ((4 - (n * K) % 4) % 4);
      return { lo, hi, q, T, K };
    });
    if (off !== bytes.length) throw new Error("stored maps of " + run.label + " do not match its layers");
    return layers;
  }
  function mapsKey(run) {
    if (run.positional) return "shared";
    return state.mean && run.blobs.mean ? "mean" : String(state.image);
  }
  function maps(ri, key) {
    const k = ri + "/" + key;
    if (!decoded.has(k)) {
      const run = D.runs[ri];
      decoded.set(k, gunzip(bytesOfBase64(run.blobs[key])).then((b) => decodeLayers(run, b)));
    }
    return decoded.get(k);
  }
  function picture(si, ii) {
    const k = si + "/" + ii;
    if (!pictures.has(k)) {
      const set = D.imageSets[si], S = set.size, C = set.channels, px = bytesOfBase64(set.images[ii].pixels);
      const rgba = new Uint8ClampedArray(S * S * 4), gray = new Float32Array(S * S);
      for (let p = 0; p < S * S; p++) {
        const r = px[p], g = C === 3 ? px[S * S + p] : r, b = C === 3 ? px[2 * S * S + p] : r;
        rgba[4 * p] = r; rgba[4 * p + 1] = g; rgba[4 * p + 2] = b; rgba[4 * p + 3] = 255;
        gray[p] = C === 3 ? (0.299 * r + 0.587 * g + 0.114 * b) / 255 : r / 255;
      }
      pictures.set(k, { S, rgba, gray });
    }
    return pictures.get(k);
  }
  function pixelToToken(L, r, c) {
    return [Math.min(Math.floor(r / L.stride), L.grid[0] - 1), Math.min(Math.floor(c / L.stride), L.grid[1] - 1)];
  }
  function keyToken(L, token, k) {
    if (!L.window) return [Math.floor(k / L.grid[1]), k % L.grid[1]];
    const h = (L.window - 1) / 2;
    return [token[0] + Math.floor(k / L.window) - h, token[1] + (k % L.window) - h];
  }
  function queryValues(L, m, head, token) {
    const row = head * m.T + token[0] * L.grid[1] + token[1], lo = m.lo[row], span = m.hi[row] - lo, base = row * m.K;
    const out = new Float32Array(m.K);
    for (let k = 0; k < m.K; k++) out[k] = lo + (m.q[base + k] / 255) * span;
    return out;
  }
  function viewBox(L, token, S) {  // [x0, y0, side] in image pixels: the whole image, or 7x7 tokens around the query
    if (!state.zoom) return [0, 0, S];
    const s = L.stride, half = 3.5 * s;
    return [(token[1] + 0.5) * s - half, (token[0] + 0.5) * s - half, 7 * s];
  }
  function drawHead(canvas, L, values, token, pic) {
    const S = pic.S, s = L.stride;
    work.width = S; work.height = S;
    const wctx = work.getContext("2d"), img = wctx.createImageData(S, S), d = img.data;
    for (let p = 0; p < S * S; p++) {
      const g = Math.round(pic.gray[p] * 255);
      d[4 * p] = g; d[4 * p + 1] = g; d[4 * p + 2] = g; d[4 * p + 3] = 255;
    }
    let lo = 0, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    if (!(hi > lo)) hi = lo + 1e-12;
    for (let k = 0; k < values.length; k++) {
      const [kr, kc] = keyToken(L, token, k);
      const ci = Math.max(0, Math.min(255, Math.round(((values[k] - lo) / (hi - lo)) * 255)));
      const cr = CMAP[3 * ci], cg = CMAP[3 * ci + 1], cb = CMAP[3 * ci + 2];
      for (let y = Math.max(0, kr * s); y < Math.min(S, (kr + 1) * s); y++) {
        for (let x = Math.max(0, kc * s); x < Math.min(S, (kc + 1) * s); x++) {
          const p = 4 * (y * S + x);
          d[p] = (1 - ALPHA) * d[p] + ALPHA * cr;
          d[p + 1] = (1 - ALPHA) * d[p + 1] + ALPHA * cg;
          d[p + 2] = (1 - ALPHA) * d[p + 2] + ALPHA * cb;
        }
      }
    }
    wctx.putImageData(img, 0, 0);
    const ctx = canvas.getContext("2d"), W = canvas.width, [x0, y0, side] = viewBox(L, token, S), k = W / side;
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, W, W);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(work, -x0 * k, -y0 * k, S * k, S * k);
    ctx.strokeStyle = "cyan"; ctx.lineWidth = 1.5;
    ctx.strokeRect((token[1] * s - x0) * k, (token[0] * s - y0) * k, s * k, s * k);
  }
  function drawQuery(pic, L) {
    const c = $("query-canvas"), ctx = c.getContext("2d"), S = pic.S, k = c.width / S;
    work.width = S; work.height = S;
    work.getContext("2d").putImageData(new ImageData(pic.rgba, S, S), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(work, 0, 0, c.width, c.height);
    if (L) {
      const t = pixelToToken(L, state.row, state.col), s = L.stride;
      ctx.strokeStyle = "cyan"; ctx.lineWidth = 2;
      ctx.strokeRect(t[1] * s * k, t[0] * s * k, s * k, s * k);
    }
    ctx.strokeStyle = "yellow"; ctx.lineWidth = 1;
    ctx.strokeRect(state.col * k + 0.5, state.row * k + 0.5, k - 1, k - 1);
  }
  function shownLayers(run) {
    return state.layer === "all" ? run.layers.map((_, i) => i) : [Math.min(state.layer, run.layers.length - 1)];
  }
  function buildPanels() {
    const run = D.runs[state.run], box = $("heads"), all = state.layer === "all";
    const heads = Math.max(...run.layers.map((L) => L.heads)), px = all || heads > 8 ? (heads > 12 ? 72 : 84) : 112;
    box.textContent = "";
    panels = [];
    for (const li of shownLayers(run)) {
      const L = run.layers[li], row = document.createElement("div");
      row.className = "layer-row";
      const name = document.createElement("div");
      name.className = "layer-name"; name.textContent = L.name;
      row.appendChild(name);
      for (let h = 0; h < L.heads; h++) {
        const fig = document.createElement("figure"), cap = document.createElement("figcaption"), c = document.createElement("canvas");
        fig.className = "head"; c.width = px; c.height = px;
        c.dataset.layer = li; c.dataset.head = h;
        cap.textContent = (run.model.startsWith("san") ? "group " : "head ") + (h + 1);
        fig.appendChild(cap); fig.appendChild(c); row.appendChild(fig);
        c.addEventListener("mousemove", (e) => hoverHead(e, li, h));
        c.addEventListener("mouseleave", () => { $("hover").textContent = ""; });
        panels.push({ canvas: c, layer: li, head: h });
      }
      box.appendChild(row);
    }
  }
  let current = null;  // what is drawn: {run, layers (decoded), pic}
  function hoverHead(e, li, h) {
    if (!current) return;
    const run = D.runs[current.run], L = run.layers[li], c = e.target, r = c.getBoundingClientRect();
    const token = pixelToToken(L, state.row, state.col), [x0, y0, side] = viewBox(L, token, current.pic.S);
    const px = x0 + ((e.clientX - r.left) / r.width) * side, py = y0 + ((e.clientY - r.top) / r.height) * side;
    const key = [Math.floor(py / L.stride), Math.floor(px / L.stride)];
    const values = queryValues(L, current.layers[li], h, token);
    let k = -1;
    if (L.window) {
      const hw = (L.window - 1) / 2, dr = key[0] - token[0] + hw, dc = key[1] - token[1] + hw;
      if (dr >= 0 && dr < L.window && dc >= 0 && dc < L.window) k = dr * L.window + dc;
    } else if (key[0] >= 0 && key[0] < L.grid[0] && key[1] >= 0 && key[1] < L.grid[1]) {
      k = key[0] * L.grid[1] + key[1];
    }
    $("hover").textContent = k < 0 ? "" : `${L.name}, ${run.model.startsWith("san") ? "group" : "head"} ${h + 1}: key token (${key[0]}, ${key[1]}) ` +
      `${L.normalized ? "gets" : "has weight"} ${values[k].toPrecision(3)}` + (L.normalized ? " of the query's attention" : "");
  }
  function describe(run, L, m, token, set) {
    const what = run.positional ? `${set.images[state.image].label} (positional: the same maps for every image)`
      : state.mean && run.blobs.mean ? `mean over ${run.meanOver} test images (${set.images[state.image].label} shown)`
      : set.images[state.image].label;
    const v = queryValues(L, m, 0, token);
    let best = 0;
    for (let k = 1; k < v.length; k++) if (v[k] > v[best]) best = k;
    const peak = keyToken(L, token, best);
    return `${run.label} · ${state.layer === "all" ? "all layers, " : ""}${L.name} · query pixel (${state.row}, ${state.col}) = ` +
      `token (${token[0]}, ${token[1]}) · ${what} · ${run.model.startsWith("san") ? "group" : "head"} 1 attends most to token (${peak[0]}, ${peak[1]})`;
  }
  async function render() {
    const mine = ++ticket, ri = state.run, run = D.runs[ri];
    let layers;
    try {
      layers = await maps(ri, mapsKey(run));
    } catch (err) {
      fail(err);
      return;
    }
    if (mine !== ticket) return;  // a newer state is being drawn
    const set = D.imageSets[run.imageSet], pic = picture(run.imageSet, state.image);
    current = { run: ri, layers, pic };
    for (const p of panels) {
      const L = run.layers[p.layer], token = pixelToToken(L, state.row, state.col);
      drawHead(p.canvas, L, queryValues(L, layers[p.layer], p.head, token), token, pic);
    }
    const li = shownLayers(run)[0], L = run.layers[li];
    drawQuery(pic, L);
    $("status").textContent = describe(run, L, layers[li], pixelToToken(L, state.row, state.col), set);
    $("row-out").textContent = state.row; $("col-out").textContent = state.col;
    $("row").value = state.row; $("col").value = state.col;
    info.draws += 1; info.ready = true;
    document.body.dataset.ready = "1";
  }
  function fillSelect(sel, options, value) {
    sel.textContent = "";
    for (const [v, text] of options) {
      const o = document.createElement("option");
      o.value = v; o.textContent = text; sel.appendChild(o);
    }
    sel.value = String(value);
  }
  function fillRuns(sel, value) {  // grouped: positional-only runs (stored once), content-based runs
    sel.textContent = "";
    for (const [positional, title] of [[true, "positional attention only (the same on every image)"],
                                       [false, "content-based attention (per image)"]]) {
      const group = document.createElement("optgroup");
      group.label = title;
      D.runs.forEach((r, i) => {
        if (r.positional !== positional) return;
        const o = document.createElement("option");
        o.value = i; o.textContent = `${r.label} · ${r.experiment}`; group.appendChild(o);
      });
      if (group.children.length) sel.appendChild(group);
    }
    sel.value = String(value);
  }
  function syncControls() {
    const run = D.runs[state.run], set = D.imageSets[run.imageSet], S = set.size;
    if (state.layer !== "all") state.layer = Math.min(state.layer, run.layers.length - 1);
    state.image = Math.min(state.image, set.images.length - 1);
    state.row = Math.min(state.row, S - 1); state.col = Math.min(state.col, S - 1);
    fillRuns($("run"), state.run);
    fillSelect($("layer"), [...run.layers.map((L, i) => [i, L.name]), ["all", "all layers"]], state.layer);
    fillSelect($("image"), set.images.map((im, i) => [i, im.label]), state.image);
    const mean = $("mean");
    mean.disabled = !run.blobs.mean;
    mean.checked = state.mean && !!run.blobs.mean;
    $("mean-text").textContent = run.positional ? "mean over images (positional: every image alike)"
      : run.blobs.mean ? `mean over ${run.meanOver} test images` : "mean over test images (not stored)";
    for (const id of ["row", "col"]) $(id).max = S - 1;
    $("run-info").textContent = run.describe + (run.positional ? ". Positional attention only: stored once, the same for every image."
      : ". Content-based: stored for each image" + (run.blobs.mean ? ` and as the mean over ${run.meanOver} test images.` : "."));
    buildPanels();
  }
  function setQuery(r, c) {
    const S = D.imageSets[D.runs[state.run].imageSet].size;
    r = Math.max(0, Math.min(S - 1, r)); c = Math.max(0, Math.min(S - 1, c));
    if (r === state.row && c === state.col) return;
    state.row = r; state.col = c;
    render();
  }
  function canvasPixel(e) {
    const c = $("query-canvas"), r = c.getBoundingClientRect(), S = D.imageSets[D.runs[state.run].imageSet].size;
    return [Math.floor(((e.clientY - r.top) / r.height) * S), Math.floor(((e.clientX - r.left) / r.width) * S)];
  }
  $("run").addEventListener("change", (e) => { state.run = Number(e.target.value); syncControls(); render(); });
  $("layer").addEventListener("change", (e) => {
    state.layer = e.target.value === "all" ? "all" : Number(e.target.value); buildPanels(); render();
  });
  $("image").addEventListener("change", (e) => { state.image = Number(e.target.value); render(); });
  $("mean").addEventListener("change", (e) => { state.mean = e.target.checked; render(); });
  $("zoom").addEventListener("change", (e) => { state.zoom = e.target.checked; render(); });
  $("row").addEventListener("input", (e) => setQuery(Number(e.target.value), state.col));
  $("col").addEventListener("input", (e) => setQuery(state.row, Number(e.target.value)));
  const qc = $("query-canvas");
  qc.addEventListener("mousemove", (e) => { if (!state.pinned) setQuery(...canvasPixel(e)); });
  qc.addEventListener("click", (e) => { state.pinned = !state.pinned; setQuery(...canvasPixel(e)); });
  qc.addEventListener("keydown", (e) => {
    const step = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[e.key];
    if (step) { e.preventDefault(); state.pinned = true; setQuery(state.row + step[0], state.col + step[1]); }
  });
  try {
    $("zoom").checked = state.zoom;
    syncControls();
    render();
  } catch (err) {
    fail(err);
  }
})();
</script>
</body>
</html>
"""


if __name__ == "__main__":
    sys.exit(main())
