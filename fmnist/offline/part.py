"""One part of a profile (profiles.NAME.parts) trained in one command on a lent machine, inside a time limit,
and packed into the few files such a machine can send back: the run records, the weights that fit, a summary.

The networks train one after another on the GPU; the scikit-learn baselines of the part fit meanwhile in a
process of their own on the machine's CPU cores, so they never hold the GPU idle. Before each recipe the time it
needs is estimated (its FLOPs over the rate measured on the recipes before it): a recipe that would end past the
limit is left for another command, and the summary says which are done and which remain.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fmnist.core.config import Params, RecipeRun
from fmnist.core.errors import ConfigError, WeightsError
from fmnist.models import ModelKind, create_model, model_info
from fmnist.offline.records import CHECKPOINT_DIR, MANIFEST, RUNS_DIR, Bundle
from fmnist.offline.trainer import (
    RunResult,
    convergence_verdict,
    ends_by_design,
    half_budget,
    leave_weights_behind,
    log_line,
    mark_convergence,
    rows_table,
    train_recipe,
)
from fmnist.training.flops import training_flops_per_image
from fmnist.workflows.fit_data import TrainPaths

MAX_FILE_BYTES = 16 * 2**20  # what one file sent back may weigh
WEIGHTS_FILES = 5  # of the 8 files sent back: records, summary, the command's log, and these (at most)
SMOKE = {"epochs": 2, "seeds": 1, "train_subset": 3000, "eval_subset": 1000}  # a one-cycle schedule needs 8 steps


@dataclass
class PartOptions:
    limit_seconds: float = 540.0  # a 9-minute command, the data's preparation included
    smoke: bool = False  # every recipe for one epoch on a subset: the command checked before the measured run
    recipes: list[str] | None = None  # only these of the part
    probes: bool = True  # the half-budget convergence probes, while time remains
    assumed_tflops: float = 20.0  # the training rate before one is measured (a GPU's; far less on a CPU)
    max_weights_bytes: int = 56 * 2**20
    weights_files: int = WEIGHTS_FILES  # fewer when the command sends other files back too


@dataclass
class PartReport:
    part: str
    results: list[RunResult] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    probes: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0


def part_runs(params: Params, part: str, options: PartOptions) -> list[RecipeRun]:
    if part not in params.parts:
        known = ", ".join(params.parts) or "(none)"
        raise ConfigError(f"part '{part}': profile {params.profile} has parts {known} (profiles.{params.profile}.parts "
                          "in params.yaml)")
    names = params.parts[part]
    unknown = [n for n in options.recipes or [] if n not in names]
    if unknown:
        raise ConfigError(f"--recipes: {', '.join(unknown)} not in part '{part}' ({', '.join(names)})")
    runs = [params.run_of(n) for n in names if options.recipes is None or n in options.recipes]
    return [smoke_run(r) for r in runs] if options.smoke else runs


def smoke_run(run: RecipeRun) -> RecipeRun:
    sizes = {k: v for k, v in SMOKE.items() if k != "train_subset" or run.recipe.train_subset is None
             or run.recipe.train_subset > v}
    return run.model_copy(update={"recipe": run.recipe.model_copy(update=sizes)})


def is_baseline(run: RecipeRun) -> bool:
    return model_info(run.recipe.network).kind == ModelKind.SKLEARN


def training_tflop(run: RecipeRun, n_train: int) -> float:
    """The arithmetic a recipe's budget asks for, in TFLOP (every seed, every epoch)."""
    options = {**run.recipe.model, **({"pretrained": False} if "pretrained" in run.recipe.model else {})}
    net = create_model(run.recipe.network, num_classes=10, **options)
    images = min(n_train, run.recipe.train_subset or n_train)
    return training_flops_per_image(net) * images * run.recipe.epochs * run.recipe.seeds / 1e12


def missing_weights(run: RecipeRun) -> str | None:
    """The one line a recipe's missing pretrained weights give, found before any time is planned for it."""
    if not run.recipe.model.get("pretrained"):
        return None
    try:
        create_model(run.recipe.network, num_classes=10, **run.recipe.model)
    except WeightsError as err:
        return str(err).splitlines()[0]
    return None


def fit_baselines(runs: list[RecipeRun], paths: TrainPaths, bundle_root: str) -> list[RunResult]:
    """In a process of its own: the baselines on the CPU while the networks train on the GPU."""
    bundle = Bundle(bundle_root)
    return [result for run in runs for result in train_recipe(run, paths, bundle, figures=True)]


def run_part(params: Params, part: str, paths: TrainPaths, bundle: Bundle, options: PartOptions,
             started: float | None = None) -> PartReport:
    started = time.perf_counter() if started is None else started
    report = PartReport(part)
    runs = part_runs(params, part, options)
    baselines = [r for r in runs if is_baseline(r)]
    networks = [r for r in runs if not is_baseline(r)]
    pool, pending = None, None
    if baselines:
        pool = multiprocessing.get_context("spawn").Pool(1)
        pending = pool.apply_async(fit_baselines, (baselines, paths, str(bundle.root)))
    n_train = _train_size(paths)
    rate = options.assumed_tflops
    full_runs: dict[str, tuple[RecipeRun, list[RunResult]]] = {}
    for run in networks:
        missing = missing_weights(run)
        if missing:
            skipped = RunResult(run.name, run.train.seed, None, "SKIPPED", note=missing)
            report.results.append(skipped)
            _say(skipped)
            continue
        tflop = training_tflop(run, n_train)  # builds the network once: counted, not trained
        need = tflop / rate
        if time.perf_counter() - started + need > options.limit_seconds:
            log_line(f"{run.name}: left for another command (needs about {need:.0f} s at {rate:.1f} TFLOP/s; "
                     f"{options.limit_seconds - (time.perf_counter() - started):.0f} s left)")
            report.remaining.append(run.name)
            continue
        began = time.perf_counter()
        results = train_recipe(run, paths, bundle, on_result=_say)
        report.results.extend(results)
        finished = [r for r in results if r.status == "FINISHED"]
        if finished:
            rate = max(tflop * len(finished) / run.recipe.seeds
                       / (time.perf_counter() - began), 1e-3)
            full_runs[run.name] = (run, finished)
    if options.probes and not options.smoke:
        _probe(params, full_runs, paths, bundle, report, options, started, rate, n_train)
    if pending is not None:
        report.results.extend(_collect(pool, pending, started, options, [r.name for r in baselines], report))
    report.wall_seconds = time.perf_counter() - started
    return report


def _say(result: RunResult) -> None:
    figures = f"val {result.val_acc:.4f} test {result.test_acc:.4f}" if result.val_acc is not None else ""
    log_line(f"{result.recipe} seed {result.seed}: {result.status} {figures} in {result.wall_seconds:.1f} s "
             f"{result.note}".rstrip())


def _train_size(paths: TrainPaths) -> int:
    import numpy as np

    with np.load(paths.split_dir / "train.npz") as arrays:
        return int(arrays["y"].shape[0])


def _probe(params: Params, full_runs: dict, paths: TrainPaths, bundle: Bundle, report: PartReport,
           options: PartOptions, started: float, rate: float, n_train: int) -> None:
    """Each recipe whose schedule ends by design, again on half its epochs (one seed), while time remains."""
    tolerance = params.report.diminishing_returns_tolerance
    for name, (run, finished) in full_runs.items():
        if not ends_by_design(run) or run.recipe.epochs < 2:
            continue
        probe = half_budget(run)
        need = training_tflop(probe, n_train) / rate
        if time.perf_counter() - started + need > options.limit_seconds:
            report.probes[name] = "not probed: no time left in this command"
            continue
        probe_results = train_recipe(probe.model_copy(update={"name": name}), paths, bundle, figures=False)
        first = finished[0]
        done = [r for r in probe_results if r.status == "FINISHED"]
        if not done or first.val_acc is None:
            report.probes[name] = "probe failed"
            continue
        converged, reason = convergence_verdict(first.val_acc, done[0].val_acc, run.recipe.epochs,
                                                probe.recipe.epochs, tolerance)
        mark_convergence(bundle, [r.run_id for r in finished], converged, reason)
        _tag_probe(bundle, done[0].run_id, first.run_id)
        report.probes[name] = reason
        log_line(f"{name}: {reason}")


def _tag_probe(bundle: Bundle, probe_id: str, of_id: str) -> None:
    for record in bundle.records():
        if record.run_id == probe_id:
            record.run_name = f"{record.run_name} (half-budget probe)"
            record.set_tags({"fmnist.probe_of": of_id, "fmnist.probe": "half_budget"})
            bundle.save(record)


def _collect(pool, pending, started: float, options: PartOptions, names: list[str],
             report: PartReport) -> list[RunResult]:
    left = max(options.limit_seconds - (time.perf_counter() - started), 5.0)
    try:
        results = pending.get(timeout=left)
    except multiprocessing.TimeoutError:
        pool.terminate()
        log_line(f"baselines: not finished inside the limit: {', '.join(names)} left for another command")
        report.remaining.extend(names)
        return []
    finally:
        pool.close()
    for result in results:
        _say(result)
    return results


def weights_bytes(bundle: Bundle, run_id: str) -> int:
    """A run's weights: the checkpoint and, for a baseline, the estimator pickled beside it."""
    folder = bundle.checkpoint_file(run_id).parent
    return sum(f.stat().st_size for f in folder.iterdir()) if folder.is_dir() else 0


def keep_weights(bundle: Bundle, results: Iterable[RunResult], options: PartOptions) -> list[str]:
    """The weights that go back: the best validation runs first, each under the limit one file may weigh, at most
    WEIGHTS_FILES and max_weights_bytes in all. The others are tagged as left behind, with why."""
    ranked = sorted((r for r in results if r.status == "FINISHED" and r.run_id), key=lambda r: -(r.val_acc or 0))
    keep, total = [], 0
    for result in ranked:
        size = weights_bytes(bundle, result.run_id)
        if size <= MAX_FILE_BYTES and total + size <= options.max_weights_bytes and len(keep) < options.weights_files:
            keep.append(result.run_id)
            total += size

    def why(run_id: str) -> str:
        size = weights_bytes(bundle, run_id)
        if size > MAX_FILE_BYTES:
            return f"{size / 1e6:.0f} MB, over the {MAX_FILE_BYTES / 1e6:.1f} MB one file sent back may weigh"
        return (f"{size / 1e6:.1f} MB; the {options.weights_files} weight files sent back went to runs with a "
                "higher validation accuracy")

    leave_weights_behind(bundle, set(keep), why)
    return keep


def pack(bundle: Bundle, out: Path, part: str, keep: list[str], summary: str) -> list[Path]:
    """The files sent back: w-RUN.tar per kept run (its checkpoint folder), records-PART.tar.gz (every record and
    artifact, no weights), summary-PART.md."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for run_id in keep:
        folder = bundle.checkpoint_file(run_id).parent
        with tarfile.open(out / f"w-{run_id}.tar", "w") as tar:
            tar.add(folder, arcname=CHECKPOINT_DIR)
        shutil.rmtree(folder)
        files.append(out / f"w-{run_id}.tar")
    records = out / f"records-{part}.tar.gz"
    with tarfile.open(records, "w:gz") as tar:
        tar.add(bundle.root, arcname=f"records-{part}")
    files.append(records)
    (out / f"summary-{part}.md").write_text(summary)
    files.append(out / f"summary-{part}.md")
    return files


def unpack(out: Path, target: Path) -> Path:
    """What came back, as a bundle folder `fmnist runs import` reads: the records, each kept run's weights in its
    checkpoint folder. Written beside the target and renamed into place: a failure leaves nothing half-made."""
    archives = sorted(out.glob("records-*.tar.gz"))
    if len(archives) != 1:
        raise ConfigError(f"{out}: expected one records-PART.tar.gz, found {len(archives)}; give the folder one "
                          "command sent back")
    if target.exists():
        raise ConfigError(f"{target}: already exists; remove it or unpack elsewhere (nothing was written)")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archives[0]) as tar:
            tar.extractall(staging, filter="data")
        (root,) = [p for p in staging.iterdir() if (p / MANIFEST).is_file()]
        for weights in sorted(out.glob("w-*.tar")):
            run_dir = root / RUNS_DIR / weights.name.removeprefix("w-").removesuffix(".tar")
            if not run_dir.is_dir():
                raise ConfigError(f"{weights}: no such run in {archives[0].name}; the files are of two commands")
            with tarfile.open(weights) as tar:
                tar.extractall(run_dir, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        root.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def summary_text(params: Params, report: PartReport, done_parts: Iterable[str], kept: list[str],
                 smoke: bool) -> str:
    lines = [f"# {'Smoke of part' if smoke else 'Part'} '{report.part}' of profile {params.profile}",
             "", f"Wall time of the command's training: {report.wall_seconds:.0f} s.", "", rows_table(report.results),
             ""]
    if report.probes:
        lines += ["Convergence (half-budget probes):", *[f"- {k}: {v}" for k, v in report.probes.items()], ""]
    lines.append(f"Remaining in this part: {', '.join(report.remaining) or 'nothing'}.")
    others = [p for p in params.parts if p != report.part]
    done = set(done_parts)
    states = [f"{p} ({'done' if p in done else 'to run'})" for p in others]
    lines.append(f"Other parts: {', '.join(states) or 'none'}.")
    lines.append(f"Weights sent back: {len(kept)} run(s); the others are tagged `fmnist.weights: left behind`.")
    return "\n".join(lines) + "\n"


def done_parts(results_dir: Path) -> list[str]:
    """The parts whose records are in the repository (results/gpu/PART/manifest.json, a full run's)."""
    done = []
    for manifest in sorted(results_dir.glob(f"*/{MANIFEST}")):
        facts = json.loads(manifest.read_text())
        if not facts.get("smoke"):
            done.append(manifest.parent.name)
    return done
