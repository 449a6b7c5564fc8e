"""The report's content as a list of blocks, rendered to Markdown or to one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path

from fmnist.reporting.notes import RunNote, diverged_text, epoch_bullets, epoch_rows
from fmnist.reporting.tables import (
    LEADERBOARD_COLUMNS,
    LEADERBOARD_HEADERS,
    LEADERBOARD_NOTE,
    ReportTables,
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
    """The leaderboard with a notes column (SWA range, one fit, divergence); an SWA row's best epoch
    names the averaged epochs, since no single epoch was scored."""
    if not notes:
        return table
    rows = []
    for row in table.rows:
        note = notes.get(row["arch"])
        swa = note is not None and note.swa_epochs
        rows.append({**row, "notes": note.flag() if note else "",
                     **({"best_epoch": f"SWA {swa[0]}-{swa[1]}"} if swa else {})})
    return Table(rows, [*table.columns, "notes"], [*table.headers, "notes"])


def leaderboard_blocks(tables: ReportTables, notes: dict[str, RunNote] | None = None) -> list[Block]:
    return [
        Heading("Leaderboard"),
        Text("Sorted by test accuracy of the model each run kept: the best-validation checkpoint, or the "
             "weight average when the recipe uses SWA. Training time covers training and validation, not the "
             "per-epoch test evaluation. scikit-learn baselines (kind `sklearn`) are fitted once, so they have "
             "one epoch; their parameter count is what the fitted estimator stores to predict: coefficients, "
             "support vectors and dual coefficients (SVC), tree nodes (random forest), or the stored training "
             "pixels (k-NN)."),
        _noted(Table(_seconds(tables.leaderboard, "train_seconds"), LEADERBOARD_COLUMNS, LEADERBOARD_HEADERS),
               notes),
        *([Text(diverged_text(notes))] if notes and diverged_text(notes) else []),
        Text(LEADERBOARD_NOTE),
    ]


def epoch_table_blocks(tables: ReportTables, images: dict[str, list[Image]] | None = None,
                       notes: dict[str, RunNote] | None = None) -> list[Block]:
    """Each architecture's epoch-vs-time table with its marked points, then its own images; `notes` say
    which model was scored (best epoch, SWA average, one fit) and flag divergence."""
    blocks: list[Block] = [Heading("Epoch against time")]
    for table in tables.epoch_tables:
        note = (notes or {}).get(table.arch)
        blocks += [
            Heading(table.arch, 3),
            Bullets(epoch_bullets(table, note)),
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

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
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
