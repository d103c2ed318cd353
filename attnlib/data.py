"""Data sets as uint8 tensors, loaded once into memory as (N, C, H, W); attnlib.loaders turns them into
batches (converted, normalised and augmented with tensor ops on the device the batch goes to: no per-image
Python or PIL in the training loop).

- cifar10: torchvision's CIFAR-10 in a data folder (downloaded only where allowed and reachable).
- fashion_mnist: Fashion-MNIST's idx files, as Debian's `dataset-fashion-mnist` installs them under
  /usr/share/datasets/fashion-mnist. Kept at its native 28x28, one channel: the model is built with
  image_size=28, in_channels=1, so the 2x2 downsampling gives a 14x14 grid of 196 tokens (CIFAR-10:
  16x16 = 256). Normalised with its own mean and std.
- synthetic: generated images whose class is carried by a colour template, a position-dependent
  pattern and noise; small models learn it in one epoch. For tests and the smoke profile.
- auto: CIFAR-10 where it is present or can be downloaded, otherwise Fashion-MNIST; it says which.
"""
from __future__ import annotations

import gzip
import os
import socket
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets import cifar as tv_cifar
from torchvision.datasets.utils import extract_archive

from attnlib.messages import first_few, one_line

DATASETS = ("auto", "cifar10", "fashion_mnist", "synthetic")


def image_shapes(name: str, synthetic_image_size: int = 16) -> list[tuple[int, int]]:
    """The (side in pixels, channels) of the images data set `name` may give, before it is loaded (auto:
    either real data set's)."""
    real = {"cifar10": [(32, 3)], "fashion_mnist": [(28, 1)]}
    return {**real, "auto": real["cifar10"] + real["fashion_mnist"], "synthetic": [(synthetic_image_size, 3)]}[name]
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URL_HOST = "www.cs.toronto.edu"
FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DataError(RuntimeError):
    """A data set cannot be had; the message is one line that says what to do."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) uint8
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    note: str = ""  # where it came from / why it was chosen
    augment: bool = True  # the paper's crop + flip is meaningful for this data set

    @property
    def channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def model_overrides(self) -> dict:
        """What a model needs to know about this data: image_size, in_channels, num_classes."""
        return {"image_size": self.image_size, "in_channels": self.channels, "num_classes": self.num_classes}

    def with_shuffled_labels(self, seed: int) -> "Dataset":
        """This data set with its training labels permuted (seeded by `seed`): the same images and class counts,
        but no label tells anything about its image, so a network trained on it cannot learn the task; its test
        labels stay true (its test accuracy reads chance)."""
        order = torch.randperm(len(self.y_train), generator=torch.Generator().manual_seed(seed))
        return replace(self, y_train=self.y_train[order],
                                   note=f"{self.note}; training labels permuted (seed {seed})".lstrip("; "))

    def describe(self) -> str:
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test images of "
                f"{self.channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes"
                + (f" ({self.note})" if self.note else ""))


# -- CIFAR-10 ------------------------------------------------------------------------------------
def cifar10_present(root: Path) -> bool:
    return (root / "cifar-10-batches-py" / "data_batch_1").exists() or (root / CIFAR10_ARCHIVE).exists()


def _network_reaches(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cifar10_damaged(folder: Path) -> list[str]:
    """The files of an extracted CIFAR-10 (torchvision's layout) that are missing or fail their MD5 check."""
    files = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    return [name for name, md5 in files if not tv_cifar.check_integrity(str(folder / name), md5)]


def load_cifar10(root: str | Path = "data", download: bool = True) -> Dataset:
    """CIFAR-10 from `root` (torchvision layout); downloads only if allowed and the host answers. A folder that
    is incomplete or damaged (an extraction that was cut short) is extracted again from the archive beside it."""
    root = Path(root)
    folder, archive = root / "cifar-10-batches-py", root / CIFAR10_ARCHIVE
    damaged = cifar10_damaged(folder) if folder.is_dir() else None  # None: no folder at all
    if damaged is None or damaged:
        if archive.exists():
            if damaged:
                print(f"{folder}/ is incomplete or damaged ({first_few(damaged)} missing or failing their checksum): "
                      f"extracting {archive} again", flush=True)
            try:
                extract_archive(str(archive), str(root))
            except Exception as err:  # a truncated or foreign archive
                raise DataError(f"{archive} could not be extracted ({type(err).__name__}: {one_line(err)}); "
                                f"replace it with the archive from the CIFAR-10 page") from None
            still = cifar10_damaged(folder) if folder.is_dir() else ["cifar-10-batches-py/"]
            if still:
                raise DataError(f"{archive} does not hold a whole CIFAR-10 ({', '.join(still[:3])} missing or failing "
                                "their checksum after extracting it): replace it with the archive from the "
                                "CIFAR-10 page")
        elif damaged and not (download and _network_reaches(CIFAR10_URL_HOST)):
            raise DataError(f"{folder}/ is incomplete or damaged ({first_few(damaged)} missing or failing their "
                            "checksum): place "
                            f"{CIFAR10_ARCHIVE} in {root}/ (it is extracted again) or delete the folder")
    if not cifar10_present(root):
        if not download:
            raise DataError(f"CIFAR-10 not found in {root}/: place {CIFAR10_ARCHIVE} there (or allow download)")
        if not _network_reaches(CIFAR10_URL_HOST):
            raise DataError(f"CIFAR-10 not found in {root}/ and {CIFAR10_URL_HOST} is unreachable: "
                            f"place {CIFAR10_ARCHIVE} in {root}/ or use dataset=fashion_mnist")
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except Exception as err:  # torchvision raises several kinds; one line is what a user needs
        raise DataError(f"CIFAR-10 could not be loaded from {root}/ ({type(err).__name__}: {one_line(err)}); "
                        f"place {CIFAR10_ARCHIVE} there") from None

    def to_tensors(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    (xtr, ytr), (xte, yte) = to_tensors(train), to_tensors(test)
    return Dataset("cifar10", xtr, ytr, xte, yte, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),
                   classes=list(train.classes), note=f"from {root}/")


# -- Fashion-MNIST -------------------------------------------------------------------------------
def fashion_mnist_dirs(root: str | Path = "data") -> list[Path]:
    """Where Fashion-MNIST's idx files are looked for, in order: $FASHION_MNIST_DIR, <root>/fashion-mnist, Debian's."""
    candidates = [Path(p) for p in [os.environ.get("FASHION_MNIST_DIR")] if p]
    return candidates + [Path(root) / "fashion-mnist", *FASHION_MNIST_DIRS]


def fashion_mnist_dir(root: str | Path = "data") -> Path | None:
    """The first folder of fashion_mnist_dirs() that holds all four idx files."""
    for d in fashion_mnist_dirs(root):
        if all((d / f).exists() for pair in FASHION_MNIST_FILES.values() for f in pair):
            return d
    return None


IDX_MAGIC = {"images": 2051, "labels": 2049}  # the idx format's magic numbers: uint8 data, 3 or 1 dimensions


def _read_idx(path: Path, kind: str) -> np.ndarray:
    """Fashion-MNIST images (N, 28, 28) or labels (N,) from a gzipped idx file, checked: a file that is cut
    off, empty, not gzip or not idx raises DataError naming it."""
    def damaged(why: str):
        return DataError(f"{path} is damaged ({why}): replace it with the original file (Debian: "
                         "apt-get install --reinstall dataset-fashion-mnist)")

    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise damaged(f"{type(err).__name__}: {one_line(err) or 'cut off'}") from None
    header = 16 if kind == "images" else 8
    if len(raw) < header:
        raise damaged(f"{len(raw)} bytes, shorter than an idx header")
    magic, n = struct.unpack(">II", raw[:8])
    if magic != IDX_MAGIC[kind]:
        raise damaged(f"not an idx file of {kind}")
    if n == 0:
        raise damaged(f"it holds no {kind}")
    shape = (n, *struct.unpack(">II", raw[8:16])) if kind == "images" else (n,)
    if shape[1:] not in ((28, 28), ()):
        raise damaged(f"images of {shape[1]}x{shape[2]} pixels, not 28x28")
    if len(raw) - header != int(np.prod(shape)):
        raise damaged(f"{len(raw) - header} bytes of data where its header announces {n} {kind}")
    out = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    if kind == "labels" and n and out.max() > 9:
        raise damaged(f"a label of {out.max()}, outside 0-9")
    return out


def load_fashion_mnist(root: str | Path = "data") -> Dataset:
    folder = fashion_mnist_dir(root)
    if folder is None:
        searched = ", ".join(f"{d}/" for d in fashion_mnist_dirs(root))
        raise DataError(f"Fashion-MNIST not found in {searched}: run `apt-get install dataset-fashion-mnist` "
                        f"(Debian) or put its four idx .gz files in {Path(root) / 'fashion-mnist'}/")
    out = {}
    for split, (images, labels) in FASHION_MNIST_FILES.items():
        x = torch.from_numpy(_read_idx(folder / images, "images").reshape(-1, 1, 28, 28).copy())
        y = torch.from_numpy(_read_idx(folder / labels, "labels").astype(np.int64))
        if len(x) != len(y):
            raise DataError(f"Fashion-MNIST {split} files in {folder}/ disagree: {len(x)} images, {len(y)} labels")
        out[split] = (x, y)
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    return Dataset("fashion_mnist", *out["train"], *out["test"], mean=(0.2860,), std=(0.3530,),
                   classes=classes, note=f"from {folder}/")


# -- synthetic -----------------------------------------------------------------------------------
def make_synthetic(n_train: int = 512, n_test: int = 256, image_size: int = 16, channels: int = 3,
                   num_classes: int = 10, seed: int = 0) -> Dataset:
    """Images whose class shows in a colour template and an oriented stripe pattern, plus noise."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(num_classes, channels, 1, 1, generator=g)
    angles = torch.rand(num_classes, generator=g) * torch.pi
    freq = 2 * torch.pi / max(4.0, image_size / 3)
    r = torch.arange(image_size).float()
    rr, cc = torch.meshgrid(r, r, indexing="ij")
    stripes = torch.sin(freq * (rr[None] * torch.cos(angles)[:, None, None]
                                + cc[None] * torch.sin(angles)[:, None, None]))

    def sample(n):
        y = torch.randint(num_classes, (n,), generator=g)
        x = (0.5 * colours[y] + 0.25 * stripes[y][:, None] + 0.25
             + 0.15 * torch.randn(n, channels, image_size, image_size, generator=g))
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    (xtr, ytr), (xte, yte) = sample(n_train), sample(n_test)
    mean = tuple(xtr.float().div(255).mean(dim=(0, 2, 3)).tolist())
    std = tuple(xtr.float().div(255).std(dim=(0, 2, 3)).tolist())
    return Dataset("synthetic", xtr, ytr, xte, yte, mean=mean, std=std,
                   classes=[f"class{i}" for i in range(num_classes)], note=f"generated, seed {seed}")


# -- choosing ------------------------------------------------------------------------------------
def _subset(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced-in-expectation random subset of n examples (all when n is 0 or >= len)."""
    if not n or n >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def load_dataset(name: str = "auto", root: str | Path = "data", train_subset: int = 0, test_subset: int = 0,
                 download: bool = True, seed: int = 0, verbose: bool = True, **synthetic_kwargs) -> Dataset:
    """Load a data set by name; `auto` takes CIFAR-10 if it can be had, otherwise Fashion-MNIST."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if name == "synthetic":
        ds = make_synthetic(**synthetic_kwargs)
    elif name == "cifar10":
        ds = load_cifar10(root, download)
    elif name == "fashion_mnist":
        ds = load_fashion_mnist(root)
    else:
        try:
            ds = load_cifar10(root, download)
            ds.note += "; dataset=auto took CIFAR-10"
        except DataError as cifar_err:
            try:
                ds = load_fashion_mnist(root)
            except DataError as fm_err:
                raise DataError(f"no data set available. {cifar_err}. Or: {fm_err}") from None
            ds.note += f"; dataset=auto took Fashion-MNIST because {cifar_err}"
    ds.x_train, ds.y_train = _subset(ds.x_train, ds.y_train, train_subset, seed)
    ds.x_test, ds.y_test = _subset(ds.x_test, ds.y_test, test_subset, seed + 1)
    if train_subset or test_subset:
        ds.note += f"; subset {len(ds.x_train)} train / {len(ds.x_test)} test"
    if verbose:
        banner = "=" * 78
        print(f"{banner}\nDATASET: {ds.describe()}\n{banner}", flush=True)
    return ds


# -- batches -------------------------------------------------------------------------------------
def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, scaled to [0, 1] then standardised per channel."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - m) / s


