"""Parameter files: typed, checked before work starts, one clear line for every mistake.

Covers attnlib.experiments.params: every committed file valid and naming its profile (a file naming another profile
than its folder refused), the paper profile being the published setting, the committed results belonging
to the committed parameters; bad values, broken YAML and the command line (`python -m attnlib.params`,
exit 2) each one line naming file and key; ints taken where floats are expected; the runner checking every
file before running anything; downsample dividing the data set's images; every training option having a
notebook parameter of the same name; `per_model` and `hierarchical`; a notebook taking every setting from
its profile's file, with what it sets itself or papermill injects on top (a list given as text, as
papermill's -p gives it, read as the list).
"""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_runner

from attnlib.experiments import params, settings
from attnlib.experiments.params import ParamsError, from_mapping
from attnlib.experiments.settings import TrainParams

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "params").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_parameter_file_is_valid(path):
    p = params.load(path)
    assert isinstance(p, settings.params_class(path.stem))


def test_paper_profile_is_the_published_setting():
    p = params.load(ROOT / "params/paper/02_quadratic.yaml")
    assert (p.dataset, p.epochs, p.layers, p.hidden, p.ff, p.batch_size, p.lr) == ("cifar10", 300, 6, 400, 512, 100, 0.1)
    assert (p.momentum, p.weight_decay, p.schedule, p.warmup, p.seeds) == (0.9, 1e-4, "cosine", 0.05, [42])
    assert 9 in p.heads


@pytest.mark.parametrize("values, message", [
    ({"epoch": 3}, "unknown key 'epoch' (did you mean 'epochs'?)"),
    ({"epochs": "3"}, "epochs must be int, got '3'"),
    ({"epochs": 2.5}, "epochs must be int"),
    ({"heads": 9}, "heads must be a list of int"),
    ({"dropout": True}, "dropout must be float"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"dropout": 1.5}, "dropout must be in [0, 1)"),
    ({"precision": "fp16"}, "precision must be one of fp32, bf16"),
    ({"dataset": "imagenet"}, "dataset must be one of"),
    ({"models": ["sa_gaussian"]}, "unknown model 'sa_gaussian'"),
    ({"schedule": "step"}, "milestones must list epochs"),
    ({"lr": -0.1}, "lr must be positive"),
    ({"models": ["resnet18"], "per_model": {"vit": {"lr": 0.1}}}, "per_model names 'vit', which is not in models"),
    ({"models": ["resnet18"], "per_model": {"resnet18": {"widht": 8}}},
     "per_model.resnet18 has unknown option 'widht' (did you mean 'width'?)"),
    ({"models": ["resnet18"], "per_model": {"resnet18": {"lr": -1}}}, "per_model.resnet18.lr must be positive"),
    ({"models": ["resnet18"], "per_model": {"resnet18": {"milestones": 80}}},
     "per_model.resnet18.milestones must be a list of int"),
    ({"models": ["resnet18"], "per_model": {"resnet18": {"width": "8"}}}, "per_model.resnet18.width must be int, got '8'"),
    ({"models": ["vit"], "per_model": {"vit": {"heads": 4}}}, "per_model.vit has unknown option 'heads'"),
    ({"models": ["vit"], "per_model": {"vit": {"patch_size": 3}}, "dataset": "cifar10"},
     "per_model.vit gives vit an invalid configuration for 32x32x3 images: patch_size 3 does not divide"),
])
def test_bad_values_name_the_key_in_one_line(values, message):
    with pytest.raises(ParamsError) as err:
        from_mapping(TrainParams, values, where="params/x.yaml")
    text = str(err.value)
    assert text.startswith("params/x.yaml: ") and message in text and "\n" not in text


def test_ints_are_accepted_where_floats_are_expected():
    assert from_mapping(TrainParams, {"lr": 1, "weight_decay": 0}).lr == 1.0


def test_cli_rejects_a_bad_file_with_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "01_learned_2d.yaml"
    bad.write_text("epochs: 3\nbatchsize: 10\n")
    out = subprocess.run([sys.executable, "-m", "attnlib.params", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown key 'batchsize'" in out.stderr


def test_broken_yaml_is_one_line(tmp_path):
    bad = tmp_path / "01_learned_2d.yaml"
    bad.write_text("epochs: [3\n")
    with pytest.raises(ParamsError, match="not valid YAML at line"):
        params.load(bad)


def test_runner_checks_parameter_files_before_running_anything(tmp_path):
    out = run_runner("--dataset", "mnist", "--results-dir", str(tmp_path))
    assert out.returncode == 2
    assert "dataset must be one of" in out.stderr and out.stderr.strip().count("\n") == 0
    assert not (tmp_path / "smoke").exists()  # nothing ran, nothing written


def test_downsample_must_divide_the_images_of_the_dataset():
    with pytest.raises(ParamsError, match="downsample 3 does not divide the 32-pixel images"):
        from_mapping(TrainParams, {"dataset": "cifar10", "downsample": 3})
    with pytest.raises(ParamsError, match="28-pixel"):
        from_mapping(TrainParams, {"dataset": "auto", "downsample": 8})


def test_every_training_option_has_a_notebook_parameter_of_the_same_name():
    import dataclasses

    from attnlib.experiments.grid import train_config
    from attnlib.training.train import TrainConfig
    p = from_mapping(TrainParams, {"lr": 0.3, "milestones": [5], "schedule": "step", "precision": "bf16"})
    cfg = train_config(p, seed=7)
    assert (cfg.lr, cfg.milestones, cfg.schedule, cfg.precision, cfg.seed) == (0.3, [5], "step", "bf16", 7)
    names = {f.name for f in dataclasses.fields(TrainParams)}
    assert {f.name for f in dataclasses.fields(TrainConfig)} - {"seed"} <= names


def test_per_model_sets_one_models_options_and_training_fields():
    from types import SimpleNamespace

    from attnlib.experiments.grid import plan
    p = from_mapping(TrainParams, {"models": ["resnet18", "vit", "sa_quadratic"], "heads": [4, 9], "seeds": [1, 2],
                                   "lr": 0.1, "hidden": 36, "per_model": {"resnet18": {"lr": 0.01, "width": 8},
                                                                          "vit": {"stem_channels": 16}}})
    data = SimpleNamespace(name="synthetic", x_train=range(10), x_test=range(5),
                           model_overrides=lambda: {"image_size": 32, "in_channels": 3, "num_classes": 10})
    runs = plan(p, data)
    resnet = [r for r in runs if r.model == "resnet18"]
    assert len(resnet) == 2 and {r.heads for r in resnet} == {None}  # no heads: one run per seed
    assert all(r.train.lr == 0.01 and r.overrides["width"] == 8 and "hidden" not in r.overrides for r in resnet)
    assert all(r.run_id.startswith("resnet18-s") and r.variant == "standard" for r in resnet)
    vit = [r for r in runs if r.model == "vit"]
    assert sorted((r.heads, r.seed) for r in vit) == [(4, 1), (4, 2), (9, 1), (9, 2)]
    assert all(r.train.lr == 0.1 and r.overrides["stem_channels"] == 16 and r.overrides["hidden"] == 36 for r in vit)
    assert all(r.overrides["patch_size"] == p.downsample for r in vit)
    assert len({r.run_id for r in runs}) == len(runs) == 2 + 4 + 4


@pytest.mark.parametrize("profile", ["quick", "evidence"])
def test_committed_results_belong_to_the_committed_parameters(profile):
    """The run ids of results/<profile>/ are what the profile's parameter files plan on Fashion-MNIST, so
    `make reproduce` reads them back instead of training again, and a change that silently alters
    a run's fingerprint (config, training, data) fails here."""
    from types import SimpleNamespace

    import pandas as pd

    from attnlib.experiments.grid import plan
    checked = 0
    for path in sorted((ROOT / "params" / profile).glob("*.yaml")):
        csv = ROOT / "results" / profile / "metrics" / f"{path.stem}.csv"
        if settings.params_class(path.stem) is not TrainParams or not csv.exists():
            continue
        p = params.load(path)  # Fashion-MNIST has 60,000 / 10,000 images, or the subsets the file asks for
        data = SimpleNamespace(name="fashion_mnist", x_train=range(p.train_subset or 60_000),
                               x_test=range(p.test_subset or 10_000),
                               model_overrides=lambda: {"image_size": 28, "in_channels": 1, "num_classes": 10})
        planned = {r.run_id for r in plan(p, data)}
        assert planned == set(pd.read_csv(csv)["run_id"]), path.name
        checked += 1
    assert checked >= 2


def test_hierarchical_lists_the_weight_sharing_settings_to_train():
    from types import SimpleNamespace

    from attnlib.experiments.grid import plan
    data = SimpleNamespace(name="synthetic", x_train=range(10), x_test=range(5),
                           model_overrides=lambda: {"image_size": 16, "in_channels": 3, "num_classes": 10})
    p = from_mapping(TrainParams, {"models": ["sa_quadratic", "resnet18"], "heads": [9], "hierarchical": [False, True]})
    runs = {(r.model, r.variant): r for r in plan(p, data)}
    assert set(runs) == {("sa_quadratic", "9 heads"), ("sa_quadratic", "9 heads, hierarchical"), ("resnet18", "standard")}
    assert runs[("sa_quadratic", "9 heads, hierarchical")].overrides["hierarchical"] is True
    assert "-hier-" in runs[("sa_quadratic", "9 heads, hierarchical")].run_id
    with pytest.raises(ParamsError, match="hierarchical must be a list of bool"):
        from_mapping(TrainParams, {"hierarchical": True})


@pytest.mark.parametrize("path", sorted((ROOT / "params").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_parameter_file_names_its_profile(path):
    """So `papermill NOTEBOOK OUT -f params/quick/NAME.yaml` writes into results/quick on its own."""
    import yaml

    assert yaml.safe_load(path.read_text())["profile"] == path.parent.name


def test_a_file_naming_another_profile_than_its_folder_is_refused(tmp_path):
    (tmp_path / "quick").mkdir()
    path = tmp_path / "quick" / "02_quadratic.yaml"
    path.write_text("profile: smoke\n")
    with pytest.raises(ParamsError, match=r"02_quadratic.yaml: profile is 'smoke' but the file lies in the 'quick'"):
        params.load(path)


@pytest.mark.parametrize("profile", list(settings.PROFILES))
def test_a_notebook_takes_every_setting_from_its_profiles_file(profile):
    """The notebook's parameters cell names only the profile; the file is the one source of its settings,
    and relative folders are the repository's whatever the working directory."""
    p = params.for_notebook("02_quadratic", {"profile": profile, "__name__": "__main__", "EXPERIMENT": "x"})
    expected = params.load(ROOT / "params" / profile / "02_quadratic.yaml")
    assert dataclasses.replace(p, data_root="data", results_dir="results") == expected
    assert p.results_dir == str(ROOT / "results") and p.data_root == str(ROOT / "data")


def test_what_a_notebook_sets_itself_or_papermill_injects_goes_on_top_of_the_file(tmp_path):
    p = params.for_notebook("02_quadratic", {"profile": "quick", "epochs": 1, "results_dir": str(tmp_path)})
    assert (p.epochs, p.results_dir, p.layers) == (1, str(tmp_path), 3)  # layers: from params/quick
    with pytest.raises(ParamsError, match="epochs must be at least 1"):
        params.for_notebook("02_quadratic", {"profile": "quick", "epochs": 0})
    with pytest.raises(ParamsError, match="profile must be one of"):
        params.for_notebook("02_quadratic", {"profile": "quik"})
    with pytest.raises(ParamsError, match="07_visualizations.yaml: no such parameter file"):
        params.for_notebook("07_visualizations", {"profile": "smoke", "params_dir": str(tmp_path)})
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "07_visualizations.yaml").write_text("profile: smoke\nmax_heads: 3\n")
    viz = params.for_notebook("07_visualizations", {"profile": "smoke", "params_dir": str(tmp_path)})
    assert (viz.params_dir, viz.max_heads) == (str(tmp_path), 3)  # the file in the folder the notebook names


@pytest.mark.parametrize("given, field, expected", [
    ("[cpu, cpu]", "devices", ["cpu", "cpu"]), ('["cpu","cpu"]', "devices", ["cpu", "cpu"]),
    ("0,1", "devices", ["0", "1"]), ("[0, 1]", "devices", ["0", "1"]), ("[2, 4]", "heads", [2, 4]),
    ("2, 4", "heads", [2, 4]), ("[0.5]", "seeds", None)])
def test_a_list_papermill_passes_as_text_is_read_as_the_fields_list(given, field, expected):
    # papermill -p devices '[0, 1]' injects the text; -y would inject a list
    namespace = {"profile": "smoke", field: given}
    if expected is None:
        with pytest.raises(ParamsError, match=rf"{field} must be a list of int, got \[0.5\]"):
            params.for_notebook("02_quadratic", namespace)
    else:
        assert getattr(params.for_notebook("02_quadratic", namespace), field) == expected
