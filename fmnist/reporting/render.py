"""The report's content as a list of blocks, rendered to Markdown or to one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path

from fmnist.reporting.notes import RunNote, diverged_text, epoch_bullets, epoch_rows
from fmnist.reporting.references import reference_for, source_label, source_notes
from fmnist.reporting.tables import (
    BOARD_COLUMNS,
    BOARD_HEADERS,
    LEADERBOARD_NOTE,
    ReportTables,
    board_cells,
    cell,
    markdown_table,
)

EPOCH_COLUMNS = ["epoch", "train_acc", "val_acc", "test_acc", "cumulative_seconds", "marks"]
EPOCH_HEADERS = ["epoch", "train acc", "val acc", "test acc", "cumulative time (s)", "marks"]


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str  # may hold `code` spans and **bold**; nothing else is interpreted


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    rows: list[dict]
    columns: list[str]
    headers: list[str]


@dataclass(frozen=True)
class Image:
    caption: str
    path: Path


Block = Heading | Text | Bullets | Table | Image


def _seconds(rows: list[dict], key: str) -> list[dict]:
    return [{**r, key: f"{r[key]:.1f}" if r.get(key) is not None else None} for r in rows]


def _noted(table: Table, notes: dict[str, RunNote] | None) -> Table:
    """The leaderboard with what its numbers need said: an SWA row's best epoch names the averaged
    epochs (no single epoch was scored), and a notes column, only when a run diverged, flags it (the
    sentence under the table says how; a one-shot fit already says `single fit`)."""
    if not notes:
        return table
    rows = []
    for row in table.rows:
        note = notes.get(row["arch"])
        swa = note is not None and note.swa_epochs
        rows.append({**row, "notes": "DIVERGED" if note and note.diverged else "",  # the sentence under says more
                     **({"best_epoch": f"SWA {swa[0]}-{swa[1]}"} if swa else {})})
    if not any(row["notes"] for row in rows):
        return Table(rows, table.columns, table.headers)
    return Table(rows, [*table.columns, "notes"], [*table.headers, "notes"])


def leader_text(rows: list[dict]) -> str | None:
    """One sentence over the leaderboard: who leads, by how much, against which published figure."""
    scored = [r for r in rows if r.get("test_acc") is not None]
    if not scored:
        return None
    top = scored[0]
    said = f"**{top['arch']} leads** with test accuracy {top['test_acc']:.4f}"
    if len(scored) > 1:
        gap = (top["test_acc"] - scored[1]["test_acc"]) * 100
        said += f", {gap:.2f} points ahead of {scored[1]['arch']} ({scored[1]['test_acc']:.4f})"
        stds = [r.get("test_acc_std") for r in scored[:2] if (r.get("n_seeds") or 0) > 1 and r.get("test_acc_std")]
        if stds and gap < max(stds) * 100:
            said += ", less than the spread over seeds"
    ref = reference_for(top["arch"])
    if ref is None:
        return said + "; it has no published figure (our own recipe)."
    label, difference = source_label(ref.source), top.get("difference") or ""
    if difference.startswith("n/a"):
        return said + f"; the published {ref.published} {label} counts {ref.classes} classes (not compared)."
    several = (top.get("n_seeds") or 0) > 1 and top.get("test_acc_mean") is not None
    spread = f" ± {top['test_acc_std']:.4f}" if several and top.get("test_acc_std") is not None else ""
    ours = f"its mean over {top['n_seeds']} seeds, {top['test_acc_mean']:.4f}{spread}, is" if several else "that is"
    return said + f"; {ours} {difference} points against the published {ref.published} {label}."


def leaderboard_blocks(tables: ReportTables, notes: dict[str, RunNote] | None = None,
                       figure: Image | None = None) -> list[Block]:
    """The leaderboard: who leads in one sentence, the picture (`figure`, leaderboard_figure), a table one
    line a row with short source labels, then the sources cited in full and what the columns mean."""
    rows = tables.leaderboard
    leader = leader_text(rows)
    cited = source_notes([r["arch"] for r in rows])
    return [
        Heading("Leaderboard"),
        *([Text(leader)] if leader else []),
        *([figure] if figure else []),
        _noted(Table(_seconds([board_cells(r) for r in rows], "train_seconds"), BOARD_COLUMNS, BOARD_HEADERS),
               notes),
        *([Text("**Sources of the published figures**, and the setting each was measured in:"), Bullets(cited)]
          if cited else []),
        *([Text(diverged_text(notes))] if notes and diverged_text(notes) else []),
        Text("Sorted by test accuracy of the model each run kept: the best-validation checkpoint, or the "
             "weight average when the recipe uses SWA. Training time covers training and validation, not the "
             "per-epoch test evaluation. A best epoch `SWA N-M`: the average of the weights of epochs N to M was "
             "scored. scikit-learn baselines (`single fit`) are fitted once, so they have "
             "one epoch; their parameter count is what the fitted estimator stores to predict: coefficients, "
             "support vectors and dual coefficients (SVC), tree nodes (random forest), or the stored training "
             "pixels (k-NN)."),
        Text(LEADERBOARD_NOTE),
    ]


def epoch_table_blocks(tables: ReportTables, images: dict[str, list[Image]] | None = None,
                       notes: dict[str, RunNote] | None = None) -> list[Block]:
    """Each architecture's epoch-vs-time table with its marked points, then its own images; `notes` say
    which model was scored (best epoch, SWA average, one fit) and flag divergence."""
    blocks: list[Block] = [Heading("Epoch against time")]
    run_ids = {row["arch"]: row.get("run_id") for row in tables.leaderboard}
    for table in tables.epoch_tables:
        note = (notes or {}).get(table.arch)
        run = [f"**MLflow run**: `{run_ids[table.arch]}`"] if run_ids.get(table.arch) else []
        blocks += [
            Heading(table.arch, 3),
            Bullets([*run, *epoch_bullets(table, note)]),
            Table(_seconds(epoch_rows(table, note), "cumulative_seconds"), EPOCH_COLUMNS, EPOCH_HEADERS),
            *(images or {}).get(table.arch, []),
        ]
    return blocks


# ---------------------------------------------------------------------------- Markdown


def to_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown; image paths relative to `base`, the directory the file is written to."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Text):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            out.append(_markdown_table(block))
        elif isinstance(block, Image):
            out.append(f"![{block.caption}]({Path(os.path.relpath(block.path, base)).as_posix()})")
        out.append("")
    return "\n".join(out)


def _markdown_table(table: Table) -> str:
    return markdown_table(table.rows, table.columns, table.headers)


# ---------------------------------------------------------------------------- HTML

# Laid out for a 1400-pixel-wide window: the leaderboard's rows one line each, no horizontal scroll;
# prose keeps a readable measure inside the wider page.
_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1360px; margin: 1em auto; padding: 0 0.75em; color: #222; }
p, ul, h1, h2, h3 { max-width: 75em; }
h1 { margin: 0.3em 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.8em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.4em; text-align: right; }
td { white-space: nowrap; }
td:last-child { white-space: normal; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; }
img { max-width: 100%; }
figcaption { color: #555; font-size: 0.85em; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold** spans."""
    escaped = html.escape(text)
    parts = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(row.get(c)))}</td>" for c in table.columns) + "</tr>"
                   for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_image(image: Image) -> str:
    data = base64.b64encode(Path(image.path).read_bytes()).decode("ascii")
    caption = html.escape(image.caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained page: images embedded as data URIs, no external resources."""
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        elif isinstance(block, Image):
            body.append(_html_image(block))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
