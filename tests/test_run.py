"""The runner's bookkeeping: which notebooks an unchanged checkout may skip.

Covers attnlib.runner.run's stamps: the digest follows parameters, notebook, library and the notebooks before
(not where the checkout lies); stamps record, skip and name the notebooks before; a notebook about to run
loses its stamp on disk, and recording keeps what a notebook dropped meanwhile; dataset=auto notes whether
CIFAR-10 is there; only the timing notebook reruns on another CPU.
"""
from attnlib.runner import digest


def test_digest_follows_parameters_notebook_library_and_upstream(tmp_path):
    nb = tmp_path / "07_visualizations.ipynb"
    nb.write_text("{}")
    base = digest.notebook_digest(nb, {"profile": "quick"}, "lib1", {})
    assert digest.notebook_digest(nb, {"profile": "quick"}, "lib1", {}) == base
    assert digest.notebook_digest(nb, {"profile": "smoke"}, "lib1", {}) != base
    assert digest.notebook_digest(nb, {"profile": "quick"}, "lib2", {}) != base
    assert digest.notebook_digest(nb, {"profile": "quick"}, "lib1", {"02_quadratic": ["x", "t"]}) != base
    nb.write_text('{"cells": []}')
    assert digest.notebook_digest(nb, {"profile": "quick"}, "lib1", {}) != base


def test_paths_inside_the_checkout_do_not_change_the_digest():
    inside = {"results_dir": str(digest.ROOT / "results"), "n": 1}
    assert digest._portable(inside) == {"results_dir": "results", "n": 1}
    assert digest._portable({"results_dir": "/elsewhere/results"}) == {"results_dir": "/elsewhere/results"}


def test_stamps_record_skip_and_name_the_notebooks_before(tmp_path):
    stamps = digest.Stamps(tmp_path / ".cache" / "stamps.json")
    out = tmp_path / "02.ipynb"
    stamps.record("02_quadratic", "d2", 12.0)
    assert stamps.unchanged("02_quadratic", "d2", out) is None  # no executed copy: rerun
    out.write_text("{}")
    assert stamps.unchanged("02_quadratic", "d2", out)["seconds"] == 12.0
    assert stamps.unchanged("02_quadratic", "other", out) is None
    stamps.record("07_visualizations", "d7", 3.0)
    reread = digest.Stamps(tmp_path / ".cache" / "stamps.json")
    assert list(reread.upstream("07_visualizations")) == ["02_quadratic"]
    assert list(reread.upstream("08_report")) == ["02_quadratic", "07_visualizations"]
    (tmp_path / ".cache" / "stamps.json").write_text("{not json")
    assert digest.Stamps(tmp_path / ".cache" / "stamps.json").data == {}  # unreadable: everything reruns
    assert digest.library_digest() == digest.library_digest()


def test_a_notebook_about_to_run_loses_its_stamp_on_disk(tmp_path):
    """A forced rerun that fails or is interrupted must not leave the old stamp saying it succeeded."""
    path = tmp_path / "stamps.json"
    stamps = digest.Stamps(path)
    stamps.record("08_report", "d8", 5.0)
    digest.Stamps(path).forget("08_report")
    assert digest.Stamps(path).data == {}


def test_environment_says_whether_cifar10_is_there_for_dataset_auto(tmp_path):
    assert "cifar10_present" not in digest.environment({"dataset": "fashion_mnist", "data_root": str(tmp_path)})
    before = digest.environment({"dataset": "auto", "data_root": str(tmp_path)})
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    after = digest.environment({"dataset": "auto", "data_root": str(tmp_path)})
    assert before["cifar10_present"] is False and after["cifar10_present"] is True and after["device"]


def test_recording_a_stamp_keeps_what_a_notebook_dropped_meanwhile(tmp_path):
    """Notebook 08 drops the stamp of a notebook whose results it found damaged, while the runner holds the
    stamps in memory; the runner's next record must not write the dropped one back."""
    from attnlib.results import forget_stamps

    path = tmp_path / "stamps.json"
    stamps = digest.Stamps(path)
    stamps.record("02_quadratic", "d2", 1.0)
    stamps.record("05_resnet", "d5", 1.0)
    forget_stamps(path, ["02_quadratic"])  # what notebook 08 does from inside its kernel
    stamps.record("08_report", "d8", 1.0)
    assert set(digest.Stamps(path).data) == {"05_resnet", "08_report"}


def test_only_the_timing_notebook_reruns_on_another_cpu(monkeypatch):
    """The timing notebook's results belong to this CPU (model, flags, threads); the others' only to the kind."""
    base = {n: digest.environment({}, n) for n in ("02_quadratic", "06_timing")}
    monkeypatch.setattr(digest, "device_name", lambda device: "cpu: Another CPU (avx2; 2 threads)")
    assert digest.environment({}, "02_quadratic") == base["02_quadratic"]
    assert digest.environment({}, "06_timing") != base["06_timing"]
