"""Run the numbered notebooks through papermill: `python -m attnlib.run --profile quick` (what `make reproduce` calls).

Every parameter file of the profile is checked before any notebook starts. Executed notebooks go to
results/<profile>/notebooks/. A failing cell stops the run with one line naming notebook and cell.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from attnlib.params import PROFILES, ParamsError, from_mapping, load, params_class

ROOT = Path(__file__).resolve().parent.parent


def pick_profile(profile: str) -> str:
    import torch

    if profile == "paper" and not torch.cuda.is_available():
        print("warning: PROFILE=paper trains the published models for 300 epochs; without a GPU that takes "
              "weeks (PROFILE=quick is the reduced profile for CPUs)", flush=True)
    if profile != "auto":
        return profile

    if torch.cuda.is_available():
        print(f"PROFILE=paper: a GPU is present ({torch.cuda.get_device_name(0)}); "
              "the published settings are meant for one", flush=True)
        return "paper"
    print("PROFILE=quick: no GPU found, so the reduced profile (real data, smaller models, few epochs); "
          "`make reproduce PROFILE=paper` runs the published settings", flush=True)
    return "quick"


def notebooks_for(profile: str, only: list[str] | None = None, params_dir: Path = ROOT / "params") -> list[tuple[Path, Path]]:
    """(notebook, parameter file) pairs of a profile, in numbered order."""
    pairs = []
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if only and not any(nb.stem.startswith(o) for o in only):
            continue
        pfile = Path(params_dir) / profile / f"{nb.stem}.yaml"
        if pfile.exists():
            pairs.append((nb, pfile))
        else:
            print(f"skipping {nb.name}: no {pfile}", flush=True)
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="auto", choices=("auto", *PROFILES))
    ap.add_argument("--dataset", default="", help="override every notebook's dataset (auto, cifar10, fashion_mnist, synthetic)")
    ap.add_argument("--only", default="", help="comma-separated notebook prefixes, e.g. 01,02")
    ap.add_argument("--results-dir", default=str(ROOT / "results"))
    ap.add_argument("--params-dir", default=str(ROOT / "params"), help="folder holding <profile>/<notebook>.yaml")
    args = ap.parse_args(argv)

    profile = pick_profile(args.profile)
    pairs = notebooks_for(profile, [o for o in args.only.split(",") if o], Path(args.params_dir))
    if not pairs:
        print(f"error: no notebooks with parameter files under {args.params_dir}/{profile}/", file=sys.stderr)
        return 2
    extra = {"profile": profile, "results_dir": args.results_dir}
    if args.dataset:
        extra["dataset"] = args.dataset
    # Check every parameter file (with the overrides) before any work starts.
    plans = []
    for nb, pfile in pairs:
        try:
            from_file = dataclasses.asdict(load(pfile))  # the file itself: unknown keys, types, values
            checked = from_mapping(params_class(nb.stem), {**from_file, **extra},
                                   where=f"{pfile} (with command-line overrides)")
        except ParamsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        # Inject every field, not only the file's keys: the notebook's own defaults are the smoke
        # profile's and must never leak into another profile. Paths are made absolute because the
        # notebooks run with notebooks/ as their working directory.
        injected = dataclasses.asdict(checked)
        for key in ("data_root", "results_dir"):
            if key in injected:
                injected[key] = str((ROOT / injected[key]).resolve())
        plans.append((nb, injected))

    import logging

    import papermill as pm

    # papermill reports the notebooks' own output (training progress) through its logger; keep
    # that, drop its per-cell "Executing/Ending Cell" banners.
    logging.basicConfig(level=logging.INFO, format="    %(message)s")
    logging.getLogger("papermill").addFilter(lambda r: not str(r.msg).startswith(("Executing Cell", "Ending Cell")))

    out_dir = Path(args.results_dir) / profile / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter()
    for i, (nb, values) in enumerate(plans, 1):
        out = out_dir / nb.name
        print(f"[{i}/{len(plans)}] {nb.name} (profile {profile}) ...", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out), parameters=values, cwd=str(ROOT / "notebooks"),
                                progress_bar=False, log_output=True, kernel_name="python3")
        except pm.PapermillExecutionError as err:
            print(f"error: {nb.name} failed in cell {err.exec_count}: {err.ename}: {err.evalue} "
                  f"(executed notebook: {out})", file=sys.stderr)
            return 1
        except Exception as err:  # kernel missing, notebook unreadable, ...: still one line
            print(f"error: {nb.name} could not be run: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        print(f"[{i}/{len(plans)}] {nb.name} done in {time.perf_counter() - t0:.0f}s -> {out}", flush=True)
    print(f"all {len(plans)} notebooks done in {time.perf_counter() - total:.0f}s; results in "
          f"{Path(args.results_dir) / profile}/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
