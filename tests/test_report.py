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


def test_parameter_table_puts_full_size_counts_beside_the_published_ones():
    from types import SimpleNamespace

    from attnlib.experiment import plan
    from attnlib.params import TrainParams, from_mapping
    from attnlib.report import parameter_table
    data = SimpleNamespace(name="synthetic", x_train=range(10), x_test=range(5),
                           model_overrides=lambda: {"image_size": 8, "in_channels": 1, "num_classes": 10})
    p = from_mapping(TrainParams, {"models": ["resnet18", "sa_quadratic"], "heads": [9], "hidden": 16, "layers": 1,
                                   "ff": 16, "dataset": "synthetic", "synthetic_image_size": 8,
                                   "per_model": {"resnet18": {"width": 4}}})
    table = parameter_table(plan(p, data)).set_index("model")
    assert table.loc["resnet18", "params_full_size"] == table.loc["resnet18", "paper_params"] == 11_173_962
    assert table.loc["sa_quadratic", "paper_params"] == 12_086_844
    assert table.loc["sa_quadratic", "full_vs_paper"] == "+0.00%"
    assert table.loc["resnet18", "params_here"] < 100_000
