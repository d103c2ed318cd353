"""`python -m attnlib.explore IMAGE --run RUN_ID --out page.html`: the explorer page for your own image(s),
resized and cropped to the run's input, converted to its data set's channels and normalised like its training
data (attnlib.explorer.image). A file that is not an image gets one line saying so (exit 2)."""
from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import sys
from pathlib import Path

from attnlib import messages
from attnlib.data import DataError
from attnlib.experiments.params import ParamsError
from attnlib.experiments.settings import REPO_ROOT
from attnlib.explorer.image import NotAnImage, open_image
from attnlib.explorer.page import EXPERIMENTS, human_size, write_page
from attnlib.explorer.trained_runs import TrainedRun, trained_runs


# -- the command -----------------------------------------------------------------------------------
def picture_notes(img) -> list[str]:
    """What is done to a picture besides scaling it: a conversion to 8 bits, the crop of a picture not square."""
    notes = [img.info["note"]] if "note" in img.info else []
    w, h = img.size
    if w != h:
        side = min(w, h)
        notes.append(f"{w}x{h} pixels: its middle {side}x{side} square is shown (the networks take square images)")
    return notes


def _guess_profile(results_dir: Path, wanted: list[str]) -> str:
    """The first profile (quick, paper, smoke) whose checkpoints hold every run named (by id or prefix); "quick"
    when none is named and none has checkpoints. A name that no profile's checkpoints start with raises ValueError,
    naming the runs there are and the closest one."""
    trained = {profile: [p.stem for p in (results_dir / profile / "checkpoints").glob("*.pt")]
               for profile in ("quick", "paper", "smoke")}
    for profile, ckpts in trained.items():
        if ckpts and (not wanted or all(any(c.startswith(w) for c in ckpts) for w in wanted)):
            return profile
    every = sorted({c for ckpts in trained.values() for c in ckpts})
    missing = [w for w in wanted if not any(c.startswith(w) for c in every)]
    if missing and every:
        raise ValueError(f"--run {missing[0]} matches no trained run{_closest(missing[0], every)} "
                         f"(trained runs under {results_dir}: {messages.first_few(every, 6)})")
    return "quick"


def _closest(name: str, run_ids: list[str]) -> str:
    close = difflib.get_close_matches(name, run_ids, n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def select_runs(runs: list[TrainedRun], wanted: list[str]) -> list[TrainedRun]:
    """The runs named by id or unique id prefix (e.g. sa_quadratic-h9-s42), in the order named; all when
    none is named. Raises ValueError (one line) for a name that matches none or several."""
    if not wanted:
        return runs
    chosen = []
    for name in wanted:
        exact = [r for r in runs if r.run.run_id == name]
        match = exact or [r for r in runs if r.run.run_id.startswith(name)]
        if len(match) != 1:
            known = ", ".join(r.run.run_id for r in runs) or "none"
            why = (f"matches no trained run{_closest(name, [r.run.run_id for r in runs])}" if not match
                   else f"matches {len(match)} runs")
            raise ValueError(f"--run {name} {why} (trained runs: {known})")
        chosen.append(match[0])
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m attnlib.explore",
        description="Write a self-contained HTML page showing where every head of trained attention models attends "
                    "on your own image(s), for every query pixel.")
    ap.add_argument("images", nargs="+", metavar="IMAGE", help="image file(s) (PNG, JPEG, ...)")
    ap.add_argument("--run", action="append", default=[], metavar="RUN_ID",
                    help="a trained run's id or a unique prefix of it (e.g. sa_quadratic-h9-s42); repeat for several; "
                         "default: every trained run of the profile")
    ap.add_argument("--out", required=True, help="the HTML file to write")
    ap.add_argument("--profile", default="", help="default: the profile whose checkpoints hold the runs")
    ap.add_argument("--results-dir", default=str(REPO_ROOT / "results"))
    ap.add_argument("--params-dir", default=str(REPO_ROOT / "params"))
    ap.add_argument("--data-root", default=str(REPO_ROOT / "data"))
    ap.add_argument("--dataset", default="", help="as the runner's --dataset, if the runs were trained with one")
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS), help="the training notebooks whose runs to look in")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if (kind := messages.not_a_file(args.out)):
        print(f"error: --out {args.out} is {kind}; name the HTML file to write", file=sys.stderr)
        return 2
    try:
        pictures = [(Path(p).name, open_image(p)) for p in args.images]
    except NotAnImage as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, img in pictures:
        for note in picture_notes(img):
            print(f"note: {name}: {note}")
    results_dir = Path(args.results_dir)
    try:
        profile = args.profile or _guess_profile(results_dir, args.run)
        with contextlib.redirect_stdout(io.StringIO()):  # the data sets' banners: this command prints one line
            runs, _ = trained_runs([e for e in args.experiments.split(",") if e], profile, results_dir,
                                   args.params_dir, args.data_root, args.dataset)
        if not runs:
            raise ValueError(f"no trained runs in {results_dir / profile} (checkpoints are not committed): "
                             f"train them with `make reproduce PROFILE={profile}` first")
        runs = select_runs(runs, args.run)
        path, size, what = write_page(args.out, runs, test_images=(), own_images=pictures, average_images=0,
                                      device=args.device, title="Attention on your image",
                                      source="Written by python -m attnlib.explore.")
    except (ValueError, ParamsError, DataError, OSError) as err:
        print(f"error: {messages.one_line(err)}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({human_size(size)}): {what}")
    return 0
