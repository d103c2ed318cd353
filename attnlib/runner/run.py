"""Run the numbered notebooks through papermill: `python -m attnlib.run --profile quick` (what `make reproduce` calls).

Every parameter file of the profile is checked before any notebook starts. Executed notebooks go to
results/<profile>/notebooks/. A failing cell stops the run with one line naming notebook and cell.

Incremental: after a notebook succeeds, a stamp in results/<profile>/.cache/stamps.json records a digest of
its parameters, the notebook file, the library (every .py under attnlib/) and what the results depend on
besides (`environment`: the kind of device, for notebook 06 the device itself, and for dataset auto whether
CIFAR-10 is present); a notebook whose digest is unchanged and whose executed copy exists is skipped.
Notebooks that read earlier results (07, 08) also digest the stamps of the notebooks before them. An
interrupted run reruns the notebook it stopped in, whose training resumes from its checkpoints. `--force`
reruns every notebook and trains every run of the training notebooks again from its first epoch; `--report`
rebuilds only the report (08 and its HTML/PDF export).

A notebook is executed into a temporary file next to its executed copy, which it replaces only on success:
a failing rerun keeps the last good one and leaves its own as NAME.failed.ipynb. Temporary files that a
killed run left behind are removed at the start.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import logging
import os
import signal
import sys
import time
from pathlib import Path

import torch

from attnlib.data import cifar10_present
from attnlib.experiments.params import ParamsError, load_with
from attnlib.experiments.settings import PROFILES, REPO_ROOT, numbered_notebooks, params_class
from attnlib.results import remove_stale_temp_files, stamps_path
from attnlib.runner.digest import TIMING, Stamps, environment, library_digest, notebook_digest
from attnlib.runner import folder
from attnlib.runner.execute import SurvivingStream, execute, export, quiet_papermill
from attnlib.training import schedule
from attnlib.training.dry_run import RESULTS_DIR as DRY_RUN_RESULTS
from attnlib.training.train import TrainingError

ROOT = REPO_ROOT
REPORT = "08_report"
CONV = "00_conv_as_attention"
READS_RESULTS = ("07_visualizations", REPORT)  # notebooks that show what earlier notebooks computed




def pick_profile(profile: str, dry_run: int = 0) -> str:
    if profile == "paper" and not torch.cuda.is_available() and not dry_run:
        print("warning: PROFILE=paper trains the published models for 300 epochs; without a GPU that takes "
              "weeks (PROFILE=quick is the reduced profile for CPUs; DRY_RUN=2 tries every run of it here)", flush=True)
    if profile != "auto":
        return profile

    if torch.cuda.is_available():
        print(f"PROFILE=paper: a GPU is present ({torch.cuda.get_device_name(0)}); "
              "the published settings are meant for one", flush=True)
        return "paper"
    print("PROFILE=quick: no GPU found, so the reduced profile (real data, smaller models, few epochs); "
          "`make reproduce PROFILE=paper` runs the published settings", flush=True)
    return "quick"


def notebooks_for(profile: str, only: list[str] | None = None,
                  params_dir: Path = ROOT / "params") -> list[tuple[Path, Path]]:
    """(notebook, parameter file) pairs of a profile, in numbered order."""
    pairs = []
    for nb in numbered_notebooks():
        if only and not any(nb.stem.startswith(o) for o in only):
            continue
        pfile = Path(params_dir) / profile / f"{nb.stem}.yaml"
        if pfile.exists():
            pairs.append((nb, pfile))
        else:
            print(f"skipping {nb.name}: no {pfile}", flush=True)
    return pairs


def unmatched(only: list[str]) -> str | None:
    """One line for the first --only entry that starts no notebook's name, naming the notebooks and the closest one;
    None when every entry matches."""
    stems = [nb.stem for nb in numbered_notebooks()]
    for entry in only:
        if not any(stem.startswith(entry) for stem in stems):
            names = {name: stem for stem in stems for name in (stem, stem[3:])}  # 02_quadratic, quadratic
            close = difflib.get_close_matches(entry, names, n=1)
            hint = f"; did you mean {names[close[0]][:2]} ({names[close[0]]})?" if close else ""
            return f"--only {entry} matches no notebook (notebooks: {', '.join(s[:2] for s in stems)}){hint}"
    return None


STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, the terminal closed


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, met as Ctrl-C is: the notebook's kernel shut down, its half-executed copy removed, one line.
    `code`: the exit status a shell gives for the signal (128 + its number)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


def _interrupt_once(signum, frame):
    for stop in STOPS:
        signal.signal(stop, signal.SIG_IGN)
    raise KeyboardInterrupt if signum == signal.SIGINT else Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C, SIGTERM or SIGHUP raise once; a second one while the kernel shuts down is ignored (no traceback)
    previous = {stop: signal.getsignal(stop) for stop in STOPS}
    for stop, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(stop, _interrupt_once)
    stdout, sys.stdout = sys.stdout, SurvivingStream(sys.stdout)
    try:
        return _main(argv)
    except KeyboardInterrupt as err:  # between notebooks, or while checking: nothing half-done to speak of
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print("interrupted: run the same command again to go on from there", file=sys.stderr)
        return getattr(err, "code", 130)
    finally:
        sys.stdout = stdout
        for stop, handler in previous.items():
            default = signal.default_int_handler if stop == signal.SIGINT else signal.SIG_DFL
            signal.signal(stop, handler if handler is not None else default)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="auto", choices=("auto", *PROFILES))
    ap.add_argument("--dataset", default="",
                    help="override every notebook's dataset (auto, cifar10, fashion_mnist, synthetic)")
    ap.add_argument("--only", default="", help="comma-separated notebook prefixes, e.g. 01,02")
    ap.add_argument("--results-dir", default="", help=f"default: results/, and {DRY_RUN_RESULTS}/ for a dry run")
    ap.add_argument("--params-dir", default=str(ROOT / "params"), help="folder holding <profile>/<notebook>.yaml")
    ap.add_argument("--force", action="store_true",
                    help="rerun notebooks even when nothing changed since their last run, and train every run again")
    ap.add_argument("--report", action="store_true", help="only rebuild the report (notebook 08 and its HTML/PDF)")
    ap.add_argument("--dry-run", type=int, default=None, metavar="N",
                    help="every run of the profile at its size for N optimizer steps, timed and measured "
                         "(attnlib.training.dry_run)")
    ap.add_argument("--devices", default="", metavar="LIST",
                    help="the training notebooks' runs spread over these devices, one worker each: GPU indices "
                         "(0,1,2,3), cuda:N or cpu (attnlib.training.schedule); default: the parameter files' "
                         "(every GPU)")
    args = ap.parse_args(argv)
    if args.dry_run is not None and args.dry_run < 1:  # 0 would quietly start the real training
        print(f"error: --dry-run must be a number of steps, at least 1, got {args.dry_run}", file=sys.stderr)
        raise SystemExit(2)
    args.dry_run = args.dry_run or 0  # not a dry run
    # resolved once, against the folder the command runs in: every file of the series goes under it
    args.results_dir = str(folder.resolved(args.results_dir or ROOT / (DRY_RUN_RESULTS if args.dry_run else "results")))
    args.params_dir = str(folder.resolved(args.params_dir))
    args.devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    return args


def dry_run_overrides(nb: Path, steps: int) -> dict:
    """What a dry run of `steps` steps changes in a notebook's parameters: the training notebooks and 07 plan
    dry runs; 06 times every model once, at batch 8 in fp32 (one warm-up, one timed call); 00 takes its image
    from generated ones of CIFAR-10's shape where CIFAR-10 is absent, as the training notebooks do."""
    if not steps:
        return {}
    if nb.stem == CONV and not cifar10_present(ROOT / "data"):
        return {"dataset": "synthetic", "synthetic_image_size": 32}
    if nb.stem == TIMING:
        return {"warmup": 1, "reps": 1, "latency_reps": 1, "train_batches": [8], "infer_batches": [8],
                "precisions": ["fp32"]}
    fields = {f.name for f in dataclasses.fields(params_class(nb.stem))}
    return {"dry_run": steps} if "dry_run" in fields else {}


def fields_of(nb: Path) -> set[str]:
    return {f.name for f in dataclasses.fields(params_class(nb.stem))}


def for_notebook(path: Path) -> str:
    """A path as the notebooks are given it, and as their executed copies keep it: relative to the repository where
    it lies inside it ("results"), so that a committed notebook names no machine's folders; absolute elsewhere. The
    library takes a relative folder against the repository (params.for_notebook), wherever the notebook runs."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(ROOT).as_posix() or "."
    except ValueError:
        return str(absolute)


def checked_plans(pairs: list[tuple[Path, Path]], profile: str, args: argparse.Namespace) -> list[tuple[Path, dict]]:
    """Each notebook with the values to inject: its parameter file with the command line's overrides, every file
    checked (ParamsError) before any work starts."""
    extra = {"profile": profile, "results_dir": args.results_dir}
    if args.dataset:
        extra["dataset"] = args.dataset
    plans = []
    for nb, pfile in pairs:
        # the file itself (unknown keys, types, values), then with the command line's overrides
        devices = {"devices": args.devices} if args.devices and "devices" in fields_of(nb) else {}  # training notebooks
        retrain = {"retrain": True} if args.force and not args.dry_run and "retrain" in fields_of(nb) else {}
        checked = load_with(pfile, {**extra, **dry_run_overrides(nb, args.dry_run), **devices, **retrain},
                            where=f"{pfile} (with command-line overrides)")
        # Inject every field, not only the file's keys: the notebook's own defaults are the smoke
        # profile's and must never leak into another profile.
        injected = dataclasses.asdict(checked)
        if "params_dir" in injected:
            injected["params_dir"] = args.params_dir
        for key in ("data_root", "results_dir", "params_dir"):
            if key in injected:
                injected[key] = for_notebook(ROOT / injected[key])
        plans.append((nb, injected))
    return plans



def _main(argv: list[str] | None) -> int:
    args = _arguments(argv)
    profile = pick_profile(args.profile, args.dry_run)
    only = [REPORT[:2]] if args.report else [o for o in args.only.split(",") if o]
    if (unknown := unmatched(only)) is not None:
        print(f"error: {unknown}", file=sys.stderr)
        return 2
    pairs = notebooks_for(profile, only, Path(args.params_dir))
    if not pairs:
        print(f"error: no notebooks with parameter files under {args.params_dir}/{profile}/", file=sys.stderr)
        return 2
    try:
        plans = checked_plans(pairs, profile, args)
        if args.devices:
            schedule.devices(args.devices)  # the GPUs named are there
    except (ParamsError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    profile_dir = Path(args.results_dir) / profile
    try:
        folder.check_writable(profile_dir)  # before anything is written
    except folder.ResultsFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        with folder.runner_lock(profile_dir):
            return _run(plans, profile, profile_dir, args)
    except folder.AlreadyRunning as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk filled up, or the folder went read-only, during the run
        where = Path(err.filename) if err.filename else profile_dir
        print(f"error: {folder.describe(where, err)}; the results written before are kept", file=sys.stderr)
        return 1


def _run(plans: list[tuple[Path, dict]], profile: str, profile_dir: Path, args: argparse.Namespace) -> int:
    """Each notebook of `plans` run, or skipped where unchanged, then the report exported."""
    quiet_papermill()
    out_dir, logs_dir = profile_dir / "notebooks", profile_dir / "logs"
    remove_stale_temp_files(profile_dir)  # half-written files of a run that was killed
    stamps = Stamps(stamps_path(profile_dir))
    library = library_digest()
    total, ran, report_ran = time.perf_counter(), 0, False
    for i, (nb, values) in enumerate(plans, 1):
        out, log = out_dir / nb.name, logs_dir / f"{nb.stem}.log"
        upstream = stamps.upstream(nb.stem) if nb.stem in READS_RESULTS else {}
        digest = notebook_digest(nb, values, library, upstream, environment(values, nb.stem))
        done = stamps.unchanged(nb.stem, digest, out)
        if done and not (args.force or args.report):
            print(f"[{i}/{len(plans)}] {nb.name}: unchanged since its run of {done['finished']} "
                  f"({done['seconds']:.0f}s), skipped", flush=True)
            continue
        print(f"[{i}/{len(plans)}] {nb.name} (profile {profile}) ...", flush=True)
        stamps.forget(nb.stem)  # a failure or interruption from here on leaves it to be rerun
        t0 = time.perf_counter()
        code = execute(nb, values, out, log, profile_dir)
        if code:
            return code
        seconds = time.perf_counter() - t0
        stamps.record(nb.stem, digest, seconds)
        ran += 1
        report_ran |= nb.stem == REPORT
        print(f"[{i}/{len(plans)}] {nb.name} done in {seconds:.0f}s -> {out}", flush=True)
    print(f"{ran} of {len(plans)} notebooks run in {time.perf_counter() - total:.0f}s "
          f"({len(plans) - ran} unchanged); results in {Path(args.results_dir) / profile}/", flush=True)
    if report_ran or (any(nb.stem == REPORT for nb, _ in plans) and not (profile_dir / "report.html").exists()):
        return export(out_dir / f"{REPORT}.ipynb", profile_dir, logs_dir / f"{REPORT}.log")
    return 0


def command_line() -> None:
    """`python -m attnlib.run`: main(), then the exit; after an interrupt's one line, nothing more from the
    kernel's shutdown or asyncio's leftovers."""
    code = main()
    if code in {128 + stop for stop in STOPS}:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.disable(logging.CRITICAL)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        sys.stderr = open(os.devnull, "w")
    sys.exit(code)
