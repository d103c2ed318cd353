"""A static attention explorer: one self-contained HTML file that shows where every head of every layer
attends, for every query pixel, with no Python, no kernel and no network.

`write_page(path, runs, ...)` (notebook 07 writes results/<profile>/explorer.html with it) stores, per run:

- positional-only models (sa_quadratic, sa_quadratic_aniso, sa_learned: no content term), whose attention
  is the same for every image: each layer's (heads, T, T) once;
- the content-based models (learned + content, ViT, SAN): each image's maps, and their mean over
  `average_images` test images (the paper averages over 100);
- where the checkpoint recorded them (attnlib.training.records.attention_snapshot), the maps after each epoch
  of training, from initialisation on (at most EPOCHS_SHOWN of them): for a positional-only model these are its
  maps on every image, for a content-based one on test image 0, the image they were recorded on. The page's epoch
  slider and its play button show the heads move from where they started to where training left them.

Each query's map over its keys (a head's row of the attention matrix) is quantised to uint8 between its own
minimum and maximum (two float32 per row), so the error is at most (max - min) / 510 per weight; the rows
of a run and image, all layers together, are gzipped and base64-encoded into the page, which decodes them
with the browser's DecompressionStream only when that run or image is first shown. The page draws with
<canvas>: pick the run, the layer (or all layers) and the image; move over the image (or click, or use
the sliders) to move the query pixel; every head's map is drawn at once, over the image.

The page itself is web/explorer.html, web/explorer.css and web/explorer.js in this package: `render_page` inlines
the style, the script and the data into one file. `python -m attnlib.explore IMAGE` (attnlib.explorer.cli) writes
it for your own image(s).
"""
from __future__ import annotations

import base64
import dataclasses
import gzip
import html
import json
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps

from attnlib import results
from attnlib.data import normalize
from attnlib.evidence.attention_maps import LayerMaps, attention_maps, mean_attention
from attnlib.explorer.image import prepare_image, query_on_object
from attnlib.explorer.trained_runs import TrainedRun, first_view
from attnlib.models.sa_net import SelfAttentionNet

WEB = resources.files("attnlib.explorer") / "web"  # the page's HTML, CSS and JavaScript
EXPERIMENTS = ("01_learned_2d", "02_quadratic", "03_san", "04_vit")
EPOCHS_SHOWN = 13  # recorded epochs per run in the page at most: initialisation, evenly spaced ones, the last


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
    shown = [i for i in test_images if i < len(run.data.x_test)] or ([0] if test_images else [])
    for index in shown:
        x = run.data.x_test[index]
        items.append({"label": f"test image {index} ({run.data.classes[int(run.data.y_test[index])]})"})
        pixels.append(x)
    probe = shown.index(0) if 0 in shown else -1
    for name, img in own_images:
        items.append({"label": f"your image {name}"})
        pixels.append(prepare_image(img, run.data.image_size, run.data.channels))
    stacked = torch.stack(pixels).to(torch.uint8)
    for item, x in zip(items, stacked):
        item["pixels"] = _b64(x.numpy().tobytes())
        item["query"] = list(query_on_object(x))
    # probe: which of these images is test image 0, the one each epoch's maps were recorded on (-1: none)
    return {"name": run.data.name, "size": run.data.image_size, "channels": run.data.channels, "images": items,
            "probe": probe}, stacked


def recorded_epochs(snapshots: list[dict], layers: list[LayerMaps], final_epoch: int,
                    most: int = EPOCHS_SHOWN) -> list[tuple[int, list[LayerMaps]]]:
    """The epochs of a run's recorded snapshots (TrainedRun.snapshots) to show beside its trained maps `layers`, as
    (epoch, one LayerMaps per layer): at most `most` - 1 of them, evenly spaced from initialisation, before
    `final_epoch` (the trained maps stand for that one). [] when the snapshots do not match the layers' shapes
    (a model whose recorded attention is not the one drawn)."""
    def matches(snap: dict) -> bool:
        return len(snap["layers"]) == len(layers) and all(
            tuple(w.shape) == tuple(layer.weights.shape[1:]) for w, layer in zip(snap["layers"], layers))

    earlier = [s for s in snapshots if s["epoch"] < final_epoch]
    if not earlier or not all(map(matches, earlier)):
        return []
    keep = np.unique(np.linspace(0, len(earlier) - 1, min(len(earlier), most - 1)).round().astype(int))
    return [(int(earlier[i]["epoch"]),
             [dataclasses.replace(layer, weights=w[None].float()) for w, layer in zip(earlier[i]["layers"], layers)])
            for i in keep]


def _run_entry(run: TrainedRun, model: torch.nn.Module, pixels: torch.Tensor, image_set: int, mean_over: int,
               mean: list[LayerMaps] | None, device: str, probe_shown: bool) -> dict:
    """The page's entry for a run: what it is, its layers, and its maps gzipped (encode_layers): once for a
    positional-only model, else for each image of its set (`pixels`) and, when mean_over > 0, their mean over
    that many test images (`mean`, when it is that mean, else computed here); and the maps its checkpoint recorded
    after earlier epochs ("epoch:N"; `epochs` lists them, then the trained one's epoch), for a content-based model
    only when the image they were recorded on is among its images (`probe_shown`)."""
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
    earlier = recorded_epochs(run.snapshots(), layers, run.epochs_done) if positional or probe_shown else []
    blobs.update({f"epoch:{epoch}": _b64(encode_layers(maps, 0)) for epoch, maps in earlier})
    return {"label": run.label, "runId": run.run.run_id, "model": run.run.model, "variant": run.run.variant,
            "experiment": run.experiment, "describe": run.describe(), "positional": positional,
            "imageSet": image_set, "meanOver": mean_over if not positional else 0,
            "epochs": [epoch for epoch, _ in earlier] + [run.epochs_done] if earlier else [],
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
                                  mean_over, (means or {}).get(run.label), device,
                                  sets[_image_set_key(run)]["probe"] >= 0))
    start = start_run if any(start_run is r for r in runs) else first_view(list(runs))
    start_index = next(i for i, r in enumerate(runs) if r is start)
    first_image = sets[_image_set_key(start)]["images"][0]
    return {"runs": entries, "imageSets": list(sets.values()), "cmap": _colormap_hex(),
            "start": {"run": start_index, "layer": "all", "image": 0, "mean": False, "zoom": False,
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
            "layer and head for every query pixel; "
            f"{_count(len(runs) - len(content), 'positional-only run')} stored once")
    if means:
        text += (f"; the mean over {max(r['meanOver'] for r in means)} test images for "
                 f"{_count(len(means), 'content-based run')}")
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def page_template() -> str:
    """The page's web files (web/explorer.html, .css, .js in this package) as one HTML text, the style and the
    script inlined: the page written stays one file that needs no network."""
    def read(name: str) -> str:
        return (WEB / name).read_text(encoding="utf-8")
    return read("explorer.html").replace("__STYLE__", read("explorer.css")).replace("__SCRIPT__", read("explorer.js"))


def render_page(data: dict, title: str = "Attention explorer", subtitle: str = "") -> str:
    """The HTML page: the template with the data inlined (no external script, style, font or request)."""
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (page_template().replace("__TITLE__", html.escape(title)).replace("__SUBTITLE__", html.escape(subtitle))
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
