"""The published numbers (REFERENCE.md section 4) and tables that put ours beside them.

All published accuracies are CIFAR-10 test accuracies after full training (paper: 300 epochs).
Ours carry their data set, profile and epochs, so a reduced run is never read as a full one.
"""
from __future__ import annotations

import pandas as pd

# (model, heads, hierarchical) -> published figures. Paper: Table 1 (accuracy), parameter counts
# computed from the original code. [Re]: best test accuracy from its run logs.
PUBLISHED = [
    dict(model="resnet18", heads=0, hierarchical=False, paper_acc=0.938, paper_params=11_173_962, paper_gflops=1.1, re_acc=0.9463),
    dict(model="sa_quadratic", heads=9, hierarchical=False, paper_acc=0.938, paper_params=12_086_844, paper_gflops=6.2, re_acc=0.9365),
    dict(model="sa_quadratic", heads=16, hierarchical=False, re_acc=0.9311),
    dict(model="sa_quadratic", heads=9, hierarchical=True, re_acc=0.9282),
    dict(model="sa_learned", heads=9, hierarchical=False, paper_acc=0.918, paper_params=12_278_682, paper_gflops=6.2, re_acc=0.9036),
    dict(model="sa_learned", heads=16, hierarchical=False, re_acc=0.9115),
    dict(model="sa_learned_content", heads=9, hierarchical=False, paper_acc=0.871, paper_params=29_601_882, paper_gflops=15.0, re_acc=0.8636),
    dict(model="sa_learned_content", heads=16, hierarchical=False, re_acc=0.8556),
    dict(model="sa_learned_content", heads=9, hierarchical=True, re_acc=0.9100),
    dict(model="sa_learned_content", heads=16, hierarchical=True, re_acc=0.8768),
]


def published_table() -> pd.DataFrame:
    cols = ["model", "heads", "hierarchical", "paper_acc", "re_acc", "paper_params", "paper_gflops"]
    return pd.DataFrame(PUBLISHED).reindex(columns=cols).astype({"paper_params": "Int64"})


def _heads_of(variant: str) -> int:
    return int(variant.split()[0]) if variant and variant.split()[0].isdigit() else 0


def compare(summary: pd.DataFrame) -> pd.DataFrame:
    """Our per-run summary (experiment.summarize) beside the paper's and [Re]'s numbers (CIFAR-10)."""
    if summary.empty:
        return summary
    ours = summary.copy()
    ours["heads"] = ours["variant"].map(_heads_of)
    ours["hierarchical"] = ours["variant"].str.contains("hierarchical")
    table = ours.merge(published_table(), on=["model", "heads", "hierarchical"], how="left")
    # The published numbers are CIFAR-10 accuracies: a difference means something only on CIFAR-10.
    table["best_minus_paper"] = (table["best_test_acc"] - table["paper_acc"]).where(table["dataset"] == "cifar10")
    cols = ["model", "variant", "dataset", "profile", "epochs", "seed", "best_test_acc", "final_test_acc",
            "paper_acc", "re_acc", "best_minus_paper", "params", "paper_params", "train_seconds"]
    return table[cols]


def parameter_table(runs) -> pd.DataFrame:
    """Parameter counts per (model, variant) of planned runs (experiment.plan): as trained here, at the
    published size (the model's defaults: CIFAR-10, full width and depth) and as published."""
    from attnlib.models import count_parameters, create_model

    published = published_table().set_index(["model", "heads", "hierarchical"])["paper_params"]
    rows, seen = [], set()
    for r in runs:
        if (r.model, r.variant) in seen:
            continue
        seen.add((r.model, r.variant))
        full = create_model(r.model, **({"heads": r.heads} if r.heads else {}),
                            **({"hierarchical": True} if r.hierarchical else {}))
        paper = published.get((r.model, r.heads or 0, r.hierarchical))
        rows.append(dict(model=r.model, variant=r.variant, params_here=count_parameters(create_model(r.model, **r.overrides)),
                         params_full_size=count_parameters(full), paper_params=paper))
    table = pd.DataFrame(rows).astype({"paper_params": "Int64"})
    table["full_vs_paper"] = (table["params_full_size"] / table["paper_params"] - 1).map(
        lambda d: f"{d:+.2%}" if pd.notna(d) else "")
    return table
