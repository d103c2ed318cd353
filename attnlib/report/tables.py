"""The published numbers (docs/paper.md section 4) and tables that put ours beside them.

All published accuracies are CIFAR-10 test accuracies after full training (paper: 300 epochs).
Ours carry their data set, profile and epochs, so a reduced run is never read as a full one.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from attnlib import messages, results
from attnlib.evidence import accuracy_order
from attnlib.evidence import claims as learning
from attnlib.evidence.claims import verdict_row
from attnlib.experiments.runs import summarize
from attnlib.models import count_parameters, create_model
from attnlib.schema import ParamsError, read_yaml
from attnlib.training import dry_run

# (model, heads, hierarchical) -> published figures. Paper: Table 1 (accuracy), parameter counts computed
# from the original code; beside the models that follow the paper. [Re]: best test accuracy from its run logs;
# beside [Re]'s own networks (the _re models: docs/paper.md section 6), so that both sides are one network.
PUBLISHED = [
    dict(model="resnet18", heads=0, hierarchical=False, paper_acc=0.938, paper_params=11_173_962, paper_gflops=1.1,
         re_acc=0.9463),
    dict(model="sa_quadratic", heads=9, hierarchical=False, paper_acc=0.938, paper_params=12_086_844, paper_gflops=6.2),
    dict(model="sa_learned", heads=9, hierarchical=False, paper_acc=0.918, paper_params=12_278_682, paper_gflops=6.2),
    dict(model="sa_learned_content", heads=9, hierarchical=False, paper_acc=0.871, paper_params=29_601_882,
         paper_gflops=15.0),
    dict(model="sa_quadratic_re", heads=9, hierarchical=False, re_acc=0.9365),
    dict(model="sa_quadratic_re", heads=16, hierarchical=False, re_acc=0.9311),
    dict(model="sa_quadratic_re", heads=9, hierarchical=True, re_acc=0.9282),
    dict(model="sa_learned_re", heads=9, hierarchical=False, re_acc=0.9036),
    dict(model="sa_learned_re", heads=16, hierarchical=False, re_acc=0.9115),
    dict(model="sa_learned_content_re", heads=9, hierarchical=False, re_acc=0.8636),
    dict(model="sa_learned_content_re", heads=16, hierarchical=False, re_acc=0.8556),
    dict(model="sa_learned_content_re", heads=9, hierarchical=True, re_acc=0.9100),
    dict(model="sa_learned_content_re", heads=16, hierarchical=True, re_acc=0.8768),
]


def published_table() -> pd.DataFrame:
    cols = ["model", "heads", "hierarchical", "paper_acc", "re_acc", "paper_params", "paper_gflops"]
    return pd.DataFrame(PUBLISHED).reindex(columns=cols).astype({"paper_params": "Int64"})


def _heads_of(variant: str) -> int:
    return int(variant.split()[0]) if variant and variant.split()[0].isdigit() else 0


def with_published(ours: pd.DataFrame) -> pd.DataFrame:
    """Rows of ours (with model and variant) joined to the published row of the same model, head count
    and weight sharing (none for a shuffled-label control); adds the heads and hierarchical columns read from the
    variant."""
    ours = ours.assign(heads=ours["variant"].map(_heads_of), hierarchical=ours["variant"].str.contains("hierarchical"))
    joined = ours.merge(published_table(), on=["model", "heads", "hierarchical"], how="left")
    published = [c for c in published_table().columns if c not in ("model", "heads", "hierarchical")]
    control = results.is_control(joined["variant"])
    return joined.assign(**{c: joined[c].mask(control) for c in published})  # nothing is published on a control


def compare(summary: pd.DataFrame) -> pd.DataFrame:
    """Our per-run summary (experiment.summarize) beside the paper's and [Re]'s numbers (CIFAR-10)."""
    if summary.empty:
        return summary
    table = with_published(summary)
    # The published numbers are CIFAR-10 accuracies: a difference means something only on CIFAR-10.
    table["best_minus_paper"] = (table["best_test_acc"] - table["paper_acc"]).where(table["dataset"] == "cifar10")
    cols = ["run_id", "model", "variant", "dataset", "profile", "epochs", "seed", "best_test_acc", "final_test_acc",
            "paper_acc", "re_acc", "best_minus_paper", "params", "paper_params", "train_seconds"]
    return table[cols]


def stem_gain(table: pd.DataFrame) -> pd.DataFrame:
    """Best test accuracy per (variant, seed) and model of notebook 04's summary; with both ViTs, the gain of the
    convolutional stem over patches only (vit minus vit_plain)."""
    best = table.pivot_table(index=["variant", "seed"], columns="model", values="best_test_acc")
    if {"vit", "vit_plain"} <= set(best.columns):
        best["stem_gain"] = best["vit"] - best["vit_plain"]
    return best


def parameter_table(runs) -> pd.DataFrame:
    """Parameter counts per (model, variant) of planned runs (experiment.plan): as trained here, at the
    published size (the model's defaults: CIFAR-10, full width and depth) and as published."""
    published = published_table().set_index(["model", "heads", "hierarchical"])["paper_params"]
    rows, seen = [], set()
    for r in runs:
        if (r.model, r.variant) in seen:
            continue
        seen.add((r.model, r.variant))
        full = create_model(r.model, **({"heads": r.heads} if r.heads else {}),
                            **({"hierarchical": True} if r.hierarchical else {}))
        paper = published.get((r.model, r.heads or 0, r.hierarchical))
        rows.append(dict(model=r.model, variant=r.variant,
                         params_here=count_parameters(create_model(r.model, **r.overrides)),
                         params_full_size=count_parameters(full), paper_params=paper))
    table = pd.DataFrame(rows).astype({"paper_params": "Int64"})
    table["full_vs_paper"] = (table["params_full_size"] / table["paper_params"] - 1).map(
        lambda d: f"{d:+.2%}" if pd.notna(d) else "")
    return table


# -- the report (notebook 08) ---------------------------------------------------------------------
TRAINING = ["01_learned_2d", "02_quadratic", "03_san", "04_vit", "05_resnet"]


def _current_dry_run(rows: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """A notebook's dry-run rows of its current runs: those its summary lists, and those that did not fit in
    memory (no summary row) unless a run of the same model and variant in the summary supersedes them."""
    if "run_id" not in rows:
        return pd.DataFrame()
    trained = set(zip(summary["model"], summary["variant"])) if {"model", "variant"} <= set(summary) else set()
    unfit = rows["outcome"].fillna(dry_run.MEASURED) != dry_run.MEASURED if "outcome" in rows else False
    superseded = [(m, v) in trained for m, v in zip(rows["model"], rows["variant"])]
    return rows[rows["run_id"].isin(summary["run_id"]) | (unfit & ~pd.Series(superseded, index=rows.index))]


def _read_csv(path) -> pd.DataFrame:
    """A CSV a notebook wrote (empty frame when missing). A damaged one is left out with one line, and the stamp
    of the notebook that writes it is dropped, so the next `make reproduce` writes it again."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return pd.DataFrame()
    try:
        if (kind := messages.not_a_file(path)):  # a named pipe would be read forever
            raise ValueError(f"it is {kind}, not a file")
        text = path.read_text(encoding="utf-8")
        if text.strip() and not text.endswith("\n"):
            raise ValueError("cut off in its last line")
        return pd.read_csv(io.StringIO(text)) if text.strip() else pd.DataFrame()
    except (OSError, ValueError) as err:  # ParserError and UnicodeDecodeError are ValueErrors
        stamps = results.stamps_path(path.parent.parent)
        owners = [k for k in results.read_stamps(stamps, verbose=False) if path.stem.startswith(k)]
        results.forget_stamps(stamps, owners)
        print(f"note: {path} is damaged ({messages.error_line(err)}): left out of this report; run the same "
              "command again to write it anew", flush=True)
        return pd.DataFrame()


def _planned_epochs(summary: pd.DataFrame) -> dict[str, int]:
    """Run id -> the epochs its notebook planned, as its latest summary names them ({} without one). A summary is
    written once every run of the notebook has finished, so its `epochs` (the last epoch recorded) is the plan's."""
    if not {"run_id", "epochs"} <= set(summary.columns):
        return {}
    epochs = pd.to_numeric(summary["epochs"], errors="coerce")
    return {r: int(e) for r, e in zip(summary["run_id"], epochs) if pd.notna(e) and e >= 1}


def load_results(results_dir, profile: str) -> dict:
    """What notebooks 00-07 wrote under results/<profile>/ in their latest runs (empty frames for what is
    missing). The metric and center CSVs keep the rows of runs with earlier settings; only the runs in
    each notebook's latest summary (the ones its parameters plan now) are kept."""
    base = Path(results.profile_dir(results_dir, profile))
    summaries = {name: _read_csv(results.summary_path(results_dir, profile, name)) for name in TRAINING}  # read once
    metrics, attention, dry = [], [], []
    for name in TRAINING:
        current = summaries[name]
        planned = _planned_epochs(current)  # rows beyond the plan: damaged, as a rerun finds them
        m = results.read_metrics(results.metrics_path(results_dir, profile, name), planned=planned)
        a = results.read_metrics(results.attention_path(results_dir, profile, name), results.ATTENTION_COLUMNS,
                                 planned)
        if "run_id" in current:
            metrics += [m[m["run_id"].isin(current["run_id"])]] if not m.empty else []
            attention += [a[a["run_id"].isin(current["run_id"])]] if not a.empty else []
            dry += [_current_dry_run(_read_csv(dry_run.path(results_dir, profile, name)), current)]
    quadratic = summaries["02_quadratic"]
    centers = results.read_metrics(results.centers_path(results_dir, profile, "02_quadratic"), results.CENTER_COLUMNS,
                                   _planned_epochs(quadratic))
    stamps = results.stamps_path(base)
    return dict(
        metrics=pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame(),
        attention=pd.concat(attention, ignore_index=True) if attention else pd.DataFrame(),  # every epoch, from 0
        conv=_read_csv(results.metrics_path(results_dir, profile, "00_conv_as_attention")),
        timing=_read_csv(base / "metrics" / "06_timing_this_run.csv"),  # 06's latest settings and device only
        centers=centers[centers["run_id"].isin(quadratic["run_id"])] if "run_id" in quadratic else centers.iloc[:0],
        stamps=results.read_stamps(stamps),  # damaged ones: left out, with one line
        # attnlib.training.dry_run's rows, if one ran
        dry_run=pd.concat(dry, ignore_index=True) if dry else pd.DataFrame(),
    )


FULL_SPLITS = {"cifar10": (50_000, 10_000), "fashion_mnist": (60_000, 10_000)}  # (training, test) images


def split_sizes(metrics: pd.DataFrame, params_dir: str | Path | None) -> pd.DataFrame:
    """Per (experiment, profile, dataset) of `metrics`: how many training and test images its runs used
    (train_images, test_images): the notebook's train_subset / test_subset (params_dir/<profile>/<experiment>.yaml)
    where set, else the data set's whole split (FULL_SPLITS); NaN where neither is known."""
    rows = []
    for (experiment, profile, dataset), _ in metrics.groupby(["experiment", "profile", "dataset"]):
        full = FULL_SPLITS.get(dataset, (float("nan"), float("nan")))
        try:  # the guarded reader of parameter files: no alias bombs, no endless nesting
            values = read_yaml(Path(params_dir) / profile / f"{experiment}.yaml") if params_dir else {}
        except ParamsError:
            values = {}
        values = values if isinstance(values, dict) else {}
        subset = [values.get("train_subset") or 0, values.get("test_subset") or 0]
        rows.append(dict(experiment=experiment, profile=profile, dataset=dataset,
                         train_images=min(subset[0], full[0]) if subset[0] else full[0],
                         test_images=min(subset[1], full[1]) if subset[1] else full[1]))
    return pd.DataFrame(rows, columns=["experiment", "profile", "dataset", "train_images", "test_images"])


def accuracy_table(metrics: pd.DataFrame, timing: pd.DataFrame | None = None,
                   params_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per (model, variant, data set, profile, epochs): how many training and test images its runs used
    (split_sizes, from the notebooks' parameters in `params_dir`), our best test accuracy (mean and standard
    deviation over seeds), the paper's and [Re]'s (CIFAR-10, full training), our difference to the paper
    (CIFAR-10 only), parameters, and, from notebook 06, GFLOPs per image and fp32 training images/s of the
    model at its published size on the machine that ran 06."""
    if metrics.empty:
        return pd.DataFrame()
    runs = summarize(metrics).merge(metrics[["run_id", "experiment"]].drop_duplicates("run_id"), on="run_id")
    runs = runs.merge(split_sizes(metrics, params_dir), on=["experiment", "profile", "dataset"], how="left")
    g = runs.groupby(["model", "variant", "dataset", "profile", "epochs"], sort=False)
    table = g.agg(train_images=("train_images", "first"), test_images=("test_images", "first"),
                  seeds=("seed", "nunique"), acc=("best_test_acc", "mean"), acc_sd=("best_test_acc", "std"),
                  final_acc=("final_test_acc", "mean"), params=("params", "first"),
                  train_minutes=("train_seconds", lambda s: s.sum() / 60)).reset_index()
    table["acc_sd"] = table["acc_sd"].fillna(0.0)
    table = with_published(table)
    table["acc_minus_paper"] = (table["acc"] - table["paper_acc"]).where(table["dataset"] == "cifar10")
    if timing is not None and not timing.empty:
        t = timing[timing["precision"] == "fp32"]
        train = t[t["mode"] == "train"].sort_values("batch").groupby(["model", "variant"]).last()
        infer = t[t["mode"] == "infer"].groupby(["model", "variant"]).last()
        perf = pd.DataFrame({"gflops_full_size": infer["gflops_per_image"],
                             "train_img_s_full_size": train["images_per_s"]})
        perf = perf.reset_index().rename(columns={"variant": "timing_variant"})
        table["timing_variant"] = table["hierarchical"].map({True: "hierarchical", False: "standard"})
        table = table.merge(perf, on=["model", "timing_variant"], how="left").drop(columns="timing_variant")
    cols = ["model", "variant", "dataset", "train_images", "test_images", "profile", "epochs", "seeds", "acc", "acc_sd",
            "final_acc", "paper_acc",
            "re_acc", "acc_minus_paper", "params", "paper_params", "paper_gflops", "gflops_full_size",
            "train_img_s_full_size", "train_minutes"]
    return table[[c for c in cols if c in table.columns]]


def claim_convolution(conv: pd.DataFrame) -> dict:
    """Theorem 1: a multi-head attention layer with K^2 heads computes any K x K convolution (notebook 00)."""
    name = "Attention can express any convolution (Theorem 1)"
    if conv.empty:
        return verdict_row(name, "not measured", "no results/<profile>/metrics/00_conv_as_attention.csv")
    worst = conv.groupby("dtype")["rel_error"].max()
    ok = bool(conv["within_tolerance"].all())
    return verdict_row(name, "reproduced" if ok else "not reproduced",
                       f"{len(conv)} constructions ({', '.join(sorted(conv['case'].unique()))}; "
                       f"{', '.join(sorted(conv['positional'].unique()))} encodings) on a "
                       f"{conv['dataset'].iloc[0]} image: "
                       + "; ".join(f"largest relative error {e:.1e} in {d}" for d, e in worst.items())
                       + ("" if ok else "; some construction is outside its dtype's tolerance"))


def claim_published_accuracy(table: pd.DataFrame) -> dict:
    """The published numbers themselves: only a CIFAR-10 run at the paper's settings can check them."""
    name = "Published accuracies: quadratic 93.8% = ResNet18 93.8% on CIFAR-10 (Table 1)"
    full = table[(table["dataset"] == "cifar10") & (table["profile"] == "paper")] if not table.empty else table
    d = full.dropna(subset=["paper_acc"]) if not full.empty else full
    if d.empty:
        where = ", ".join(f"{p} profile on {ds}" for p, ds in sorted(set(zip(table["profile"], table["dataset"])))) \
            if not table.empty else "no training results"
        return verdict_row(name, "not measured", f"needs models of Table 1 trained at the paper profile on CIFAR-10; "
                                            f"this report has {where}")
    gaps = (d["acc"] - d["paper_acc"]).abs()
    return verdict_row(name, "reproduced" if gaps.max() <= 0.01 else "not reproduced",
                       f"largest gap to the paper over {len(d)} models ({', '.join(d['model'])}; epochs "
                       f"{', '.join(map(str, sorted(set(d['epochs']))))}): {gaps.max() * 100:.1f} percentage points "
                       "(within 1 counts)")


def learning_effects(res: dict) -> pd.DataFrame:
    """Per run and layer, what training changed in the attention (claims.layer_effects)."""
    return learning.layer_effects(res["attention"], res["centers"])


def claims(res: dict, table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim of the paper: verdict and evidence. The learning claims compare every trained run with
    the same run at initialisation (attnlib.evidence.claims)."""
    effects = learning_effects(res)
    return pd.DataFrame([claim_convolution(res["conv"]), learning.claim_quadratic_grid(effects),
                         learning.claim_deeper_wider(effects), learning.claim_learned_locality(effects),
                         accuracy_order.claim_accuracy_order(table), claim_published_accuracy(table)])


def series_time(stamps: dict, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per notebook: the duration of its last execution (runner stamps) and the training time its runs
    recorded (which a notebook reading back finished runs does not repeat)."""
    train = {}
    if not metrics.empty:
        train = metrics.groupby("experiment")["seconds"].sum().to_dict()
    rows = [dict(notebook=k, last_run=v.get("finished"), last_run_seconds=v.get("seconds"),
                 training_seconds=round(train.get(k, 0.0), 1)) for k, v in sorted(stamps.items())]
    return pd.DataFrame(rows)
