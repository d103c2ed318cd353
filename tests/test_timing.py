"""Timing: warm-up is never timed, rounds alternate, FLOPs are counted right, the benchmark's reference
is the same network as ours, and notebook 06's driver keeps what it measured.

Also: a timing says what was timed and how; subnormal probabilities are flushed and nothing else, and sharp
heads still match float64; the separated isotropic scores equal the general quadratic form; notebook 06's
rows are kept and re-timed only when asked; its parameters are checked; a CPU is named by its model and the
flags that decide its speed, and rows of another machine are not taken as this one's; the paper profile's runs
are projected from the measured rows, each naming the row it uses (scaled by FLOPs where the configuration
differs other than in size, not projected where it was timed at another size). The GEMM peak is the best of
several sizes, measured before and after the models, and applied to every row, those read back too; a step faster
than it means the measurement failed: the peak is raised to that step's rate and the notes say so. A step's profile
names its operators with their shares; `make bench` reads the peak in its rounds as gemm_peak reads it, states each
target as met or not at the fastest precision measured, and for a share not met, what the step's products alone
reach.
"""
import math
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from attnlib import results
from attnlib.attention import QuadraticScore, flush_denormals
from attnlib.experiments.params import ParamsError, from_mapping
from attnlib.experiments.settings import TimingParams
from attnlib.models import count_parameters, create_model, list_models, model_config
from attnlib.report import projection, timing, timing_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench  # noqa: E402
import content_product  # noqa: E402
import peer  # noqa: E402
import parity  # noqa: E402
from reference_sa import REFERENCES, SAME_AS_OURS  # noqa: E402


def test_warmup_calls_are_not_timed_and_warmup_is_required():
    calls = []
    # the first two calls (the warm-up) are slow: a median of timed calls that included them would show it
    times = timing.measure(lambda: (calls.append(1), time.sleep(0.05 if len(calls) <= 2 else 0)), warmup=2, reps=3)
    assert len(calls) == 5 and len(times) == 3 and max(times) < 0.04
    with pytest.raises(ValueError, match="warm-up"):
        timing.measure(lambda: None, warmup=0)


def test_alternating_rounds_interleave_the_functions():
    order = []
    times = timing.alternating({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, reps=2)
    assert order == ["a", "b"] * 3 and {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}


def test_a_timing_says_what_was_timed_and_how():
    t = timing.infer_throughput(create_model("resnet18", width=4, image_size=8), batch=4, warmup=1, reps=3)
    assert t.images_per_s == pytest.approx(4 / t.median_s) and t.reps == 3 and t.warmup == 1
    text = t.describe()
    assert "warm-up" in text and "eval mode" in text and "batch 4" in text


def test_flops_are_counted_for_forward_and_training():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Linear(6, 10))
    forward = 2 * (12 * 6 + 6 * 10)
    assert timing.flops_per_image(model, "infer", image_shape=(3, 2, 2)) == forward
    # backward: each weight's gradient, and the gradient of the second layer's input (not of the images)
    assert timing.flops_per_image(model, "train", image_shape=(3, 2, 2)) == forward + forward + 2 * 6 * 10


def test_flops_are_counted_on_the_path_the_model_runs():
    """The content network's fused path (x M x'^T) does less work than its plain one, and is counted as it runs; a
    ViT's fused attention (torch's kernel, which the counter cannot see on the CPU) counts as its plain products."""
    small = dict(layers=1, hidden=32, heads=2, image_size=8)
    fused, plain = (create_model("sa_learned_content_re", **small, fused=f) for f in (True, False))
    assert timing.flops_per_image(fused, "infer", batch=8) < timing.flops_per_image(plain, "infer", batch=8)
    vit, vit_plain = (create_model("vit", image_size=8, fused=f) for f in (True, False))
    assert timing.flops_per_image(vit, "infer") == timing.flops_per_image(vit_plain, "infer") > 0


@pytest.mark.parametrize("name", SAME_AS_OURS)  # the content reference is [Re]'s own network, not ours
def test_the_benchmark_references_are_the_same_networks_as_ours(name):
    torch.manual_seed(0)
    kw = dict(layers=2, heads=4, hidden=16, ff=24, image_size=8)
    ours = create_model(name, **kw).eval()
    ref = REFERENCES[name](**kw).eval()
    ref.load_state_dict(ours.state_dict())  # strict: the same parameters, by name and shape
    x = torch.randn(3, 3, 8, 8)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_the_content_product_benchmark_compares_the_same_outputs_and_gradients_in_float64():
    """What benchmarks/content_product.py times, the layer's plain path against attnlib.content_algebra, gives the
    same outputs and the same gradients to x and every parameter, to float64 rounding. A wrong sign or a dropped
    per-key term would differ by far more."""
    torch.manual_seed(0)
    layer = create_model("sa_learned_content_re", layers=1, hidden=24, heads=3, image_size=8,
                         attn_dropout=0.0).blocks[0].attn
    assert content_product.check(layer, torch.randn(2, 16, 24)) < 1e-12
    with torch.no_grad():
        layer.key.bias.normal_()  # b_k only shifts every key of a query alike: still the same probabilities
        layer.query.bias.normal_()
    assert content_product.check(layer, torch.randn(2, 16, 24)) < 1e-12


def test_the_peer_timing_names_a_missing_checkout_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as stop:
        peer.load_peer(tmp_path)
    assert str(stop.value) == (f"error: {tmp_path}/main/models/networks.py not found; --re-code names the folder of a "
                               "checkout of NishantPrabhu/Self-Attention-and-Convolutions")


def test_the_content_reference_is_re_s_network_by_its_parameters_and_its_scores():
    """[Re]'s learned 2-D + content network: its parameter count (tests/test_models.py's RE_LEARNED_CONTENT), and each
    score q.k + q[:D/2].e_row[k_row - q_row] + q[D/2:].e_col[k_col - q_col], over sqrt(D), token by token."""
    from test_models import RE_LEARNED_CONTENT
    assert count_parameters(REFERENCES["sa_learned_content_re"]()) == RE_LEARNED_CONTENT
    torch.manual_seed(0)
    attn = REFERENCES["sa_learned_content_re"](layers=1, heads=2, hidden=6, ff=8, image_size=6).blocks[0].attn
    x = torch.randn(2, 3, 3, 6)
    got = attn.scores(x)  # (B, H, W, h, H, W)
    q, k = attn.query(x).view(2, 3, 3, 2, 6), attn.key(x).view(2, 3, 3, 2, 6)
    rows, cols = attn.positional.row_embeddings.weight, attn.positional.col_embeddings.weight
    for b, i, j, h, kr, kc in [(0, 0, 0, 0, 2, 1), (1, 2, 1, 1, 0, 2), (1, 1, 1, 0, 1, 1)]:
        want = (q[b, i, j, h] @ k[b, kr, kc, h] + q[b, i, j, h, :3] @ rows[kr - i + 2]
                + q[b, i, j, h, 3:] @ cols[kc - j + 2]) / 6 ** 0.5
        assert torch.allclose(got[b, i, j, h, kr, kc], want, atol=1e-6)


def test_subnormal_probabilities_are_flushed_and_nothing_else():
    tiny = torch.finfo(torch.float32).tiny
    p = torch.tensor([1e-40, tiny / 2, tiny, 1e-30, 0.5])
    assert flush_denormals(p).tolist() == [0.0, 0.0, tiny, pytest.approx(1e-30), 0.5]


def test_sharp_heads_with_flushed_probabilities_still_match_float64():
    torch.manual_seed(1)
    layer = create_model("sa_quadratic", layers=1, heads=4, hidden=16, ff=24).blocks[0].attn.eval()
    with torch.no_grad():
        layer.positional.spreads.fill_(4.0)  # exp(-8 d^2): far keys get subnormal probabilities
    p = torch.softmax(layer.position_scores(), -1)
    assert ((p > 0) & (p < torch.finfo(torch.float32).tiny)).any()  # the case the flush is for
    x = torch.randn(2, 256, 16)
    exact = layer.double()(x.double())
    assert torch.allclose(layer.float()(x).double(), exact, atol=1e-5)


def test_isotropic_scores_separated_equal_the_general_quadratic_form():
    torch.manual_seed(2)
    iso, aniso = QuadraticScore(5), QuadraticScore(5, anisotropic=True)
    with torch.no_grad():
        aniso.centers.copy_(iso.centers)
        aniso.inv_sqrt_cov.copy_(iso.spreads[:, None, None] * torch.eye(2))
    assert torch.allclose(iso(4, 6), aniso(4, 6), atol=1e-5)


TINY = {"resnet18": {"width": 4}, "sa_quadratic": {"layers": 1, "heads": 2, "hidden": 8, "ff": 8}}
SMALL_PEAK = (64, 128)  # GEMM peak sizes for tests that time models but do not look at the peak: a real one, soon


def test_time_models_keeps_rows_and_only_remeasures_when_asked(tmp_path, monkeypatch):
    p = from_mapping(TimingParams, dict(models=["resnet18", "sa_quadratic"], hierarchical_models=["sa_quadratic"],
                                        per_model=TINY, image_size=8, train_batches=[2], infer_batches=[2],
                                        precisions=["fp32"], warmup=1, reps=2, latency_reps=2, device="cpu"))
    path = tmp_path / "06_timing.csv"
    monkeypatch.setattr(timing, "PEAK_SIZES", SMALL_PEAK)
    df, peak = timing_table.time_models(p, path, progress=False)
    assert peak["fp32"] > 0
    assert set(zip(df["model"], df["variant"])) == {("resnet18", "standard"), ("sa_quadratic", "standard"),
                                                    ("sa_quadratic", "hierarchical")}
    assert len(df) == 3 * 3 and set(df["mode"]) == {"train", "infer", "latency"}
    assert (df["gflops_per_image"] > 0).all() and df["what"].str.contains("warm-up|training step|forward").all()
    calls = []
    monkeypatch.setattr(timing, "train_throughput", lambda *a, **k: calls.append(a) or pytest.fail("re-timed"))
    again, _ = timing_table.time_models(p, path, progress=False)  # everything is there: nothing is timed
    assert len(again) == len(df) and not calls and len(pd.read_csv(path)) == len(df)
    monkeypatch.undo()
    monkeypatch.setattr(timing, "PEAK_SIZES", SMALL_PEAK)
    p.remeasure = True
    again, _ = timing_table.time_models(p, path, progress=False)
    assert len(again) == len(df) and len(pd.read_csv(path)) == len(df)  # replaced, not duplicated
    p.remeasure, p.models, p.per_model = False, ["resnet18"], {"resnet18": {"width": 2}}
    narrow, _ = timing_table.time_models(p, path, progress=False)  # another configuration: measured anew
    assert len(narrow) == 3 and (narrow["params"] < df[df["model"] == "resnet18"]["params"].iloc[0]).all()
    assert len(pd.read_csv(path)) == len(df) + 3  # the earlier rows stay in the file


def test_timing_params_are_checked():
    with pytest.raises(ParamsError, match="warmup must be at least 1"):
        from_mapping(TimingParams, {"warmup": 0})
    with pytest.raises(ParamsError, match="hierarchical_models"):
        from_mapping(TimingParams, {"hierarchical_models": ["resnet19"]})
    with pytest.raises(ParamsError, match="gives resnet18 an invalid configuration"):
        from_mapping(TimingParams, {"hierarchical_models": ["resnet18"]})  # ResNet has no weight sharing
    assert from_mapping(TimingParams, {}).timed_models() == list_models()


AMX_CPU = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
OLD_CPU = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU E5-2680 v4\nflags\t\t: fpu sse4_2 avx2\n"


def test_a_cpu_is_named_by_its_model_and_the_flags_that_decide_its_speed(monkeypatch):
    assert results.cpu_model_and_flags(AMX_CPU) == ("Intel(R) Xeon(R) Platinum 8480+", ["avx2", "avx512f", "avx512_bf16", "amx_bf16"])
    assert results.cpu_model_and_flags(OLD_CPU) == ("Intel(R) Xeon(R) CPU E5-2680 v4", ["avx2"])
    monkeypatch.setattr(results.machine, "cpu_model_and_flags", lambda: ("Intel(R) Xeon(R) Platinum 8480+", ["amx_bf16"]))
    assert results.device_name(torch.device("cpu")).startswith("cpu: Intel(R) Xeon(R) Platinum 8480+ (amx_bf16; ")


def test_timing_rows_of_another_machine_are_not_taken_as_this_ones(tmp_path, monkeypatch):
    """Rows keyed by another CPU stay in the file, and this machine measures itself."""
    p = from_mapping(TimingParams, dict(models=["resnet18"], hierarchical_models=[], per_model=TINY, image_size=8,
                                        train_batches=[2], infer_batches=[2], precisions=["fp32"], warmup=1, reps=2,
                                        latency_reps=2, device="cpu"))
    path = tmp_path / "06_timing.csv"
    monkeypatch.setattr(timing, "PEAK_SIZES", SMALL_PEAK)
    monkeypatch.setattr(results.machine, "cpu_model_and_flags", lambda: ("Other CPU", ["avx2"]))
    timing_table.time_models(p, path, progress=False)
    monkeypatch.setattr(results.machine, "cpu_model_and_flags", lambda: ("This CPU", ["avx2", "amx_bf16"]))
    here, _ = timing_table.time_models(p, path, progress=False)
    assert set(here["device"]) == {f"cpu: This CPU (avx2 amx_bf16; {torch.get_num_threads()} threads)"}
    assert pd.read_csv(path)["device"].str.contains("Other CPU").sum() == 3  # kept, not reused



# -- notebook 06: the GEMM peak every row is measured against ------------------------------------------------
def tiny_timing(**changes) -> TimingParams:
    return from_mapping(TimingParams, dict(dict(models=["resnet18"], hierarchical_models=[], per_model=TINY,
                                                image_size=8, train_batches=[2], infer_batches=[2], precisions=["fp32"],
                                                warmup=1, reps=2, latency_reps=2, device="cpu"), **changes))


def fake_gemm(monkeypatch, rate, events=None):
    """timing.matmul_rate faked: every product at rate() GFLOP/s, each call logged in `events` with its counts."""
    def matmul_rate(n, precision, device, warmup, reps):
        (events if events is not None else []).append(("gemm", warmup, reps))
        return rate(), None
    monkeypatch.setattr(timing, "matmul_rate", matmul_rate)


def test_the_peak_is_measured_before_and_after_the_models_and_the_best_is_kept(tmp_path, monkeypatch):
    events, real = [], timing.train_throughput
    monkeypatch.setattr(timing, "train_throughput", lambda *a, **k: events.append("step") or real(*a, **k))
    fake_gemm(monkeypatch, lambda: 2000.0 if "step" in events else 1000.0, events)  # slow at first: a busy machine
    p = tiny_timing()
    df, peak = timing_table.time_models(p, tmp_path / "06_timing.csv", progress=False)
    sweep = [("gemm", p.warmup + 1, p.reps + 2)] * len(timing.PEAK_SIZES)  # every size, in one precision
    assert events == sweep * 2 + ["step"] + sweep and timing_table.peak_repetitions(p) == (2, 4)  # after: fp32 alone
    assert peak == {"fp32": 2000.0, "bf16": 1000.0} and (df["peak_gflops"] == 2000.0).all()
    assert (df["fraction_of_peak"] == df["achieved_gflops"] / 2000.0).all() and (df["peak_source"] == "GEMM").all()
    events.clear()
    fake_gemm(monkeypatch, lambda: 1000.0 if "step" in events else 3000.0)  # slow at the end: the start's kept
    p.remeasure = True
    df, peak = timing_table.time_models(p, tmp_path / "06_timing.csv", progress=False)
    assert peak == {"fp32": 3000.0, "bf16": 3000.0} and (df["peak_gflops"] == 3000.0).all()
    assert timing.machine_peak(["fp32"], earlier={"fp32": 1.0, "bf16": 2.0}, warmup=1, reps=1) == {
        "fp32": 1000.0, "bf16": 2.0}  # the better of the two, other precisions as they were


def test_a_step_faster_than_the_gemm_peak_raises_the_peak_and_the_notes_say_it_failed(tmp_path, monkeypatch):
    fake_gemm(monkeypatch, lambda: 1e-6)  # far slower than any step of a tiny model: the measurement failed
    df, peak = timing_table.time_models(tiny_timing(), tmp_path / "06_timing.csv", progress=False)
    fastest = df["achieved_gflops"].max()
    assert len(df) == 3 and peak == {"fp32": 1e-6, "bf16": 1e-6}  # no row dropped; the GEMM's own rate returned
    assert (df["peak_gflops"] == fastest).all() and (df["fraction_of_peak"] <= 1.0).all()
    assert df["fraction_of_peak"].max() == 1.0 and (df["fraction_of_peak"] == df["achieved_gflops"] / fastest).all()
    best = df.loc[df["achieved_gflops"].idxmax()]
    assert (df["peak_source"] == f"step resnet18 (standard) {best['mode']} batch {best['batch']}; the GEMM measured "
                                 "0.0 GFLOP/s").all()
    failed = [line for line in timing_table.measurement_notes(df).splitlines() if "failed" in line]
    assert len(failed) == 1 and failed[0].startswith("The GEMM peak measurement failed: a step ran faster")
    assert "taken from the step, not from the GEMM" in failed[0]
    assert f"fp32 {fastest:,.1f} GFLOP/s from step" in failed[0]
    assert timing_table.per_model_table(df)["best train of peak"].str.rstrip("%").astype(int).le(100).all()


def test_rows_read_back_from_the_csv_get_this_runs_peak(tmp_path, monkeypatch):
    path, p = tmp_path / "06_timing.csv", tiny_timing()
    fake_gemm(monkeypatch, lambda: 1000.0)
    timing_table.time_models(p, path, progress=False)
    old = pd.read_csv(path, dtype={"config": str})  # as committed: measured against a peak that came out slow,
    old["peak_gflops"], old["fraction_of_peak"] = old["achieved_gflops"] / 1.19, 1.19  # and another machine's row
    other = old.iloc[[0]].assign(device="cpu: another", peak_gflops=1.0, fraction_of_peak=1.5)
    results.atomic_write_text(path, pd.concat([old, other]).drop(columns="peak_source").to_csv(index=False))
    events = []
    fake_gemm(monkeypatch, lambda: 2000.0, events)
    monkeypatch.setattr(timing, "train_throughput", lambda *a, **k: pytest.fail("re-timed"))
    df, _ = timing_table.time_models(p, path, progress=False)  # nothing timed: read back, one peak measurement
    assert len(df) == 3 and len(events) == 2 * len(timing.PEAK_SIZES)
    assert (df["peak_gflops"] == 2000.0).all() and (df["fraction_of_peak"] == df["achieved_gflops"] / 2000.0).all()
    written = pd.read_csv(path).set_index("device")
    assert (written.loc[df["device"].iloc[0], "peak_gflops"] == 2000.0).all()  # the file holds this run's peak
    assert written.loc["cpu: another", "fraction_of_peak"] == 1.5  # another machine's row: kept as it was
    fake_gemm(monkeypatch, lambda: 1e-6)
    df, _ = timing_table.time_models(p, path, progress=False)  # read back against a peak that failed
    assert (df["fraction_of_peak"] <= 1.0).all() and df["fraction_of_peak"].max() == 1.0
    assert "The GEMM peak measurement failed" in timing_table.measurement_notes(df)


def test_the_peak_of_each_precision_is_raised_only_where_a_step_beats_it():
    rows = pd.DataFrame([timing_row("m", "standard", "train", 8, p, 1.0, 1.0) for p in ("fp32", "fp32", "bf16")])
    rows["achieved_gflops"] = [120.0, 60.0, 150.0]
    out = timing_table.apply_peak(rows, {"fp32": 100.0, "bf16": 300.0})
    assert out["peak_gflops"].tolist() == [120.0, 120.0, 300.0] and out["fraction_of_peak"].tolist() == [1.0, 0.5, 0.5]
    assert out["peak_source"].tolist() == ["step m (standard) train batch 8; the GEMM measured 100.0 GFLOP/s"] * 2 + [
        "GEMM"]
    note = timing_table.measurement_notes(out)
    assert "fp32 120.0 GFLOP/s from step m (standard) train batch 8; the GEMM measured 100.0 GFLOP/s." in note
    assert "bf16" not in note.splitlines()[1] and rows["fraction_of_peak"].tolist() == [0.1] * 3  # input untouched


# -- notebook 06's tables ------------------------------------------------------------------------------------
def timing_row(model, variant, mode, batch, precision, images_per_s, gflops, fraction=0.1, params=100):
    return dict(model=model, variant=variant, mode=mode, batch=batch, precision=precision, device="cpu: x",
                params=params, gflops_per_image=gflops, images_per_s=images_per_s, latency_ms=1000 / images_per_s,
                fraction_of_peak=fraction)


def test_per_model_table_has_one_row_per_model_and_a_column_per_measurement():
    rows = [timing_row("m", "standard", "train", 8, "fp32", 40.0, 3.0, 0.25),
            timing_row("m", "standard", "train", 16, "fp32", 50.0, 3.0, 0.5),
            timing_row("m", "standard", "infer", 16, "fp32", 200.0, 1.0),
            timing_row("m", "standard", "latency", 1, "fp32", 4.0, 1.0)]
    table = timing_table.per_model_table(pd.DataFrame(rows))
    assert table.columns.tolist() == ["model", "variant", "params", "GFLOPs/img forward", "GFLOPs/img training",
                                      "infer img/s b16 fp32", "latency ms b1 fp32", "train img/s b16 fp32",
                                      "train img/s b8 fp32", "best train of peak"]
    assert table.iloc[0].tolist() == ["m", "standard", 100, 1.0, 3.0, 200.0, 250.0, 50.0, 40.0, "50%"]


def test_attention_products_are_what_the_published_flops_leave_out():
    # the paper's quadratic network: 6 layers, 9 heads of width 400 on 16 x 16 tokens; content adds q.k
    assert timing_table.attention_products_gflops("sa_quadratic") == pytest.approx(2 * 6 * 9 * 256 ** 2 * 400 / 1e9)
    assert timing_table.attention_products_gflops("sa_learned_content") == pytest.approx(2 * 6 * 9 * 256 ** 2 * 800 / 1e9)
    small = dict(layers=1, heads=2, hidden=8, head_dim=4, image_size=8)
    cfg = model_config("sa_learned_content", **small)
    assert cfg.content and timing_table.attention_products_gflops("sa_learned_content", **small) == 2 * 2 * 16 ** 2 * 12 / 1e9
    p = from_mapping(TimingParams, dict(models=["sa_quadratic", "resnet18"], hierarchical_models=[], image_size=8,
                                        per_model={"sa_quadratic": {"layers": 1, "heads": 2, "hidden": 8}}))
    rows = [timing_row("sa_quadratic", "standard", "infer", 2, "fp32", 10.0, 0.5),
            timing_row("sa_quadratic", "hierarchical", "infer", 2, "fp32", 10.0, 9.0),
            timing_row("resnet18", "standard", "infer", 2, "fp32", 10.0, 0.25)]
    side = timing_table.published_costs(pd.DataFrame(rows), p)
    assert side.columns.tolist() == ["paper_params", "paper_gflops", "params", "gflops_per_image",
                                     "ours_minus_attention_products"]
    assert side.loc["sa_quadratic", "gflops_per_image"] == 0.5  # the standard variant's forward pass
    assert side.loc["sa_quadratic", "ours_minus_attention_products"] == pytest.approx(0.5 - 2 * 2 * 16 ** 2 * 8 / 1e9)
    assert side.loc["resnet18", "ours_minus_attention_products"] == 0.25
    assert side["gflops_per_image"].isna().sum() == len(side) - 2  # models not timed: no numbers of ours


def test_notes_say_where_it_was_measured_and_how_the_pipeline_compares():
    df = pd.DataFrame([timing_row("m", "standard", "train", 8, "fp32", 40.0, 3.0),
                       timing_row("m", "standard", "train", 8, "bf16", 20.0, 3.0)])
    notes = timing_table.measurement_notes(df)
    assert notes.startswith("All rows above were measured on: cpu: x.")
    assert "Precisions measured: fp32, bf16 | bf16 is autocast" in notes
    assert ("No GPU was present" in notes) == (not torch.cuda.is_available())
    pipe = timing._timing("input pipeline", "pipeline", 32, "uint8 -> fp32", "cpu", 1, [0.01], "what")
    assert timing_table.pipeline_against_training(pipe, df) == (
        "3,200 images/s: 80x the fastest training throughput above (40.0 images/s)")


# -- notebook 06: the paper profile projected ----------------------------------------------------------------
def measured(model, mode, batch, images_per_s, gflops, variant="standard", device="NVIDIA X"):
    return dict(model=model, variant=variant, mode=mode, batch=batch, precision="fp32", images_per_s=images_per_s,
                gflops_per_image=gflops, device=device)


def test_the_paper_profile_is_projected_from_the_measured_rows_saying_which():
    p = from_mapping(TimingParams, dict(models=["sa_quadratic", "resnet18"], hierarchical_models=["sa_quadratic"]))
    sa_train = 27.0188784  # GFLOPs of a training step per image, published size (results/quick's 06 rows)
    rows = pd.DataFrame([measured("sa_quadratic", "train", 8, 50.0, sa_train),
                         measured("sa_quadratic", "train", 32, 100.0, sa_train),
                         measured("sa_quadratic", "infer", 32, 1000.0, 9.0),
                         measured("resnet18", "train", 128, 2000.0, 3.3)])  # only above resnet18's batch of 100
    df, text = projection.paper_projection(rows, p, devices=4)
    assert len(df) == 37 + 2 and df.columns.tolist() == projection.PROJECTION_COLUMNS  # + 2 shuffled-label controls
    one = df.set_index(["model", "variant"])
    sa = one.loc[("sa_quadratic", "9 heads")]
    assert sa.hours == pytest.approx(300 * (50_000 / 100 + 10_000 / 1000) / 3600) and sa.flops_scale == 1
    assert sa.measured_row.startswith("sa_quadratic (standard) train b32 fp32: 100 img/s; infer b32")
    wide = one.loc[("sa_quadratic", "16 heads")]  # 16 heads: the 9-head row scaled by the training FLOPs
    assert wide.flops_scale == pytest.approx(sa_train / projection.training_gflops("sa_quadratic", **dict(
        [r for r in projection.paper_runs() if r[1].model == "sa_quadratic" and r[1].heads == 16][0][1].overrides)), rel=1e-3)
    assert 0.5 < wide.flops_scale < 0.7 and "heads differ" in wide.measured_row
    assert one.loc[("sa_quadratic_re", "9 heads")].measured_row.startswith("sa_quadratic (standard)")  # counterpart
    resnet = one.loc[("resnet18", "standard")]
    assert resnet.hours == pytest.approx(300 * 50_000 / 2000 / 3600) and "evaluation not counted" in resnet.measured_row
    assert one.loc[("vit", "9 heads")].measured_row == "not projected: no fp32 training row of vit"
    done = df["hours"].notna()
    total = df.loc[done, "hours"].sum()
    assert f"{total:,.0f} h" in text and f"over the 4 device(s) present {total / 4:,.0f} h" in text
    assert f"Not projected: {int((~done).sum())} run(s)" in text and "run_id" in df and df["run_id"].is_unique


def test_rows_timed_at_another_size_are_not_projected():
    p = from_mapping(TimingParams, dict(models=["resnet18"], hierarchical_models=[], per_model={"resnet18": {"width": 8}}))
    rows = pd.DataFrame([measured("resnet18", "train", 32, 900.0, 0.05, device="cpu: x")])
    out = projection.project_run(rows, p, "resnet18", {"image_size": 32, "in_channels": 3, "num_classes": 10}, False, 100,
                             "fp32", 300)
    assert math.isnan(out["hours"]) and out["measured_row"] == ("not projected: resnet18 (standard) was timed at another "
                                                                "size (width)")
    assert projection.present_devices(rows) == 1


def test_the_gemm_peak_is_the_best_rate_over_the_sizes(monkeypatch):
    rates = {64: 5.0, 128: 9.0, 256: 7.0}
    monkeypatch.setattr(timing, "matmul_rate", lambda n, precision, device, **kw: (rates[n], None))
    assert timing.gemm_peak("fp32", "cpu", sizes=(64, 128, 256)) == (9.0, 128)
    monkeypatch.undo()
    rate, n = timing.gemm_peak("fp32", "cpu", sizes=(32, 64))
    assert rate > 0 and n in (32, 64)


def test_a_step_profile_names_the_operators_that_dominate():
    a = torch.randn(256, 256)
    ops = timing.step_profile(lambda: (a @ a).relu_(), steps=2, top=3)
    assert 1 <= len(ops) <= 3 and all(0 <= share <= 1 for _, share in ops)
    assert [share for _, share in ops] == sorted((share for _, share in ops), reverse=True)
    assert any("mm" in op for op, _ in ops)


def test_the_bench_reads_the_peak_within_its_rounds_as_gemm_peak_reads_it(monkeypatch):
    """Not one product timed once (after a training step, a lone bf16 product read a third of the peak), but the
    best median over the sizes, each after its warm-up, as the session's peak is read."""
    asked = []
    monkeypatch.setattr(timing, "gemm_peak", lambda precision, device: (asked.append(precision), (len(asked), 1024))[1])
    readings = []
    read = bench.peak_reader("bf16", torch.device("cpu"), readings)
    read(), read()
    assert readings == [1, 2] and asked == ["bf16", "bf16"]


def test_the_bench_rows_take_medians_of_the_timed_rounds_and_the_peak_readings_after_the_warm_up():
    class Recorded:  # what product_replay.record returns, as far as the rows read it
        calls, flops = [None] * 50, 40e9
    times = {(what, p): seconds for p in bench.PRECISIONS
             for what, seconds in (("ours", [1.0, 2.0, 9.0]), ("reference", [4.0, 4.0, 4.0]),
                                   ("products", [0.5, 0.5, 9.0]), ("contiguous", [0.4, 0.4, 0.4]))}
    peaks = {p: [1e6] * bench.WARMUP_ROUNDS + [100.0, 300.0, 200.0] for p in bench.PRECISIONS}  # warm-up: not read
    rows = bench.network_rows("net", 8, 80e9, times, peaks, {p: Recorded() for p in bench.PRECISIONS})
    assert [r["precision"] for r in rows] == list(bench.PRECISIONS)
    row = rows[0]
    assert row["ours_img_s"] == 4.0 and row["reference_img_s"] == 2.0 and row["ratio"] == 2.0  # medians: 2 s, 4 s
    assert row["ours_gflop_s"] == 40.0 and row["gflop_per_image"] == 10.0 and row["peak_gflop_s"] == 200.0
    assert row["products"] == 50 and row["products_flops"] == 0.5  # the replay holds half the counted work here
    assert row["products_gflop_s"] == 80.0 and row["contiguous_gflop_s"] == 100.0
    assert row["products_part"] == 0.25 and row["reps"] == 3
    times[("products", "fp32")] = [3.0] * 3  # slower alone than the step: kept as measured, not clipped to 100%
    assert bench.network_rows("net", 8, 80e9, times, peaks, {p: Recorded() for p in bench.PRECISIONS})[0][
        "products_part"] == 1.5


def test_the_bench_states_each_target_at_the_fastest_precision():
    rows = pd.DataFrame([
        dict(network="sa_quadratic_re", precision="fp32", ours_img_s=6.0, ratio=2.0, ours_gflop_s=70.0),
        dict(network="sa_quadratic_re", precision="bf16", ours_img_s=3.0, ratio=0.8, ours_gflop_s=35.0)])
    lines = bench.verdicts(rows, {"fp32": 100.0, "bf16": 300.0})
    assert lines[0] == "sa_quadratic_re: fastest here in fp32, 6.00 img/s (bf16 3.00 img/s)"
    assert lines[1] == "  share of the fp32 GEMM peak: 70% (target 70%): met"
    assert lines[2] == "  ours / reference in fp32: 2.00x (target 1.0x): met"
    assert lines[3] == ("  ours / reference in bf16: 0.80x (target 1.0x): NOT met; the reference runs our work at 15% "
                        "of the bf16 peak, so 1.0x of it needs 15%")  # parity at every precision, not only the fastest
    rows.loc[1, "ours_img_s"] = 9.0  # bf16 fastest: 35 of 300 GFLOP/s
    assert bench.verdicts(rows, {"fp32": 100.0, "bf16": 300.0})[1] == \
        "  share of the bf16 GEMM peak: 12% (target 70%): NOT met"  # no replay of the products: no reason given
    replay = dict(products=[80, 90], products_flops=[1.0, 1.0], products_gflop_s=[90.0, 150.0],
                  contiguous_gflop_s=[90.0, 180.0], products_part=[0.9, 0.5])
    rows = rows.assign(**replay)  # bf16: the products alone at 50% of the peak, 60% contiguous, half the step
    assert bench.verdicts(rows, {"fp32": 100.0, "bf16": 300.0})[1] == (
        "  share of the bf16 GEMM peak: 12% (target 70%): NOT met; the step's 90 matrix products (100% of its counted "
        "FLOPs), replayed alone as the step lays them out, run at 50% of the peak (60% with every operand contiguous) "
        "and their replay lasts 50% as long as the step: below the target, as laid out and contiguous, so cutting "
        "what lies outside the products cannot meet it (unless they run faster inside the step than alone)")
    rows.loc[1, "contiguous_gflop_s"] = 240.0  # 80% contiguous: 70% leaves 1 - 0.7 / 0.8 of the step for the rest
    assert bench.verdicts(rows, {"fp32": 100.0, "bf16": 300.0})[1].endswith(
        "run at 50% of the peak (80% with every operand contiguous) and their replay lasts 50% as long as the step: "
        "laid out otherwise, at the contiguous rate, the target would leave at most 13% of the step for everything "
        "else, the copies that lay them out included")
    rows.loc[1, "products_gflop_s"] = 250.0  # 83% as laid out: 70% leaves at most 16% of the step, and 50% is
    assert bench.verdicts(rows, {"fp32": 100.0, "bf16": 300.0})[1].endswith(
        "lasts 50% as long as the step: at their rate the target leaves at most 16% of the step for everything else, "
        "and the step's time beyond theirs is 50% of it now")
    rows.loc[1, "products_part"] = 1.2  # the replay slower than the step: it bounds nothing
    assert bench.verdicts(rows, {"fp32": 100.0, "bf16": 300.0})[1].endswith(
        "lasts 120% as long as the step: alone they ran slower than the step, so the replay bounds nothing here")
    rows.loc[1, "products_flops"] = 0.8  # a product the recorder missed
    assert bench.verdicts(rows, {"fp32": 100.0, "bf16": 300.0})[1].endswith(
        "lasts 120% as long as the step: the replay misses some of the step's work, so it bounds nothing here")
    assert bench.verdicts(rows.drop(columns="products_part"), {"fp32": 100.0, "bf16": 300.0})[1].endswith(
        "NOT met")  # a replay column missing: no reason rather than a half-read one
    rows = rows.drop(columns=list(replay))
    rows.loc[1, "ours_gflop_s"] = 35.0
    rows["peak_gflop_s"] = [100.0, 50.0]  # the peak timed in the network's own rounds, where it was
    assert bench.verdicts(rows, {"fp32": 100.0, "bf16": 300.0})[1].startswith(
        "  share of the bf16 GEMM peak: 70% (target 70%): met")  # 35 of the 50 measured beside the steps
    rows = rows.drop(columns="peak_gflop_s")
    content = rows.assign(network="sa_learned_content_re", ratio=[1.1, 1.1], ours_gflop_s=[95.0, 35.0])
    lines = bench.verdicts(content, {"fp32": 100.0, "bf16": 300.0})
    assert lines[2] == ("  ours / reference in fp32: 1.10x (target 1.0x): met")
    assert lines[3] == ("  ours / reference in bf16: 1.10x (target 1.2x): NOT met; the reference runs our work at 11% "
                        "of the bf16 peak, so 1.2x of it needs 13%")  # the content network's own target, at its fastest
    content.loc[0, "ours_img_s"], content.loc[0, "ratio"] = 20.0, 1.0
    assert bench.verdicts(content, {"fp32": 100.0, "bf16": 300.0})[2].endswith(
        "runs our work at 95% of the fp32 peak, so 1.2x of it needs 114%, beyond the peak: only less work can meet it")


def test_the_fastest_precision_is_the_one_whose_gemm_peak_measures_highest():
    amx, plain = {"fp32": 290.0, "bf16": 1800.0}, {"fp32": 150.0, "bf16": 40.0}
    assert timing.fastest_precision(amx) == "bf16" and timing.fastest_precision(plain) == "fp32"
    assert timing.timed_precisions(["fastest"], amx) == ["bf16"]
    assert timing.timed_precisions(["fp32", "fastest"], plain) == ["fp32"]  # once
    note = timing.precision_note(plain, ["fastest"])
    assert note.endswith("fp32 150 GFLOP/s, bf16 40 GFLOP/s; fastest precision here: fp32; timed in: fp32")
    assert from_mapping(TimingParams, {"precisions": ["fastest"]}).precisions == ["fastest"]
    with pytest.raises(ParamsError, match="precisions must name fp32, bf16 or fastest"):
        from_mapping(TimingParams, {"precisions": ["fp16"]})


def test_parity_verdicts_set_a_difference_beyond_the_tolerance_against_the_seeds_noise():
    exact = [0.6305, 0.5570, 0.6045]
    fp32 = [0.6130, 0.6200, 0.6240]  # other masks: as far from exact as another seed
    acc = {"exact": exact, "fp32": fp32, "bf16": [a - 0.0025 for a in fp32]}
    assert parity.verdict(acc, "fp32").startswith("agrees within the seeds' noise: mean fp32 - exact +0.0217, within")
    assert "cannot resolve the tolerance 0.01" in parity.verdict(acc, "fp32")
    assert parity.verdict(acc, "bf16") == "agrees: same seed, bf16 - fp32, mean -0.0025 (tolerance 0.01)"
    assert parity.verdict(dict(acc, bf16=[0.6430, 0.6150, 0.6340]), "bf16").startswith(
        "agrees within the seeds' noise: same seed, bf16 - fp32, mean +0.0117")  # +0.030, -0.005, +0.010
    assert parity.verdict(dict(acc, bf16=[a + 0.02 for a in fp32]), "bf16").startswith(
        "DIFFERS: same seed, bf16 - fp32, mean +0.0200, beyond 0.0000")  # the same shift in every seed
    assert parity.verdict(dict(acc, fp32=exact), "fp32") == "agrees: mean fp32 - exact +0.0000 (tolerance 0.01)"
    steady = {"exact": [0.60, 0.61, 0.62], "fp32": [0.70, 0.71, 0.72]}
    assert parity.verdict(steady, "fp32").startswith("DIFFERS: mean fp32 - exact +0.1000, beyond 0.0227 (2.78 standard "
                                                     "errors of 0.0082, Student's t at 4.0 degrees of freedom, 95%)")
    # 0.6, 0.61 and 0.62 against 0.6+d, 0.61+d, 0.62+d: twice the standard error (0.0163) would call d = 0.02 a
    # difference; Student's t at 3 seeds does not
    shifted = {"exact": [0.60, 0.61, 0.62], "fp32": [0.62, 0.63, 0.64]}
    assert parity.verdict(shifted, "fp32").startswith("agrees within the seeds' noise: mean fp32 - exact +0.0200")
    assert [round(parity.t_quantile(0.975, df), 3) for df in (1, 2, 4, 30)] == [12.706, 4.303, 2.776, 2.042]
    assert "one seed gives no noise" in parity.verdict({"exact": [0.6], "fp32": [0.7]}, "fp32")
    plain = dict(acc, plain=[0.6200, 0.6100, 0.6300])  # the plain path against the fused one, by the means
    assert parity.verdict(plain, "plain") == "agrees: mean plain - fp32 +0.0010 (tolerance 0.01)"
    assert parity.with_baselines(["plain"]) == ["fp32", "plain"]  # what its verdict needs is trained too
    assert parity.with_baselines(["bf16", "exact"]) == ["exact", "fp32", "bf16"]
