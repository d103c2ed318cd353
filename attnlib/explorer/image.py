"""Images for the attention explorers: a reader's own image made into a model's input, and a query pixel
on the object of an image.

`open_image` reads any file PIL can read (a path, bytes, or an open file) and raises `NotAnImage`, whose
message is one line, for anything else. `prepare_image` resizes the picture so its shorter side is the
model's input size, crops the middle square, and converts it to the data set's channels (one: grey, for
Fashion-MNIST; three: RGB), as uint8 (C, H, W) like the data sets' test images; `normalize` with the
data set's mean and std then makes it what the model takes, exactly as for a test image.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from attnlib.messages import not_a_file, one_line


class NotAnImage(ValueError):
    """A file that is not an image PIL can read; the message is one line naming it."""


def open_image(source, name: str | None = None):
    """The picture in `source` (path, bytes or a binary file) as a loaded PIL image, upright per its EXIF
    orientation. Raises NotAnImage (one line) for a missing file or one PIL cannot read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, handle = name or "the uploaded file", io.BytesIO(bytes(source))
    elif isinstance(source, (str, Path)):
        name, handle = name or str(source), Path(source)
        if not handle.is_file():
            kind = not_a_file(handle)
            raise NotAnImage(f"{name} is not an image ({f'it is {kind}' if kind else 'no such file'})")
    else:
        name, handle = name or getattr(source, "name", "the file"), source
    try:
        with Image.open(handle) as img:
            img.load()
            return to_8bit(ImageOps.exif_transpose(img))
    except UnidentifiedImageError:
        raise NotAnImage(f"{name} is not an image (PIL cannot identify its format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        why = one_line(err) or type(err).__name__
        raise NotAnImage(f"{name} is not an image ({why})") from None


WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16- or 32-bit grey, integer or float


def to_8bit(img):
    """`img` with 8 bits per channel: a 16- or 32-bit grey image scaled to 0-255 by its own range of values (the
    full 16-bit range for 16-bit integers; a float image in [0, 1] by 255, any other by its minimum and maximum),
    where a plain conversion would clip it nearly all white or black. What was done is in img.info["note"]."""
    if img.mode not in WIDE_MODES:
        return img
    values = np.asarray(img, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if img.mode == "F" and 0.0 <= low and high <= 1.0:
        low, high, how = 0.0, 1.0, "float values in [0, 1] scaled by 255"
    elif img.mode != "F" and 0.0 <= low and high <= 65535.0:
        low, high, how = 0.0, 65535.0, "16-bit values scaled by 255/65535"
    else:
        how = f"values {low:g} to {high:g} scaled to 0-255"
    scaled = np.nan_to_num((values - low) / max(high - low, 1e-12), nan=0.0, posinf=1.0, neginf=0.0)
    out = Image.fromarray(np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8), mode="L")
    out.info["note"] = f"a {img.mode} image ({how}) made 8-bit grey"
    return out


def prepare_image(img, size: int, channels: int) -> torch.Tensor:
    """(channels, size, size) uint8: `img` (a PIL image) scaled so its shorter side is `size`, the middle
    square cropped, in grey (1 channel) or RGB (3). Transparent pixels count as black, the background of
    Fashion-MNIST."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    img = img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape[0] != channels:
        raise ValueError(f"cannot make a {channels}-channel image (got {arr.shape[0]})")
    return torch.from_numpy(np.ascontiguousarray(arr))


def query_on_object(image) -> tuple[int, int]:
    """A query pixel on the object of a (C, H, W) image: among the pixels that differ most from the
    background (the median colour of the border; at least half the largest difference), preferably those
    well inside that region (80% of their 5x5 neighbourhood in it), the one nearest the centre of mass
    of the difference. On Fashion-MNIST's black background, a pixel in the middle of the garment."""
    x = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    c, h, w = x.shape
    border = np.concatenate([x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]], axis=1)  # (C, 2H + 2W)
    diff = np.abs(x - np.median(border, axis=1)[:, None, None]).sum(0)  # (H, W)
    if diff.max() <= 0:
        return h // 2, w // 2
    rows, cols = np.mgrid[0:h, 0:w]
    centre = ((diff * rows).sum() / diff.sum(), (diff * cols).sum() / diff.sum())
    strong = diff >= 0.5 * diff.max()
    # prefer pixels inside the object (their 5x5 neighbourhood mostly object), not on its edge or in a gap
    padded = np.pad(strong.astype(np.float64), 2)
    inside = sum(padded[i:i + h, j:j + w] for i in range(5) for j in range(5)) / 25 >= 0.8
    candidates = strong & inside if (strong & inside).any() else strong
    dist = np.where(candidates, (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2, np.inf)
    r, col = np.unravel_index(int(np.argmin(dist)), dist.shape)
    return int(r), int(col)
