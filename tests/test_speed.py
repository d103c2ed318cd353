"""Speed options (attnlib.training.speed): off by default, outside the run ids, and changing the numbers by rounding only.

Covers: SpeedOptions from TrainParams and the paper profile's keys, which leave every run id as it was; fit with
speed=None, without the argument and with every option off trains exactly alike; channels_last's parity on the
CPU (ResNet18 and SAN; ignored for the attention models, tf32 not applicable on the CPU); torch.compile's plumbing
(traced with the eager backend, seconds instead of minutes) leaves the checkpoint a plain module's, and a run
resumes across the options; `make gpu-check` without a GPU says so in one line and exits 0.

Inductor's compile parity runs here for the attention model (about 30 s with a cold cache on this 2-core CPU);
for ResNet18 and SAN (35-160 s each, measured) only with ATTNLIB_TEST_COMPILE=1, to keep this file near 90 s.
"""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from attnlib import results
from attnlib.data import make_synthetic
from attnlib.experiments import params
from attnlib.experiments.grid import plan
from attnlib.experiments.params import from_mapping
from attnlib.experiments.settings import TrainParams
from attnlib.models import create_model
from attnlib.training import parity, speed
from attnlib.training.records import RunInfo
from attnlib.training.speed import SpeedOptions
from attnlib.training.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parent.parent
NUMBERS = ["train_loss", "train_acc", "test_loss", "test_acc", "lr"]
TINY = {"sa_quadratic": dict(layers=1, heads=2, hidden=8, ff=8, dropout=0.1, attn_dropout=0.1),
        "resnet18": dict(width=4), "san_pairwise": dict(widths=[8, 16], blocks=[1, 1], stem=8, rel_ratio=4,
                                                         mid_ratio=2, share_planes=2)}


def tiny_run(tmp_path, model="resnet18", epochs=2, speed_arg="absent", stop_after_epoch=None, run_id="r"):
    data = make_synthetic(n_train=24, n_test=16, image_size=8)
    torch.manual_seed(0)
    m = create_model(model, **TINY[model], **data.model_overrides())
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=0.05, seed=1)
    info = RunInfo(run_id, "exp", model, "v", data.name, "smoke")
    kw = {} if speed_arg == "absent" else {"speed": speed_arg}
    return fit(m, data, cfg, info, tmp_path, "cpu", progress=False, stop_after_epoch=stop_after_epoch, **kw)


def ckpt(tmp_path, run_id="r") -> dict:
    return torch.load(results.checkpoint_path(tmp_path, "smoke", run_id), weights_only=True)


def test_options_are_off_by_default_and_come_from_train_params():
    assert SpeedOptions() == SpeedOptions(False, False, False) and SpeedOptions().describe() == "none"
    assert speed.options(from_mapping(TrainParams, {})) == SpeedOptions()
    p = from_mapping(TrainParams, {"tf32": True, "compile": True, "channels_last": True})
    assert speed.options(p) == SpeedOptions(True, True, True)
    with pytest.raises(params.ParamsError, match="compile"):
        from_mapping(TrainParams, {"compile": "yes"})
    assert not {"tf32", "compile", "channels_last"} & {f.name for f in dataclasses.fields(TrainConfig)}


def test_what_an_option_does_not_do_here_is_said():
    attention, resnet = create_model("sa_quadratic", **TINY["sa_quadratic"]), create_model("resnet18", width=4)
    assert speed.family(attention) == "attention" and speed.family(resnet) == "resnet"
    assert speed.family(create_model("san_pairwise", **TINY["san_pairwise"])) == "san"
    notes = SpeedOptions(tf32=True, channels_last=True).notes(attention, "cpu")
    assert any("not applicable on CPU" in n for n in notes) and any("ignored for the attention" in n for n in notes)
    assert SpeedOptions(channels_last=True).prepare(attention, "cpu") is None  # attention: left as it is
    assert SpeedOptions(channels_last=True).prepare(resnet, "cpu") == torch.channels_last
    assert resnet.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8)
    assert SpeedOptions(channels_last=True).batch(x, resnet).is_contiguous(memory_format=torch.channels_last)
    assert SpeedOptions(channels_last=True).batch(x, attention) is x and SpeedOptions().batch(x, resnet) is x


def test_channels_last_takes_a_vits_convolutional_stem_and_changes_no_output():
    torch.manual_seed(0)
    vit = create_model("vit", layers=1, heads=2, hidden=8, ff=8, stem_channels=4, image_size=8, patch_size=2).eval()
    plain = create_model("vit_plain", layers=1, heads=2, hidden=8, ff=8, image_size=8, patch_size=2)
    x = torch.randn(2, 3, 8, 8)
    before = vit(x)
    options = SpeedOptions(channels_last=True)
    assert options.prepare(vit, "cpu") == torch.channels_last
    assert vit.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(vit(options.batch(x, vit)), before, rtol=1e-5, atol=1e-6)
    assert options.prepare(plain, "cpu") is None and options.batch(x, plain) is x  # no stem: left as it is
    assert any("ignored" in n for n in options.notes(plain)) and not options.notes(vit)


def test_the_paper_profiles_speed_keys_change_no_run_id(tmp_path):
    """The keys are not in the fingerprint: the paper files plan the same run ids with and without them, and
    with every option switched on."""
    data = SimpleNamespace(name="cifar10", x_train=range(50_000), x_test=range(10_000),
                           model_overrides=lambda: {"image_size": 32, "in_channels": 3, "num_classes": 10})
    checked = 0
    for path in sorted((ROOT / "params" / "paper").glob("0[1-5]_*.yaml")):
        with_keys = params.load(path)
        keys = [k for k in speed.OPTIONS if k in path.read_text()]
        assert keys, f"{path.name} sets no speed option"
        lines = [line for line in path.read_text().splitlines() if line.split(":")[0] not in speed.OPTIONS]
        (tmp_path / "paper").mkdir(exist_ok=True)
        bare = tmp_path / "paper" / path.name
        bare.write_text("\n".join(lines) + "\n")
        without = params.load(bare)
        all_on = dataclasses.replace(with_keys, tf32=True, compile=True, channels_last=True)
        ids = [[r.run_id for r in plan(p, data)] for p in (with_keys, without, all_on)]
        assert ids[0] == ids[1] == ids[2] and ids[0]
        checked += 1
    assert checked == 5


def test_fit_with_speed_none_or_all_off_trains_exactly_as_without_it(tmp_path):
    runs = {arg: tiny_run(tmp_path / str(i), speed_arg=arg) for i, arg in enumerate(["absent", None, SpeedOptions()])}
    a, b, c = runs.values()
    assert [[r[k] for k in NUMBERS] for r in a] == [[r[k] for k in NUMBERS] for r in b] == [[r[k] for k in NUMBERS]
                                                                                            for r in c]
    weights = [ckpt(tmp_path / str(i))["model"] for i in range(3)]
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]) and torch.equal(weights[0][k], weights[2][k]), k


def test_channels_last_parity_on_the_cpu():
    df = parity.parity("cpu", steps=4, options_=("channels_last", "tf32"), models=("sa_quadratic", "resnet18",
                                                                                 "san_pairwise"))
    by = {(r.option, r.model): r for r in df.itertuples()}
    for model in ("resnet18", "san_pairwise"):
        row = by[("channels_last", model)]
        assert row.result == "pass", row
        assert row.early_diff <= 1e-5 * 3  # the first steps agree to rounding
    assert by[("channels_last", "sa_quadratic")].result == "n/a"
    assert all(by[("tf32", m)].result == "n/a" and "not applicable on CPU" in by[("tf32", m)].note
               for m in ("sa_quadratic", "resnet18", "san_pairwise"))


def test_parity_fails_a_computation_that_differs():
    base = [dict(train_loss=2.0, test_loss=2.1, test_acc=0.5), dict(train_loss=1.9, test_loss=2.0, test_acc=0.5)]
    wrong = [dict(r, train_loss=r["train_loss"] + 1e-3) for r in base]  # far above rounding at the first step
    assert parity.compare(base, wrong, "compile")["result"] == "FAIL"
    assert parity.compare(base, wrong, "bf16")["result"] == "pass"  # bf16 is held to 10% of the loss
    assert parity.compare(base, [dict(r, test_acc=0.4) for r in base], "bf16")["result"] == "FAIL"
    assert parity.compare(base, base, "channels_last")["result"] == "pass"


def test_compiled_and_channels_last_checkpoints_are_a_plain_modules_and_resume_across_options(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager")  # dynamo traces the model; no code generation
    plain = tiny_run(tmp_path / "plain", model="sa_quadratic")
    compiled = tiny_run(tmp_path / "compiled", model="sa_quadratic", speed_arg=SpeedOptions(compile=True))
    for k in NUMBERS:  # dropout draws the same masks
        assert [r[k] for r in plain] == pytest.approx([r[k] for r in compiled], abs=1e-6), k
    a, b = ckpt(tmp_path / "plain")["model"], ckpt(tmp_path / "compiled")["model"]
    assert list(a) == list(b) and not any("_orig_mod" in k for k in b)
    # channels_last: same keys, shapes and dtypes; loads into a plain model; resumes without the option
    tiny_run(tmp_path / "cl", speed_arg=SpeedOptions(channels_last=True, compile=True), stop_after_epoch=1)
    state = ckpt(tmp_path / "cl")
    fresh = create_model("resnet18", **TINY["resnet18"], image_size=8)
    assert {k: (v.shape, v.dtype) for k, v in state["model"].items()} == \
        {k: (v.shape, v.dtype) for k, v in fresh.state_dict().items()}
    fresh.load_state_dict(state["model"])
    resumed = tiny_run(tmp_path / "cl")
    whole = tiny_run(tmp_path / "whole")
    assert [r["epoch"] for r in resumed] == [1, 2]
    for k in NUMBERS:
        assert [r[k] for r in resumed] == pytest.approx([r[k] for r in whole], rel=1e-3), k  # rounding, amplified


def test_compile_parity_on_the_cpu_with_dropout():
    """Inductor compiles the attention model (with dropout: the same masks, fallback_random) in about 30 s here."""
    df = parity.parity("cpu", steps=3, options_=("compile",), models=("sa_quadratic",))
    assert (df["result"] == "pass").all() and (df["max_curve_diff"] <= 1e-5).all(), df.to_string()


@pytest.mark.skipif(os.environ.get("ATTNLIB_TEST_COMPILE") != "1",
                    reason="torch.compile (Inductor) of ResNet18 and SAN on this 2-core CPU takes 35-160 s each with a "
                           "cold cache (measured), beyond this file's ~90 s; set ATTNLIB_TEST_COMPILE=1 to run it")
def test_compile_parity_on_the_cpu_for_the_convolutional_models():
    df = parity.parity("cpu", steps=4, options_=("compile",), models=("resnet18", "san_pairwise"))
    assert (df["result"] == "pass").all(), df.to_string()


def test_parity_command_line_on_the_cpu_says_tf32_is_not_applicable(capsys):
    assert parity.main(["parity", "--options", "tf32", "--models", "resnet18", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "not applicable on CPU" in out and "n/a" in out
    assert parity.main(["parity", "--steps", "0"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what gpu-check does without a GPU")
def test_gpu_check_without_a_gpu_says_so_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "t.csv")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and len(out.stdout.strip().splitlines()) == 1, out.stdout + out.stderr
    assert "no GPU present" in out.stdout and "TF32" in out.stdout and not (tmp_path / "t.csv").exists()
