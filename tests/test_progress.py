"""Progress from inside a notebook's kernel reaches the runner's console as one bar per run.

Covers attnlib.training.progress: under the runner a bar writes events and draws nothing; without it, a plain text
bar and no events; the runner's view draws one bar per run and leaves each as one line.
"""
import io
import json

import pytest

from attnlib.training import progress


def test_under_the_runner_a_bar_writes_events_and_draws_nothing(tmp_path, monkeypatch, capsys):
    events = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.ENV, str(events))
    monkeypatch.setattr(progress, "SEND_EVERY_S", 0.0)
    bar = progress.Bar("run-a", total=10, initial=2)
    bar.update(5, "epoch 1/2, loss 1.000")
    bar.close("epoch 2/2, test acc 0.500")
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["n"], e["done"]) for e in lines] == [(2, False), (5, False), (5, True)]
    assert lines[-1]["info"] == "epoch 2/2, test acc 0.500" and lines[0]["total"] == 10
    assert capsys.readouterr().err == ""  # the notebook's own output stays plain text


def test_without_the_runner_a_bar_is_plain_text_and_writes_no_events(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(progress.ENV, raising=False)
    bar = progress.Bar("run-b", total=4)
    bar.update(4, "epoch 1/1")
    bar.close()
    assert "run-b" in capsys.readouterr().err and not list(tmp_path.iterdir())
    silent = progress.Bar("run-c", total=4, enabled=False)
    silent.update(2)
    silent.close()
    assert capsys.readouterr().err == ""


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("console", [Terminal(), io.StringIO()], ids=["terminal", "pipe"])
def test_the_view_draws_one_bar_per_run_and_leaves_each_as_one_line(tmp_path, monkeypatch, console):
    events = tmp_path / "progress.jsonl"
    with progress.ProgressView(events, console, poll_s=0.01):
        monkeypatch.setenv(progress.ENV, str(events))
        for name in ("run-1", "run-2"):
            bar = progress.Bar(name, total=8)
            bar.update(8, "epoch 1/1, loss 0.100, acc 0.900")
            bar.close()
        with open(events, "a") as f:
            f.write('not json\n{"bar": "run-3", "n": 1')  # a broken line and one still being written
    lines = console.getvalue().split("\n")  # a bar redraws itself with \r; a finished one ends its line
    finals = [line.split("\r")[-1].strip() for line in lines if line.strip()]
    assert [f.split()[0] for f in finals] == ["run-1", "run-2"]  # run-3 never finished: no line of its own
    assert "100%" in finals[0] and "8/8" in finals[0] and "epoch 1/1, loss 0.100, acc 0.900" in finals[0]
    assert ("\r" in console.getvalue()) == console.isatty()  # a terminal's bar is redrawn in place
    assert not events.exists()  # the events file is the runner's scratch, removed at the end
