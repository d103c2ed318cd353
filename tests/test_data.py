"""Data loading on generated files (the real loaders, fed data we make), and batch augmentation.

Covers attnlib.data: Fashion-MNIST's idx files and CIFAR-10 through torchvision (a lone archive is
extracted); a missing data set, or an unreachable download, is one line naming the folder, archive or
Debian package; dataset=auto falls back to Fashion-MNIST and says why, and names both ways out when nothing
is there; subsets fixed by the seed; the batch augmentation (padded crop, maybe a flip); the loader
normalises, augments and gives the same batches for the same (seed, epoch); unknown data sets refused.
"""
import gzip
import pickle

import numpy as np
import pytest
import torch

from attnlib import data
from attnlib.data import DataError, load_dataset, make_synthetic, normalize
from attnlib.loaders import augment, loaders, shard_bounds


def write_fake_fashion_mnist(folder, n_train=30, n_test=20):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = data.FASHION_MNIST_FILES[split]
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        with gzip.open(folder / images, "wb") as fh:
            fh.write(np.array([0, 0, 8, 3], dtype=np.uint8).tobytes() + np.array([n, 28, 28], dtype=">i4").tobytes() + x.tobytes())
        with gzip.open(folder / labels, "wb") as fh:
            fh.write(np.array([0, 0, 8, 1], dtype=np.uint8).tobytes() + np.array([n], dtype=">i4").tobytes() + y.tobytes())
    return x, y


def test_fashion_mnist_reads_idx_files(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", ())
    x_test, y_test = write_fake_fashion_mnist(tmp_path / "fashion-mnist")
    ds = load_dataset("fashion_mnist", root=tmp_path, verbose=False)
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_train.dtype == torch.uint8
    assert torch.equal(ds.x_test[:, 0], torch.from_numpy(x_test))
    assert torch.equal(ds.y_test, torch.from_numpy(y_test.astype(np.int64)))
    assert ds.model_overrides() == {"image_size": 28, "in_channels": 1, "num_classes": 10}


def test_missing_fashion_mnist_is_one_line_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", ())
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion_mnist", root=tmp_path, verbose=False)
    assert "\n" not in str(err.value)


def write_fake_cifar10(root, n=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}, fh)
    return batch


def test_cifar10_loads_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # our files are not the real archive
    last = write_fake_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path, download=False, verbose=False)
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_test.shape == (20, 3, 32, 32)
    assert torch.equal(ds.x_test.reshape(20, -1), torch.from_numpy(last["data"]))  # CHW order preserved
    assert ds.classes[0] == "airplane" and ds.num_classes == 10


def test_missing_cifar10_names_folder_and_archive(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path, download=False, verbose=False)
    msg = str(err.value)
    assert str(tmp_path) in msg and "cifar-10-python.tar.gz" in msg and "\n" not in msg


def test_unreachable_download_fails_fast_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_network_reaches", lambda host, **kw: False)
    with pytest.raises(DataError, match="unreachable"):
        load_dataset("cifar10", root=tmp_path, download=True, verbose=False)


def test_auto_falls_back_to_fashion_mnist_and_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", ())
    write_fake_fashion_mnist(tmp_path / "fashion-mnist")
    ds = load_dataset("auto", root=tmp_path, download=False)
    assert ds.name == "fashion_mnist"
    out = capsys.readouterr().out
    assert "DATASET: fashion_mnist" in out and "CIFAR-10 not found" in out


def test_auto_with_nothing_available_names_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", ())
    with pytest.raises(DataError) as err:
        load_dataset("auto", root=tmp_path, download=False, verbose=False)
    assert "cifar-10-python.tar.gz" in str(err.value) and "dataset-fashion-mnist" in str(err.value)


def test_subsets_are_fixed_by_the_seed():
    a = load_dataset("synthetic", train_subset=100, test_subset=50, verbose=False, n_train=300)
    b = load_dataset("synthetic", train_subset=100, test_subset=50, verbose=False, n_train=300)
    assert len(a.x_train) == 100 and len(a.x_test) == 50
    assert torch.equal(a.x_train, b.x_train)


def test_augment_is_a_padded_crop_and_maybe_a_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1  # no zeros inside
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        y = augment(x, g, padding=2)
        assert y.shape == x.shape
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
        for i in range(2):
            windows = [padded[i, :, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
            assert any(torch.equal(y[i], w) or torch.equal(y[i], w.flip(-1)) for w in windows)


def test_loader_normalises_augments_and_is_reproducible_per_epoch():
    ds = make_synthetic(n_train=64, n_test=32, image_size=8)
    train, test = loaders(ds, batch_size=16, seed=3)
    train.set_epoch(2)
    first = [x.clone() for x, _ in train]
    train.set_epoch(2)
    again = [x for x, _ in train]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    train.set_epoch(3)
    assert not torch.equal(first[0], next(iter(train))[0])
    xs = torch.cat([x for x, _ in test])
    assert torch.allclose(xs, normalize(ds.x_test, ds.mean, ds.std))  # no augmentation at test time
    assert len(train) == 4 and sum(len(y) for _, y in train) == 64


def test_unknown_dataset_is_rejected():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet", verbose=False)


def test_cifar10_archive_alone_is_extracted(tmp_path, monkeypatch):
    import tarfile

    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    src = tmp_path / "src"
    write_fake_cifar10(src)
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / data.CIFAR10_ARCHIVE, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10", root=root, download=False, verbose=False)
    assert ds.name == "cifar10" and len(ds.x_test) == 20


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_loaders_split_each_global_batch_into_contiguous_shards(world):
    """Each process's training batches are its contiguous rows of the 1-process batches (same order, same
    augmentation); a batch with fewer rows than processes gives the others a stand-in row (shard_rows 0),
    and the test batches are split without stand-ins."""
    ds = make_synthetic(n_train=46, n_test=20, image_size=8)  # batches of 15, 15, 15 and 1
    one_train, one_test = loaders(ds, batch_size=15, seed=3, eval_batch_size=8)
    shards = [loaders(ds, batch_size=15, seed=3, eval_batch_size=8, rank=r, world=world) for r in range(world)]
    for loader in [one_train] + [train for train, _ in shards]:
        loader.set_epoch(4)
    per_rank = [list(train) for train, _ in shards]
    for i, (x, y) in enumerate(one_train):
        own = [per_rank[r][i] for r in range(world) if shards[r][0].shard_rows(i)]
        assert torch.equal(torch.cat([xr for xr, _ in own]), x) and torch.equal(torch.cat([yr for _, yr in own]), y)
        assert sum(shards[r][0].shard_rows(i) for r in range(world)) == shards[0][0].batch_rows(i) == len(y)
        for r in range(world):
            if not shards[r][0].shard_rows(i):  # the stand-in: one real row of the batch, weighed 0 by fit
                assert i == 3 and torch.equal(per_rank[r][i][0], x[-1:])
    assert [len(y) for _, y in per_rank[0]] == ([8, 8, 8, 1] if world == 2 else [5, 5, 5, 1])
    test_x = torch.cat([x for _, test in shards for x, _ in test])  # rank by rank; equal only as sets of rows
    one_x = torch.cat([x for x, _ in one_test])
    assert sorted(map(tuple, test_x.flatten(1).tolist())) == sorted(map(tuple, one_x.flatten(1).tolist()))


def test_shard_bounds_cover_a_batch_once():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1
    with pytest.raises(ValueError, match="rank must be in"):
        loaders(make_synthetic(n_train=8, n_test=8, image_size=8), batch_size=4, rank=2, world=2)
