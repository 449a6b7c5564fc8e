"""The report: the machine and versions it ran on, the tables, and whether each target is met."""

from __future__ import annotations

from .markdown import table
from .mlflow_cost import MlflowResult
from .paths import HFLIP, TRANSLATE
from .timing import LR, Setup, Timing

TARGETS = {"data_speedup": 10.0, "data_overhead_pct": 5.0, "mlflow_pct": 1.0}


# ----------------------------------------------------------------------------- Markdown

def path_label(key: str) -> str:
    if key.startswith("standard:"):
        w = int(key.split(":")[1])
        return f"standard (torchvision + DataLoader), {w} worker{'s' if w != 1 else ''}"
    return {"ours": "ours (DeviceDataset + BatchAugment)", "ready": "prepared batches (no data path)"}[key]


def best_standard(results: dict[str, Timing]) -> tuple[str, Timing]:
    key = min((k for k in results if k.startswith("standard:")), key=lambda k: 1 / results[k].rate)
    return key, results[key]


def pct(value: float) -> str:
    return f"{value:+.1f}%"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def data_section(data: dict[str, Timing]) -> tuple[str, str]:
    std_key, std = best_standard(data)
    rows = [[path_label(k), f"{t.images:,}", f"{t.seconds:.2f} s", f"{t.rate:,.0f}",
             f"{t.rate / std.rate:.1f}x"] for k, t in data.items()]
    ratio = data["ours"].rate / std.rate
    text = ("## Data only: one full augmented epoch, no model\n\nBatches built and touched, no model; "
            "iterator creation and DataLoader worker start-up included, after an untimed warm-up.\n\n"
            + table(["path", "images", "time", "images/s", "vs best standard"], rows)
            + f"\n\nOurs / standard (best: {std_key.split(':')[1]} workers): **{ratio:.1f}x**.\n")
    target = (f"- Data path at least {TARGETS['data_speedup']:.0f}x the standard one (data only): "
              f"{ratio:.1f}x: {verdict(ratio >= TARGETS['data_speedup'])}")
    return text, target


def training_section(s: Setup, training: dict[str, dict[str, Timing]], skipped: dict[str, str]) -> str:
    n_images = len(s.arrays)
    epoch_col = ("epoch time (measured, one full epoch)" if s.args.full_epochs
                 else "epoch time (projected from N batches)")
    rows, ratios = [], []
    for name, res in training.items():
        n = s.timed_batches(name)
        for key, t in res.items():
            rows.append([name, path_label(key), str(n), f"{t.rate:,.0f}", f"{n_images / t.rate:.1f} s"])
        std_key, std = best_standard(res)
        ratios.append([name, f"{std.rate:,.0f} ({std_key.split(':')[1]} workers)", f"{res['ours'].rate:,.0f}",
                       f"{res['ours'].rate / std.rate:.2f}x",
                       f"{n_images / std.rate:.1f} s → {n_images / res['ours'].rate:.1f} s"])
    text = (f"## Training: the same step (Adam lr {LR:g}, cross-entropy, same initial weights), "
            f"batch {s.args.batch_size}\n\nEpoch = {n_images:,} images. N = batches timed after "
            f"{s.args.warmup_batches} warm-up batches.\n\n"
            + table(["model", "path", "N", "images/s", epoch_col], rows) + "\n\n"
            + table(["model", "standard images/s (best)", "ours images/s", "ours / standard",
                     "epoch time, standard → ours"], ratios))
    for name, why in skipped.items():
        text += f"\n\n{name}: skipped ({why})."
    return text + "\n"


def overhead_section(training: dict[str, dict[str, Timing]], skipped: dict[str, str]) -> tuple[str, list[str]]:
    rows, targets = [], []
    for name, res in training.items():
        ready = res["ready"].seconds / res["ready"].images
        ours = (res["ours"].seconds / res["ours"].images - ready) / ready * 100
        std_key, std_t = best_standard(res)
        std = (std_t.seconds / std_t.images - ready) / ready * 100
        rows.append([name, f"{ready * 1e3:.3f} ms", f"{res['ours'].seconds / res['ours'].images * 1e3:.3f} ms",
                     pct(ours), f"{std_t.seconds / std_t.images * 1e3:.3f} ms", pct(std)])
        targets.append(f"- Our data-path overhead at most {TARGETS['data_overhead_pct']:.0f}% of a training epoch "
                       f"({name}): {pct(ours)}: {verdict(ours <= TARGETS['data_overhead_pct'])}")
    targets += [f"- Our data-path overhead ({name}): not measured ({why})" for name, why in skipped.items()]
    text = ("## Data-path overhead inside a training epoch\n\nThe same steps over batches prepared in advance "
            "(pre-augmented, normalised tensors in a list) against the steps fed by each path; "
            "overhead = (t_path − t_ready) / t_ready, per image.\n\n"
            + table(["model", "prepared batches, per image", "ours, per image", "ours overhead",
                     "standard (best), per image", "standard overhead"], rows) + "\n")
    return text, targets


def mlflow_section(s: Setup, m: MlflowResult) -> tuple[str, str]:
    epoch_full = len(s.arrays) * m.wall_off / m.images
    share = m.log_mean / epoch_full * 100
    diff = m.wall_on - m.wall_off
    n = s.timed_batches(s.args.mlflow_model)
    rows = [
        ["log_epoch call (mean / max of all calls)", f"{m.log_mean * 1e3:.1f} ms / {max(m.log_seconds) * 1e3:.1f} ms"],
        ["full epoch (projected from the untracked run's rate)", f"{epoch_full:.1f} s"],
        ["logging calls as share of a full epoch", f"{share:.3f}%"],
        [f"wall, tracking off ({s.args.mlflow_epochs} × {n} batches)", f"{m.wall_off:.2f} s"],
        [f"wall, tracking on ({s.args.mlflow_epochs} × {n} batches)", f"{m.wall_on:.2f} s"],
        ["difference on − off", f"{diff:+.2f} s ({diff / m.wall_off * 100:+.1f}%; noise included)"],
        ["run start + end (once per training, not per epoch; the first run also creates the store)",
         f"{m.run_setup:.2f} s"],
    ]
    text = (f"## MLflow per-epoch logging ({s.args.mlflow_model}, temporary SQLite store)\n\n"
            "The pipeline's per-epoch record (train/val/test loss and accuracy, lr, epoch_seconds, "
            "cumulative_seconds; step=epoch) logged with `fmnist.tracking.log_epoch` inside "
            "`tracked_run`, after each of the short 'epochs' of training on our data path.\n\n"
            + table(["figure", "value"], rows) + "\n")
    target = (f"- MLflow logging at most {TARGETS['mlflow_pct']:.0f}% of an epoch ({s.args.mlflow_model}): "
              f"{share:.3f}%: {verdict(share <= TARGETS['mlflow_pct'])}")
    return text, target


def render(s: Setup, notes: dict, env: list[tuple[str, str]], data: dict[str, Timing],
           training: dict[str, dict[str, Timing]], skipped: dict[str, str], mlflow_result: MlflowResult | None) -> str:
    limit = f" (--data-limit {s.args.data_limit})" if s.args.data_limit else ""
    head = ("# Data-path benchmark: ours against torchvision + DataLoader\n\n"
            "Written by `benchmarks/bench_datapath.py` (`make bench`); what it measures and why is in its "
            "docstring and in `benchmarks/README.md`.\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in env)
            + f"\n- data: {notes['images']:,} training images{limit} from {notes['data']}; "
              f"normalisation mean {s.mean:.4f}, std {s.std:.4f} ({notes['stats']})"
            + f"\n- batch {s.args.batch_size}; augmentation: horizontal flip p={HFLIP}, translation up to "
              f"{TRANSLATE} px with zero fill (RandomCrop(28, padding={TRANSLATE})); each timing the best of "
              f"{s.args.repeats}\n")
    data_text, data_target = data_section(data)
    parts, targets = [head, data_text, training_section(s, training, skipped)], [data_target]
    if training:
        over_text, over_targets = overhead_section(training, skipped)
        parts.append(over_text)
        targets += over_targets
    if mlflow_result is not None:
        ml_text, ml_target = mlflow_section(s, mlflow_result)
        parts.append(ml_text)
        targets.append(ml_target)
    else:
        targets.append(f"- MLflow logging: not measured ({s.args.mlflow_model} is not registered)")
    parts.append("## Targets\n\n" + "\n".join(targets) + "\n")
    return "\n".join(parts)
