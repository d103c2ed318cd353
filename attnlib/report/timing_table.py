"""Notebook 06's measurements and tables: every model of its TimingParams timed (parameters, FLOPs per image,
training and inference throughput, batch-1 latency, each against the machine's GEMM peak), kept in a CSV that an
interrupted notebook continues, and the tables and notes it shows. The measuring itself is attnlib.report.timing."""
from __future__ import annotations

import io
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from attnlib import messages, results
from attnlib.data import make_synthetic
from attnlib.experiments.code_digest import training_code
from attnlib.models import count_parameters, create_model, model_config
from attnlib.report import timing
from attnlib.report.tables import published_table
from attnlib.report.timing import (Timing, fastest_precision, flops_per_image, machine_peak, pipeline_throughput,
                                   timed_precisions)
from attnlib.training.progress import Bar
from attnlib.training.train import PRECISIONS, resolve_device

# -- notebook 06: every model ------------------------------------------------------------------------
TIMING_COLUMNS = ["profile", "model", "variant", "config", "mode", "batch", "precision", "device", "image_size",
                  "in_channels", "params", "gflops_per_image", "work_gflops_per_image", "images_per_s", "latency_ms",
                  "mean_ms", "std_ms", "min_ms", "warmup", "reps", "achieved_gflops", "peak_gflops", "fraction_of_peak",
                  "peak_source", "what", "torch", "git"]
KEY = ["model", "variant", "config", "mode", "batch", "precision", "device", "image_size", "in_channels"]


def _read_rows(path) -> list[dict]:
    """The rows already measured; a damaged CSV (cut off, not a CSV, without the key columns) is moved aside as
    NAME.csv.damaged with one line, and every model is timed again."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return []
    try:
        if (kind := messages.not_a_file(path)):  # a named pipe would be read forever
            raise ValueError(f"it is {kind}, not a file")
        text = path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            raise ValueError("cut off in its last line" if text.strip() else "empty")
        df = pd.read_csv(io.StringIO(text), dtype={"config": str})  # a hex digest such as 01234567 or 1e234567
        if set(KEY) - set(df.columns) or df[list(KEY)].isna().any().any():
            raise ValueError("its rows lack the columns that say what was measured")
    except (OSError, ValueError) as err:
        aside = results.move_aside(path)
        print(f"{path} was damaged ({messages.error_line(err)}): moved aside to {aside.name}; every model is "
              "timed again", flush=True)
        return []
    return df.to_dict("records")


def time_models(p, path, progress: bool = True):
    """Time every model of TimingParams `p` (and the hierarchical variants it names): parameters,
    FLOPs per image (gflops_per_image: the network's, as the paper counts them; work_gflops_per_image: what its
    path runs at the row's batch, which achieved_gflops and the share of the peak count), training and inference
    throughput, batch-1 latency. Rows are written to the
    CSV at `path` after each model, atomically; rows already there for the same settings are kept
    and not timed again unless p.remeasure, so an interrupted notebook continues where it stopped.

    The GEMM peak (machine_peak, peak_repetitions(p) products per size) is measured before the models and, when
    any were timed, again after them in the precisions timed: the best of the two per precision is this run's peak.
    Every row returned, those read back from the CSV too, gets its peak_gflops and fraction_of_peak from it
    (apply_peak: a step faster than the GEMM raises its precision's peak to that step's rate), and the CSV is
    written so. Returns the rows `p` asks for and the GEMM peak per precision (as measured, never raised)."""
    device = resolve_device(p.device)
    dev_name, commit = results.device_name(device), results.git_commit()
    old = _read_rows(path)
    warmup, reps = peak_repetitions(p)
    peak = machine_peak(PRECISIONS, device, warmup, reps)  # every precision: which is fastest here is measured
    precisions = timed_precisions(p.precisions, peak)
    plan, wanted, retimed = _plan(p, precisions, dev_name, set() if p.remeasure else {_row_key(r) for r in old})
    rows = [r for r in old if _row_key(r) not in retimed]  # other devices, sizes, settings: kept in the file
    bar, timed = Bar("timing", sum(len(t) for *_, t in plan), enabled=progress), 0
    for name, shared, variant, config, todo in plan:
        for row in _time_model(p, name, shared, todo, device, peak, bar, timed):
            rows.append(dict(row, variant=variant, config=config, device=dev_name, git=commit))
            timed += 1
        results.atomic_write_text(path, _frame(rows).to_csv(index=False))
    bar.close()
    if plan:  # after the models, in the precisions timed: a peak measured while another job had the cores is caught
        peak = machine_peak(precisions, device, warmup, reps, earlier=peak)
        if timed_precisions(p.precisions, peak) != precisions:
            print(f"Timed in {', '.join(precisions)}, the fastest by the GEMM peak measured before the models; with "
                  f"the one measured after them, {fastest_precision(peak)} measures fastest", flush=True)
    df = _frame(rows)
    mine = pd.Series([_row_key(r) in wanted for r in rows], index=df.index, dtype=bool)
    reported = apply_peak(df[mine], peak)  # only what `p` asks for, all against this run's peak
    kept = df[~mine]  # other devices, sizes, settings: as they were
    results.atomic_write_text(path, (pd.concat([kept, reported]).sort_index() if len(kept) else reported).to_csv(
        index=False))
    return reported.reset_index(drop=True), peak


def peak_repetitions(p) -> tuple[int, int]:
    """Untimed and timed products per size of time_models' GEMM peak: one warm-up and two timed calls more than
    TimingParams `p` gives a model's step, the peak being every row's yardstick (the smoke profile: 2 and 4)."""
    return p.warmup + 1, p.reps + 2


def _row_key(r: dict) -> tuple:
    return tuple(str(r.get(k)) for k in KEY)


def _plan(p, precisions: list[str], dev_name: str, done: set):
    """What time_models times: [(name, shared, variant, config, todo)], todo the (mode, batch, precision) of a
    model whose row key is not in `done`; the keys of every row `p` asks for; the keys of the rows to be timed."""
    def key(model, variant, config, mode, batch, prec):
        return tuple(map(str, (model, variant, config, mode, batch, prec, dev_name, p.image_size, p.in_channels)))
    plan, wanted = [], set()
    for name in p.timed_models():
        for shared in ([False, True] if name in p.hierarchical_models else [False]):
            variant = "hierarchical" if shared else "standard"
            # a fingerprint of the model's configuration and of the code that computes it (a faster attention path
            # is another speed): changed options or code mean new measurements
            config = results.digest({**asdict(model_config(name, **p.model_overrides(name, shared))),
                                     "code": training_code()})
            todo = []
            for prec in precisions:
                for mode, batches in (("train", p.train_batches), ("infer", p.infer_batches), ("latency", [1])):
                    for b in batches:
                        k = key(name, variant, config, mode, b, prec)
                        wanted.add(k)
                        if k not in done:
                            todo.append((mode, b, prec))
            if todo:
                plan.append((name, shared, variant, config, todo))
    retimed = {key(name, variant, config, *t) for name, _, variant, config, todo in plan for t in todo}
    return plan, wanted, retimed


def apply_peak(df: pd.DataFrame, peak: dict[str, float]) -> pd.DataFrame:
    """The time_models rows `df` (of one device) with peak_gflops, fraction_of_peak and peak_source from one peak per
    precision: the GEMM peak `peak` of this run, for rows measured in earlier runs too.

    No step can run faster than the machine's matrix products, so a row whose achieved_gflops exceeds the GEMM peak
    means the peak measurement failed (it came out slow: another job had the cores). Then the peak of that
    precision is the best rate any of its rows achieved, taken from that step, not from the GEMM: peak_source names
    the step and the GEMM's rate, and as the true peak is at least that rate, the precision's fractions are upper
    bounds. So no fraction above 1 is reported, none is clamped, no row is dropped; measurement_notes says so."""
    out = df.copy()
    if out.empty:
        return out
    out["peak_gflops"], out["peak_source"] = out["precision"].map(peak).astype(float), "GEMM"
    for prec, rows in out.groupby("precision"):
        if rows["achieved_gflops"].max() > peak[prec]:
            step = rows.loc[rows["achieved_gflops"].idxmax()]
            out.loc[rows.index, "peak_gflops"] = step["achieved_gflops"]
            out.loc[rows.index, "peak_source"] = (f"step {step['model']} ({step['variant']}) {step['mode']} batch "
                                                  f"{step['batch']}; the GEMM measured {peak[prec]:,.1f} GFLOP/s")
    out["fraction_of_peak"] = out["achieved_gflops"] / out["peak_gflops"]
    return out



def _frame(rows: list[dict]) -> pd.DataFrame:
    """Timing rows as a table in TIMING_COLUMNS' order (rows read back from an older CSV may lack a column)."""
    df = pd.DataFrame(rows)
    return df[[c for c in TIMING_COLUMNS if c in df] + [c for c in df if c not in TIMING_COLUMNS]]

def _time_model(p, name: str, shared: bool, todo: list[tuple], device: torch.device, peak: dict[str, float], bar,
                timed: int):
    """One model's measurements (`todo`: its (mode, batch, precision) to time), a row each as it is measured."""
    torch.manual_seed(0)
    model = create_model(name, **p.model_overrides(name, shared)).to(device)
    shape = (p.in_channels, p.image_size, p.image_size)
    gflops = {mode: flops_per_image(model, mode, shape, plain=True) / 1e9 for mode in ("infer", "train")}  # paper's
    gflops["latency"] = gflops["infer"]
    work_gflops: dict[tuple[str, int], float] = {}  # what the model's path runs, per (mode, batch)
    n_params = count_parameters(model)
    variant = "hierarchical" if shared else "standard"
    for i, (mode, batch, prec) in enumerate(todo):
        bar.update(timed + i, f"{name} ({variant}) {mode} batch {batch} {prec}")
        if mode == "train":
            t = timing.train_throughput(model, batch, prec, device, p.warmup, p.reps, name, shape)
        else:
            reps = p.latency_reps if mode == "latency" else p.reps
            t = timing.infer_throughput(model, batch, prec, device, p.warmup, reps, name, shape)
        counted = ("train" if mode == "train" else "infer", batch)
        if counted not in work_gflops:  # the same for every precision
            work_gflops[counted] = flops_per_image(model, counted[0], shape, batch=batch) / 1e9
        work = work_gflops[counted]
        rate = t.images_per_s * work  # the work this path does at this batch: a faster path's skipped work not counted
        yield dict(profile=p.profile, model=name, mode=mode, batch=batch, precision=prec,
                   image_size=p.image_size, in_channels=p.in_channels, params=n_params,
                   gflops_per_image=gflops[mode], work_gflops_per_image=work, images_per_s=t.images_per_s,
                   latency_ms=t.latency_ms,
                   mean_ms=1000 * t.mean_s, std_ms=1000 * t.std_s, min_ms=1000 * t.min_s,
                   warmup=t.warmup, reps=t.reps, achieved_gflops=rate, peak_gflops=peak[prec],
                   fraction_of_peak=rate / peak[prec], peak_source="GEMM", what=t.what, torch=torch.__version__)
        bar.update(timed + i + 1, f"{name} ({variant}) {mode} batch {batch} {prec}")



# -- notebook 06: its tables ----------------------------------------------------------------------------
MODE_COLUMNS = {"train": "train img/s", "infer": "infer img/s", "latency": "latency ms"}


def per_model_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, variant) of time_models rows: parameters, GFLOPs per image (forward, training),
    images/s (latency in ms at batch 1) per mode, batch and precision, and the best training step's fraction
    of the measured matrix-product rate. Notebook 06 writes it as <results>/<profile>/metrics/06_timing_summary.csv."""
    d = df.assign(value=df["images_per_s"].where(df["mode"] != "latency", df["latency_ms"]))
    d["column"] = d["mode"].map(MODE_COLUMNS) + " b" + d["batch"].astype(str) + " " + d["precision"]
    wide = d.pivot_table(index=["model", "variant"], columns="column", values="value").round(2)
    info = df.groupby(["model", "variant"]).agg(params=("params", "first"))
    flops = df.pivot_table(index=["model", "variant"], columns="mode", values="gflops_per_image")[["infer", "train"]]
    flops.columns = ["GFLOPs/img forward", "GFLOPs/img training"]
    best = df[df["mode"] == "train"].groupby(["model", "variant"])["fraction_of_peak"].max().rename(
        "best train of peak")
    return info.join(flops.round(2)).join(wide).join(best.map("{:.0%}".format)).reset_index()


def attention_products_gflops(name: str, **overrides) -> float:
    """GFLOPs per image of a self-attention network's attention products, which a counter hooked on layers
    (Linear, Conv) does not see: attention x values (width hidden) per layer and head, and with content
    also queries x keys (width head_dim); T^2 products of each width, a multiply-add counting 2."""
    cfg = model_config(name, **overrides)
    t = (cfg.image_size // cfg.downsample) ** 2
    width = cfg.hidden + ((cfg.head_dim or cfg.hidden) if cfg.content else 0)
    return 2 * cfg.layers * cfg.heads * t * t * width / 1e9


def published_costs(df: pd.DataFrame, p) -> pd.DataFrame:
    """The paper's parameters and GFLOPs (report.published_table, the models it gives them for) beside ours
    (the forward pass of the standard variant in time_models rows `df`, TimingParams `p`), and ours without
    the attention products for the self-attention networks (the paper's FLOPs leave them out)."""
    ours = df[(df["mode"] == "infer") & (df["variant"] == "standard")].groupby("model").first()
    pub = published_table().dropna(subset=["paper_params"]).set_index("model")[["paper_params", "paper_gflops"]]
    side = pub.join(ours[["params", "gflops_per_image"]], how="left")
    side["ours_minus_attention_products"] = [
        row.gflops_per_image - attention_products_gflops(name, **p.model_overrides(name)) if name.startswith("sa_")
        else row.gflops_per_image for name, row in side.iterrows()]
    return side


def cifar_pipeline_throughput(device: str = "auto", images: int = 4096, batch: int = 32) -> Timing:
    """pipeline_throughput on `images` synthetic CIFAR-sized images (3 x 32 x 32), on resolve_device(device)."""
    return pipeline_throughput(make_synthetic(images, 16, image_size=32), batch=batch, device=resolve_device(device))


def pipeline_against_training(pipe: Timing, df: pd.DataFrame) -> str:
    """One line: the input pipeline's images/s against the fastest training throughput in time_models rows."""
    fastest = df[df["mode"] == "train"]["images_per_s"].max()
    return (f"{pipe.images_per_s:,.0f} images/s: {pipe.images_per_s / fastest:,.0f}x the fastest training throughput "
            f"above ({fastest:,.1f} images/s)")


def measurement_notes(df: pd.DataFrame) -> str:
    """What was and was not measured: the device of time_models rows `df`, whether the GEMM peak measurement failed
    (apply_peak), whether a GPU was present, the precisions."""
    precisions = list(dict.fromkeys(df["precision"]))
    lines = [f"All rows above were measured on: {df['device'].iloc[0]}."]
    failed = df[df["peak_source"].ne("GEMM") & df["peak_source"].notna()] if "peak_source" in df else df[:0]
    if len(failed):  # apply_peak: a step ran faster than the GEMM peak
        lines.append("The GEMM peak measurement failed: a step ran faster than the matrix products, so the peak used "
                     "is the fastest step's rate, taken from the step, not from the GEMM (fractions of it are upper "
                     "bounds): " + "; ".join(f"{r.precision} {r.peak_gflops:,.1f} GFLOP/s from {r.peak_source}"
                                            for r in failed.drop_duplicates("precision").itertuples()) + ".")
    if not torch.cuda.is_available():
        lines.append("No GPU was present: nothing here was measured on a GPU. On one, the same code runs with "
                     "CUDA-event timing, device synchronisation and torch's fused attention "
                     "(scaled_dot_product_attention).")
    lines.append("Precisions measured: " + ", ".join(precisions) + " | bf16 is autocast; whether it is faster than "
                 "fp32 depends on the CPU and on torch's kernels for it (CPUs with the same flags have measured "
                 "either way here): the GEMM peaks above say which is fastest on this one.")
    return "\n".join(lines)
