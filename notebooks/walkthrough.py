# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A walkthrough of a finished pipeline run
#
# Everything here is read from MLflow: the latest report run of an experiment, the training runs it names
# (their params and per-epoch metric histories) and the champion model of the registry. The tables are the
# report's own, rebuilt by the code behind `fmnist tables`; the only file read besides the store is the
# prepared test set. Nothing is written to the store.
#
# The first cell holds the parameters; each can be set from the environment instead of editing it
# (`FMNIST_ROOT`, `MLFLOW_TRACKING_URI`, `FMNIST_EXPERIMENT`, `FMNIST_TEST_IMAGES`).

# %% tags=["parameters"]
import os
from pathlib import Path

from fmnist.core.config import load_params


def project_root(start: Path) -> Path:
    """The project folder (the one with params.yaml and dvc.yaml): this folder or the nearest above it."""
    for folder in (start, *start.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no params.yaml and dvc.yaml in {start} or above: run the notebook inside the "
                            "project, or set FMNIST_ROOT to its folder")


# The project the pipeline ran in: its params.yaml names the profile, data/prepared/ holds its test images.
ROOT = Path(os.environ.get("FMNIST_ROOT") or project_root(Path.cwd().resolve()))
# The store, as every fmnist command finds it: $MLFLOW_TRACKING_URI, else mlflow.db at the project root.
TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}"
# The experiment: the one of the profile in params.yaml (fmnist-quick, fmnist-cpu, ...) unless named.
EXPERIMENT = os.environ.get("FMNIST_EXPERIMENT") or load_params(ROOT / "params.yaml").experiment
TEST_DATA = ROOT / "data" / "prepared" / "test.npz"  # written by the preprocess stage
TEST_IMAGES = int(os.environ.get("FMNIST_TEST_IMAGES") or 10_000)  # fewer: a stratified subset, faster
MISTAKES = 12  # the most confident mistakes shown

# %%
# ruff: noqa: E402 (a notebook: these imports follow the parameters cell)
import io
import tempfile
import warnings

# tqdm, imported by a dependency, asks for ipywidgets in a notebook; nothing here draws a progress bar.
warnings.filterwarnings("ignore", message="IProgress not found")

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display
from mlflow import MlflowClient
from PIL import Image as PILImage

from fmnist import tracking
from fmnist.core.runs import EVAL_PREFIX
from fmnist.data.prepare import load_arrays, stratified_subset
from fmnist.predict import class_names_of, predict_files, read_image
from fmnist.reporting.figures import accuracy_vs_time_figure, learning_curves_figure
from fmnist.reporting.notes import run_notes
from fmnist.reporting.render import epoch_table_blocks, leaderboard_blocks, to_markdown
from fmnist.reporting.sources import find_report_run, from_mlflow
from fmnist.reporting.tables import ReportTables, build_tables
from fmnist.tracking.trust import load_verified, source_run
from fmnist.training.scoring import pixel_logits, score_predictions
from fmnist.workflows.evaluate import evaluation_figures
from fmnist.workflows.report import columns_of, curve_notes


def show(fig) -> None:
    """fmnist's figures draw on matplotlib's Agg backend, which displays nothing by itself: show a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    display(Image(buffer.getvalue()))


def show_markdown(blocks) -> None:
    display(Markdown(to_markdown(blocks, ROOT)))


# %% [markdown]
# ## The run
#
# The experiment's latest finished report run names one training run per recipe; their params, metrics and
# histories are what every table and curve below is built from.

# %%
tracking.configure(uri=TRACKING_URI, must_exist=True)  # never creates an empty database
client = MlflowClient()
report_run = find_report_run(client, EXPERIMENT)
inputs = from_mlflow(client, report_run)
tables, notes = build_tables(inputs), run_notes(inputs)
champion_uri = report_run.data.tags.get("champion", "none")
if champion_uri == "none":
    raise RuntimeError(f"report run {report_run.info.run_id} registered no champion (its gate.reason tag says why); "
                       "rerun the pipeline where the trained weights are")
champion_run = client.get_run(source_run(client, champion_uri))
champion_arch = champion_run.data.tags["arch"]
print(f"store {TRACKING_URI}\nexperiment '{EXPERIMENT}', report run {report_run.info.run_id}: "
      f"{len(inputs.architectures)} recipes ({', '.join(inputs.architectures)})\n"
      f"champion {champion_uri}: {champion_arch}, training run {champion_run.info.run_id}")

# %% [markdown]
# ## The leaderboard, beside the published figures

# %%
show_markdown(leaderboard_blocks(tables, notes))

# %% [markdown]
# ## Learning curves
#
# From each training run's metric histories (`step` = epoch): validation accuracy against the epoch, then
# against the cumulative training time, where the cost of the last points of accuracy shows.

# %%
curves = {arch: columns_of(history) for arch, history in inputs.histories.items()}
show(learning_curves_figure(curves, **curve_notes(notes)))
show(accuracy_vs_time_figure(curves))

# %% [markdown]
# ## Epoch against time
#
# One recipe's table with its two points: where returns diminished (within the report's tolerance of the
# best validation accuracy) and where early stopping stopped, or would have. It is the champion's, unless the
# champion is a one-shot fit (a scikit-learn baseline has one row and neither point): then the best-ranked
# network's. `tables.epoch_tables` holds every recipe's.

# %%
def epoch_table_to_show(tables: ReportTables, first_choice: str):
    """`first_choice`'s table if it ran several epochs, else that of the leaderboard's best recipe that did."""
    by_arch = {table.arch: table for table in tables.epoch_tables}
    order = [first_choice, *(row["arch"] for row in tables.leaderboard)]
    return next((by_arch[a] for a in order if a in by_arch and len(by_arch[a].rows) > 1), tables.epoch_tables[0])


shown = epoch_table_to_show(tables, champion_arch)
show_markdown(epoch_table_blocks(ReportTables(tables.leaderboard, [shown]), notes=notes)[1:])  # [1:]: no heading


# %% [markdown]
# ## The champion on the test set
#
# Loaded from the registry alias, as `fmnist predict` loads it (its files' SHA-256 checked against the one its
# training run recorded before anything is unpickled), and scored on the prepared test images.

# %%
model = load_verified(champion_uri)
model.eval()
names = class_names_of(model)
test = stratified_subset(load_arrays(TEST_DATA), TEST_IMAGES, seed=0)
report = score_predictions(pixel_logits(model, test.x), test.y, names)
logged = champion_run.data.metrics.get(f"{EVAL_PREFIX}test_acc")
print(f"{champion_arch}: accuracy {report.accuracy:.4f} on {len(test)} test images of {TEST_DATA}"
      + (f" (the evaluate stage logged {logged:.4f})" if logged is not None else ""))
confusion, mistakes = evaluation_figures(champion_arch, report, test, names, MISTAKES)
show(confusion)
show(mistakes)

# %% [markdown]
# ## One image
#
# A test image made to look like a photo (dark on light, four times larger), saved as a PNG and classified
# the way `fmnist predict shoe.jpg` classifies a file: converted to Fashion-MNIST's look first.

# %%
index = 0  # the first test image
photo = PILImage.fromarray(255 - test.x[index]).resize((112, 112), PILImage.Resampling.LANCZOS)
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "photo.png"
    photo.save(path)
    converted = read_image(path)
    predictions, errors = predict_files(model, [str(path)])
if errors:
    raise RuntimeError(errors[0])
fig, (left, right) = plt.subplots(1, 2, figsize=(5, 2.8))
for ax, picture, title in ((left, np.asarray(photo), "the file"), (right, converted, "as the model sees it")):
    ax.imshow(picture, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
show(fig)
print(f"true: {names[test.y[index]]}; predicted: {predictions[0].label} ({predictions[0].probability:.3f})")
