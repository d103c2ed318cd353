"""Parameter files: typed, checked before work starts, one clear line for every mistake."""
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_runner

from attnlib import params
from attnlib.params import ParamsError, TrainParams, from_mapping

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "params").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_parameter_file_is_valid(path):
    p = params.load(path)
    assert isinstance(p, params.params_class(path.stem))


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

    from attnlib.experiment import train_config
    from attnlib.train import TrainConfig
    p = from_mapping(TrainParams, {"lr": 0.3, "milestones": [5], "schedule": "step", "precision": "bf16"})
    cfg = train_config(p, seed=7)
    assert (cfg.lr, cfg.milestones, cfg.schedule, cfg.precision, cfg.seed) == (0.3, [5], "step", "bf16", 7)
    names = {f.name for f in dataclasses.fields(TrainParams)}
    assert {f.name for f in dataclasses.fields(TrainConfig)} - {"seed"} <= names
