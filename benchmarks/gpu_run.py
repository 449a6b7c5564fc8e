"""The gpu profile on a lent GPU machine (offline; torch, no MLflow, no DVC), one part per command.

    gpu_run.py plan                              the parts, each recipe's arithmetic and estimated time, done or not
    gpu_run.py run PART --raw-dir D --out DIR    train the part into run records, pack at most 8 files into DIR
    gpu_run.py run PART --smoke ...              the same, every recipe one epoch on a subset (the check first)
    gpu_run.py speed RECIPES --raw-dir D --out DIR   speed-run records (`fmnist speedrun` without MLflow)
    gpu_run.py unpack DIR --to results/gpu/PART  what came back, as a bundle `fmnist runs import` reads

Everything a run records (params, per-epoch metrics with their steps and times, evaluation, figures, the weights
that fit) comes home through `fmnist runs import results/gpu/PART` as ordinary MLflow runs of the profile's
experiment. docs/gpu.md says how it is run and what comes back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the GPU machine runs the tree as sent, uninstalled

from fmnist.core.commit import git_commit  # noqa: E402
from fmnist.core.config import load_params  # noqa: E402
from fmnist.core.errors import FmnistError  # noqa: E402
from fmnist.offline.part import (  # noqa: E402
    PartOptions,
    done_parts,
    keep_weights,
    pack,
    part_runs,
    run_part,
    summary_text,
    training_tflop,
    unpack,
)
from fmnist.offline.records import Bundle  # noqa: E402
from fmnist.offline.speed import record_attempt  # noqa: E402
from fmnist.offline.trainer import bundle_commit, log_line, prepare_data  # noqa: E402
from fmnist.training.speedrun import check_attempt, prepare_attempt, time_seeds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "gpu"
TRAIN_IMAGES = 54_000  # the split's training images (60,000 less the validation tenth)


def plan(args: argparse.Namespace) -> int:
    params = load_params(args.params, [], profile=args.profile)
    done = set(done_parts(RESULTS))
    total = 0.0
    for part in params.parts:
        print(f"part {part} ({'done' if part in done else 'to run'}):")
        seconds = 0.0
        for run in part_runs(params, part, PartOptions()):
            if run.recipe.network.startswith("sk_"):
                print(f"  {run.name:22s} scikit-learn, fitted on the CPU beside the GPU work")
                continue
            tflop = training_tflop(run, TRAIN_IMAGES)
            seconds += tflop / args.tflops
            print(f"  {run.name:22s} {run.recipe.epochs:3d} epochs x {run.recipe.seeds} seed(s), batch "
                  f"{run.recipe.batch_size:4d}: {tflop:8.1f} TFLOP, about {tflop / args.tflops:6.1f} s")
        total += seconds
        print(f"  estimated {seconds:.0f} s at {args.tflops:g} TFLOP/s (training only)")
    print(f"profile {params.profile}: estimated {total:.0f} s of GPU training at {args.tflops:g} TFLOP/s")
    return 0


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    params = load_params(args.params, args.overrides, profile=args.profile)
    options = PartOptions(limit_seconds=args.limit_seconds, smoke=args.smoke, probes=not args.no_probes,
                          recipes=args.recipes.split(",") if args.recipes else None,
                          assumed_tflops=args.tflops, weights_files=args.weights_files)
    part_runs(params, args.part, options)  # a bad part or recipe name: one line before any work
    work = Path(tempfile.mkdtemp(prefix="fmnist-gpu-"))
    paths = prepare_data(Path(args.raw_dir), work / "data", params)
    print(f"data ready in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    bundle = Bundle(work / "bundle").create(note=f"part {args.part} of profile {params.profile}", part=args.part,
                                            profile=params.profile, smoke=args.smoke, commit=git_commit(ROOT))
    report = run_part(params, args.part, paths, bundle, options, started)
    kept = keep_weights(bundle, report.results, options)
    summary = summary_text(params, report, done_parts(RESULTS), kept, args.smoke)
    files = pack(bundle, Path(args.out), args.part, kept, summary)
    print(summary)
    print(f"sent back: {', '.join(f.name for f in files)}; total wall time {time.perf_counter() - started:.0f} s")
    return 0


def speed(args: argparse.Namespace) -> int:
    """Speed-run attempts (fmnist.training.speedrun's rules) of each recipe, as run records."""
    started = time.perf_counter()
    params = load_params(args.params, args.overrides, profile=args.profile)
    runs = [params.run_of(name) for name in args.recipes.split(",")]
    if args.smoke:  # batches of 1024 need more images than a part's smoke for a one-cycle schedule to run
        runs = [r.model_copy(update={"recipe": r.recipe.model_copy(update={"epochs": 2, "train_subset": 10_000})})
                for r in runs]
    seeds = list(range(params.train.seed, params.train.seed + (1 if args.smoke else args.seeds)))
    work = Path(tempfile.mkdtemp(prefix="fmnist-gpu-"))
    prepare_data(Path(args.raw_dir), work / "data", params)
    for run in runs:  # every check before any timing
        check_attempt(run, seeds, args.data, work)
    bundle = Bundle(work / "bundle").create(note=f"speed runs of {args.recipes}", part=f"speed-{args.name}",
                                            profile=params.profile, smoke=args.smoke, commit=git_commit(ROOT))
    tables = []
    for run in runs:
        _, runner, attempt = prepare_attempt(run, seeds, args.data, work, echo=log_line)
        time_seeds(runner, seeds, attempt, started, echo=log_line)
        record_attempt(bundle, run, attempt, bundle_commit(bundle))
        tables.append(attempt.table())
    summary = "\n\n".join(tables) + f"\n\nTotal wall time {time.perf_counter() - started:.0f} s.\n"
    files = pack(bundle, Path(args.out), f"speed-{args.name}", [], summary)
    print(summary)
    print(f"sent back: {', '.join(f.name for f in files)}")
    return 0


def unpack_command(args: argparse.Namespace) -> int:
    target = unpack(Path(args.out), Path(args.to))
    print(f"{target}: a bundle of run records; `fmnist runs import {target}` brings its runs into MLflow")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param (repeatable)")
    parser.add_argument("--tflops", type=float, default=40.0,
                        help="training rate assumed until one is measured (TFLOP/s; default: a GPU's)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="the parts, each recipe's arithmetic and estimated time, done or not")
    go = sub.add_parser("run", help="train one part into run records and pack them into --out")
    go.add_argument("part")
    go.add_argument("--raw-dir", required=True, help="a folder holding the four official .gz files")
    go.add_argument("--out", required=True)
    go.add_argument("--limit-seconds", type=float, default=540.0)
    go.add_argument("--smoke", action="store_true", help="every recipe for one epoch on a subset")
    go.add_argument("--recipes", help="only these recipes of the part (comma-separated)")
    go.add_argument("--no-probes", action="store_true", help="skip the half-budget convergence probes")
    go.add_argument("--weights-files", type=int, default=5, help="at most this many weight files sent back")
    fast = sub.add_parser("speed", help="speed-run records of recipes (the speed-run rules, every seed)")
    fast.add_argument("recipes", help="comma-separated recipe names")
    fast.add_argument("--name", default="records", help="names the files sent back (records-speed-NAME.tar.gz)")
    fast.add_argument("--raw-dir", required=True)
    fast.add_argument("--out", required=True)
    fast.add_argument("--seeds", type=int, default=5)
    fast.add_argument("--data", default="all", help="all: 60,000 training images; split: 54,000")
    fast.add_argument("--smoke", action="store_true", help="one seed, 2 epochs on a subset")
    back = sub.add_parser("unpack", help="what came back, as a bundle folder `fmnist runs import` reads")
    back.add_argument("out")
    back.add_argument("--to", required=True)
    args = parser.parse_args(argv)
    try:
        return {"plan": plan, "run": run, "speed": speed, "unpack": unpack_command}[args.command](args)
    except FmnistError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
