"""The throughput benchmark's report (`benchmarks/bench_throughput.py` is the entry point): the figures a row
derives from its measurements (speed-up, TFLOP/s, share of peak, epoch 1 with compile), the settings it ran
with, and the Markdown page: environment, settings, peaks, then the table. No MLflow here: the GPU machines
have none (`report.py`, the data-path benchmark's report, imports it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .markdown import table

if TYPE_CHECKING:
    from fmnist.core.config import Params

    from .throughput import Bench


def derived(row: dict, images_per_epoch: int) -> dict:
    """Speed-up, arithmetic rate and share of peak, from the measured figures a row has."""
    plain, ours, gflop = row.get("plain"), row.get("ours"), row.get("gflop_per_image")
    out = {}
    if plain and ours:
        out["speedup"] = ours["images_per_s"] / plain["images_per_s"]
    if gflop is not None:
        for key, figures in (("plain", plain), ("ours", ours)):
            if figures:
                out[f"{key}_tflops"] = figures["images_per_s"] * gflop / 1e3
    if "ours_tflops" in out and row.get("peak"):
        out["share_of_peak"] = out["ours_tflops"] / row["peak"]["tflops"]
    if ours and ours["compile_seconds"] is not None:
        epoch = images_per_epoch / ours["images_per_s"]
        out["epoch1_images_per_s_with_compile"] = images_per_epoch / (epoch + ours["compile_seconds"])
    return out


def number(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def runs_as(row: dict) -> str:
    return ", ".join([row["precision"], "NHWC" if row["channels_last"] else "NCHW",
                      "compiled" if row["compile"] else "eager"])


def label(row: dict) -> str:
    network = row.get("network", row["recipe"])
    return row["recipe"] if network == row["recipe"] else f"{row['recipe']} ({network})"


def table_row(row: dict) -> list[str]:
    errors = "; ".join(f"{what}: {error}" for what, error in row["errors"].items())
    if "network" not in row:  # no plan: nothing was measured
        return [label(row)] + ["–"] * (len(HEADER) - 2) + [errors]
    plain, ours = row.get("plain") or {}, row.get("ours") or {}
    share = row.get("share_of_peak")
    return [label(row), str(row["batch_size"]), runs_as(row), number(plain.get("images_per_s"), ",.0f"),
            number(ours.get("images_per_s"), ",.0f"), number(row.get("speedup"), ".2f"),
            number(row.get("gflop_per_image"), ".4f"), number(row.get("ours_tflops"), ".3f"),
            number(None if share is None else share * 100, ".1f"), number(ours.get("compile_seconds"), ".1f"),
            number(row.get("epoch1_images_per_s_with_compile"), ",.0f"), errors]


HEADER = ["network", "batch", "ours runs", "plain img/s", "ours img/s", "speed-up (x)", "GFLOP/img (train)",
          "ours TFLOP/s", "% of peak", "compile s", "epoch 1 img/s with compile", "error"]


def render(env: list[tuple[str, str]], settings: dict, peaks: dict, rows: list[dict]) -> str:
    peak_lines = [f"- peak {k}: {v['tflops']:.2f} TFLOP/s ({v['how']})" for k, v in peaks.items()]
    return ("# Training throughput: ours against a plain PyTorch loop\n\n"
            "Written by `benchmarks/bench_throughput.py`; what is timed and how is in its docstring and in "
            "`benchmarks/README.md`.\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in env) + "\n"
            + "\n".join(f"- {k}: {v}" for k, v in settings.items()) + "\n"
            + "\n".join(peak_lines) + "\n\n"
            + "plain: torchvision + DataLoader, fp32, eager, SGD, no augmentation; ours: the pipeline's data path "
              "and step for the recipe. % of peak: ours TFLOP/s over the peak above.\n\n"
            + table(HEADER, [table_row(r) for r in rows]) + "\n")


def settings_of(b: Bench, params: Params, source: str) -> dict:
    budget = f"{b.budget.steps} steps" if b.budget.steps is not None else f"{b.budget.seconds:g} s"
    return {"profile": params.profile, "data": f"{len(b.data):,} training images from {source}",
            "budget": f"{budget} per measurement, after {b.budget.warmup} untimed warm-up step(s)",
            "plain DataLoader workers": b.workers, "compile": b.args.compile}
