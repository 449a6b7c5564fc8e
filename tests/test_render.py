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
    # SWA: the leaderboard's best epoch names the averaged epochs and its val acc is the average's; the epoch
    # section says the same
    assert "| SWA 3-5 | 0.3613 |" in board["resnet18"] and board["resnet18"].endswith("| run-resn |  |")
    swa = section(text, "resnet18")
    assert "**model evaluated**: the SWA average of the weights of epochs 3-5, val acc 0.3613" in swa
    assert "the checkpoint evaluated" not in swa and "| SWA 3-5 |  | 0.3613 |" in swa
    # divergence: flagged in the row, said under the leaderboard with its rule, and in the run's section
    assert board["resnet50"].endswith("| DIVERGED |")
    assert "**Diverged runs**: `resnet50` (val loss 4.6e+10 at epoch 3). Rule:" in text
    assert "**diverged**: validation loss reached 4.6e+10 at epoch 3 (its lowest was 0.4" in section(text, "resnet50")
    # a one-shot fit: one sentence with its fit time, no early stopping or diminishing returns
    knn = section(text, "sk_knn")
    assert "**single fit**" in knn and "3.1 s" in knn
    assert "early stopping" not in knn.replace("early stopping and diminishing returns do not apply", "")
    page = to_html(blocks, "t")
    assert "<td>DIVERGED</td>" in page and "<th>notes</th>" in page


def test_tables_without_notes_render_as_before(tmp_path):
    from fmnist.reporting.render import epoch_table_blocks, leaderboard_blocks
    from fmnist.reporting.tables import build_tables

    tables = build_tables(report_inputs())
    text = to_markdown([*leaderboard_blocks(tables), *epoch_table_blocks(tables)], tmp_path)
    assert "notes" not in text and "**best epoch** (best val_acc, the checkpoint evaluated)" in text


def board(*entries):
    from fmnist.reporting.tables import ReportTables, leaderboard

    return ReportTables(leaderboard([{"n_classes": 10, "run_id": f"{e['arch']:0<32}"[:32], **e} for e in entries]), [])


def test_leaderboard_cells_are_short_and_the_sources_are_cited_under_it(tmp_path):
    from fmnist.reporting.render import leaderboard_blocks

    tables = board({"arch": "qstp_cnn5", "test_acc": 0.9393, "num_params": 4080094},
                   {"arch": "cnn4", "test_acc": 0.9373, "num_params": 3382442, "converged": "converged at 8/10"},
                   {"arch": "sk_svc", "kind": "sklearn", "test_acc": 0.8986, "num_params": 1351317},
                   {"arch": "fastcnn", "test_acc": 0.9064, "num_params": 98672})
    text = to_markdown(leaderboard_blocks(tables), tmp_path)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 4.08 M |" in rows["qstp_cnn5"] and "| 94.61% [1] | -0.68 | qstp_cnn |" in rows["qstp_cnn5"]
    assert "| converged at 8/10 |" in rows["cnn4"] and "| 90.28% [3] | n/a (5 classes) |" in rows["cnn4"]
    assert "| 0.897 Zalando | +0.16 |" in rows["sk_svc"] and "| 98.7 k |" in rows["fastcnn"]
    assert not any(".txt" in row or "classes;" in row for row in rows.values())  # the long forms live below
    notes = text.split("**Sources of the published figures**")[1]
    assert "**[1]** `000_d44ee8688edfdeab.txt`" in notes and "**[3]** `002_85124d4a55dcd85f.txt`" in notes
    assert "`cnn4` 90.28% (Model 4 (4 conv)): 5 classes; 30 epochs" in notes and "**Zalando** " in notes
    assert "[2]" not in notes  # only the sources the rows cite
    assert text.index("**qstp_cnn5 leads**") < text.index("| architecture |")


def test_the_leader_sentence_says_by_how_much_and_against_which_published_figure():
    from fmnist.reporting.render import leader_text

    seeds = {"n_seeds": 3, "test_acc_mean": 0.9400, "test_acc_std": 0.0020}
    assert leader_text(board({"arch": "basic_cnn", "test_acc": 0.95, **seeds}, {"arch": "mlp", "test_acc": 0.949}
                             ).leaderboard) == (
        "**basic_cnn leads** with test accuracy 0.9500, 0.10 points ahead of mlp (0.9490), less than the spread "
        "over seeds; its mean over 3 seeds, 0.9400 ± 0.0020, is -0.21 points against the published 94.21% [5].")
    assert leader_text(board({"arch": "cnn4", "test_acc": 0.95}).leaderboard).endswith(
        "; the published 90.28% [3] counts 5 classes (not compared).")
    assert leader_text(board({"arch": "fastcnn", "test_acc": 0.95}).leaderboard).endswith("(our own recipe).")
    assert leader_text(board({"arch": "mlp"}).leaderboard) is None  # nothing scored: nothing to say


def test_each_architecture_section_names_its_full_run_id(tmp_path):
    from fmnist.reporting.notes import run_notes
    from fmnist.reporting.render import epoch_table_blocks
    from fmnist.reporting.tables import build_tables

    inputs = report_inputs()
    text = to_markdown(epoch_table_blocks(build_tables(inputs), notes=run_notes(inputs)), tmp_path)
    assert "- **MLflow run**: `run-sk_knn`" in section(text, "sk_knn")


# The widest cells a real leaderboard holds (the cpu profile of docs/results.md: seeds' spreads, a
# diminishing-returns point, 5-class references, the longest names) and a diverged run.
WIDEST = [("qstp_cnn5", "converged at 7/8", 1), ("cnn4", "converged at 8/10", 1), ("fast92", "cut by the budget", 3),
          ("cnn1", "converged at 9/15", 3), ("cnn3", "converged at 12/15", 3), ("fastcnn", "cut by the budget", 3),
          ("sk_svc", "single fit", 1), ("mlp", "converged", 3), ("sk_mlp", "single fit", 1),
          ("sk_random_forest", "single fit", 3), ("sk_knn", "single fit", 1), ("sk_logreg", "single fit", 1),
          ("resnet18", "cut by the budget", 1), ("mini_vgg", "cut by the budget", 1),
          ("basic_cnn", "cut by the budget", 1), ("mobilenet_v2", "cut by the budget", 1),
          ("wrn16_4", "cut by the budget", 1), ("resnet34", "cut by the budget", 1),
          ("shufflenet_v2", "cut by the budget", 1), ("resnet50_transfer", "cut by the budget", 1),
          ("shakeshake_resnet34", "cut by the budget", 1), ("resnet50", "cut by the budget", 1)]


def test_the_leaderboard_fits_a_1400_pixel_window_one_line_a_row(tmp_path):
    """In a real browser: no horizontal scroll at 1400 px wide, and every leaderboard row one line tall."""
    import html
    import json
    import re

    from fmnist.reporting.notes import Divergence, RunNote
    from fmnist.reporting.render import leaderboard_blocks

    from e2e_support import browser

    tables = board(*({"arch": arch, "converged": cut, "test_acc": 0.9 - i / 100, "num_params": 24035658,
                      "epochs_run": 15, "best_epoch": 15, "best_val_acc": 0.9487, "n_test": 10000,
                      "train_seconds": 1701.2, "n_seeds": n, "test_acc_mean": 0.9286,
                      "test_acc_std": 0.0021 if n > 1 else None} for i, (arch, cut, n) in enumerate(WIDEST)))
    notes = {"resnet50": RunNote("resnet50", "best_epoch", 0.1, diverged=Divergence(2, 5.5e9, 2, 0.5, 1)),
             "resnet18": RunNote("resnet18", "swa", 0.78, swa_epochs=(11, 15))}
    probe = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-check', "
             "JSON.stringify({width: document.documentElement.scrollWidth, rows: [...document.querySelector("
             "'table').querySelectorAll('tbody tr')].map(r => r.getBoundingClientRect().height)})));</script>")
    page = tmp_path / "board.html"
    page.write_text(to_html(leaderboard_blocks(tables, notes), "t").replace("</body>", probe + "</body>"))
    dom = browser("--window-size=1400,900", "--virtual-time-budget=3000", "--dump-dom", page.as_uri(),
                  profile=tmp_path / "chrome")
    check = json.loads(html.unescape(re.search(r'data-check="([^"]*)"', dom).group(1)))
    assert check["width"] <= 1400, check
    assert len(check["rows"]) == len(WIDEST) and max(check["rows"]) < 1.5 * min(check["rows"]), check
