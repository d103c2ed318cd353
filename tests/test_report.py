"""Tables beside the published numbers, and CSV text columns that stay text."""
import math

import pandas as pd

from attnlib import report, results


def summary(dataset):
    return pd.DataFrame([dict(run_id="r", model="sa_quadratic", variant="9 heads", dataset=dataset, profile="quick",
                              seed=42, epochs=5, final_test_acc=0.9, best_test_acc=0.91, train_seconds=10.0,
                              params=100, precision="fp32")])


def test_published_numbers_sit_beside_ours_and_differences_only_on_cifar10():
    fm = report.compare(summary("fashion_mnist")).iloc[0]
    assert fm["paper_acc"] == 0.938 and fm["re_acc"] == 0.9365 and fm["paper_params"] == 12_086_844
    assert math.isnan(fm["best_minus_paper"])
    cifar = report.compare(summary("cifar10")).iloc[0]
    assert cifar["best_minus_paper"] == 0.91 - 0.938


def test_text_columns_are_read_back_as_text(tmp_path):
    row = {c: 1 for c in results.METRIC_COLUMNS}
    row.update(run_id="r", git="1234567", torch="2.14", epoch=1)
    path = tmp_path / "m.csv"
    results.write_run_rows(path, "r", [row])
    df = results.read_metrics(path)
    assert df.loc[0, "git"] == "1234567" and df.loc[0, "torch"] == "2.14"
