from pathlib import Path

from fmnist.reporting.render import Bullets, Heading, Image, Table, Text, to_html, to_markdown

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c"
                    "63000100000500010d0a2db40000000049454e44ae426082")


def blocks(tmp_path: Path):
    image = tmp_path / "figures" / "a.png"
    image.parent.mkdir()
    image.write_bytes(PNG)
    return [Heading("Results"), Text("see `code` and **bold** <script>"), Bullets(["one"]),
            Table([{"a": 0.5, "b": "x<y"}], ["a", "b"], ["A", "B"]), Image("a plot", image)]


def test_markdown_links_images_relative_to_the_file(tmp_path):
    text = to_markdown(blocks(tmp_path), tmp_path)
    assert "## Results" in text and "| 0.5000 | x<y |" in text and "![a plot](figures/a.png)" in text


def test_html_is_self_contained_and_escaped(tmp_path):
    page = to_html(blocks(tmp_path), "Title & more")
    assert "<title>Title &amp; more</title>" in page
    assert "data:image/png;base64," in page and "figures/a.png" not in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page
    assert "<td>x&lt;y</td>" in page


def report_inputs():
    """Three real-run shapes: an SWA recipe, a run whose validation loss exploded, a k-NN fit."""
    from fmnist.core.runs import EpochRecord, RunSummary, StopRule, leaderboard_entry, summarise, with_average
    from fmnist.reporting.tables import ReportInputs

    def hist(val_loss, val_acc):
        return [EpochRecord(epoch=i, train_acc=a, val_acc=a, test_acc=a, epoch_seconds=10.0,
                            cumulative_seconds=10.0 * i, train_loss=0.5, val_loss=v)
                for i, (v, a) in enumerate(zip(val_loss, val_acc), start=1)]

    histories = {"resnet18": hist([1.9, 1.8, 1.7, 1.75, 1.72], [0.20, 0.26, 0.2725, 0.25, 0.26]),
                 "resnet50": hist([0.9, 0.4, 4.6e10], [0.7, 0.85, 0.1]),
                 "sk_knn": [EpochRecord(epoch=1, train_acc=1.0, val_acc=0.85, test_acc=0.84, epoch_seconds=3.2,
                                        cumulative_seconds=3.2, train_loss=1.9e-7, val_loss=0.9)]}
    summaries = {
        "resnet18": with_average(summarise("resnet18", "torch", 10, histories["resnet18"], best_epoch=3),
                                 {"swa_val_acc": 0.3613, "swa_val_loss": 1.6, "swa_start_epoch": 3.0,
                                  "swa_bn_seconds": 2.0}),
        "resnet50": summarise("resnet50", "torch", 20, histories["resnet50"], best_epoch=2),
        "sk_knn": RunSummary("sk_knn", "sklearn", 100, 1, 1, 0.85, 0.9, 3.2, 3.2, selected="fit", converged=True,
                             extra={"fit_seconds": 3.1}),
    }
    inputs = ReportInputs(list(histories), 0.005, histories=histories, summaries=summaries,
                          rules={a: StopRule("val_acc", 3, 0.0) for a in histories})
    inputs.entries = [leaderboard_entry(s, 0.5, 100, f"run-{a}") for a, s in summaries.items()]
    return inputs


def section(text: str, arch: str) -> str:
    return text.split(f"### {arch}\n")[1].split("### ")[0]


def test_report_says_which_model_each_row_scored_and_flags_divergence(tmp_path):
    from fmnist.reporting.notes import run_notes
    from fmnist.reporting.render import epoch_table_blocks, leaderboard_blocks
    from fmnist.reporting.tables import build_tables

    inputs = report_inputs()
    tables, notes = build_tables(inputs), run_notes(inputs)
    blocks = [*leaderboard_blocks(tables, notes), *epoch_table_blocks(tables, notes=notes)]
    text = to_markdown(blocks, tmp_path)
    board = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # SWA: the leaderboard's val acc is the average's, and the epoch section says the same
    assert "| SWA 3-5 | 0.3613 |" in board["resnet18"] and board["resnet18"].endswith("| SWA average of epochs 3-5 |")
    swa = section(text, "resnet18")
    assert "**model evaluated**: the SWA average of the weights of epochs 3-5, val acc 0.3613" in swa
    assert "the checkpoint evaluated" not in swa and "| SWA 3-5 |  | 0.3613 |" in swa
    # divergence: in the row, under the leaderboard with its rule, and in the run's section
    assert board["resnet50"].endswith("| DIVERGED: val loss 4.6e+10 at epoch 3 |")
    assert "**Diverged runs**: `resnet50` (val loss 4.6e+10 at epoch 3). Rule:" in text
    assert "**diverged**: validation loss reached 4.6e+10 at epoch 3 (its lowest was 0.4" in section(text, "resnet50")
    # a one-shot fit: one sentence with its fit time, no early stopping or diminishing returns
    knn = section(text, "sk_knn")
    assert "**single fit**" in knn and "3.1 s" in knn
    assert "early stopping" not in knn.replace("early stopping and diminishing returns do not apply", "")
    page = to_html(blocks, "t")
    assert "<td>DIVERGED: val loss 4.6e+10 at epoch 3</td>" in page and "<th>notes</th>" in page


def test_tables_without_notes_render_as_before(tmp_path):
    from fmnist.reporting.render import epoch_table_blocks, leaderboard_blocks
    from fmnist.reporting.tables import build_tables

    tables = build_tables(report_inputs())
    text = to_markdown([*leaderboard_blocks(tables), *epoch_table_blocks(tables)], tmp_path)
    assert "notes" not in text and "**best epoch** (best val_acc, the checkpoint evaluated)" in text
