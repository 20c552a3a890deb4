"""One figure style, image grids, and the writers of every figure and table (with a provenance sidecar).

Figures: vector PDF + 300 dpi PNG + `name.json` (what made it: notebook, profile, dataset, git commit).
Tables: CSV + LaTeX (booktabs) + Markdown + the same JSON. Both are written atomically and byte-identically
when the same run is regenerated (no dates inside the files), so a cited figure can be traced and remade.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

SYNTHETIC_NOTE = "synthetic dataset (procedural renderer), not real patients"

# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency, and in greyscale by order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
COLUMN_WIDTH, PAGE_WIDTH = 3.35, 7.0  # inches: one column and the full width of a two-column paper
DPI = 300


def use_style() -> None:
    """The figure style of every notebook: sized for a two-column paper, colour-blind-safe, no chart junk."""
    import seaborn as sns

    sns.set_theme(context="paper", style="white", font_scale=1.0, palette=list(PALETTE))
    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": DPI, "axes.spines.top": False, "axes.spines.right": False,
        "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
        "legend.fontsize": 7, "figure.titlesize": 9,
        "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (editable, searchable)
        "svg.hashsalt": "dermgan",  # fixed ids: regenerated SVGs are identical too
    })


def image_grid(rows: list[np.ndarray] | np.ndarray, row_labels=None, col_labels=None, cell_size: float = 1.3,
               title: str | None = None):
    """A figure of uint8 images arranged in rows: `rows[i]` is an (n, H, W, C) or (n, H, W) array."""
    rows = [np.asarray(r) for r in rows]
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_size * n_cols, cell_size * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(row):
                image = row[j]
                ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0,
                          vmax=1 if image.ndim == 2 and image.max() <= 1 else 255, interpolation="nearest")
            if row_labels is not None and j == 0:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=8)
            if col_labels is not None and i == 0 and j < len(col_labels):
                # wrapped to the cell's width, so long class names ("squamous cell carcinoma") don't overlap
                ax.set_title(textwrap.fill(str(col_labels[j]), width=max(8, round(11 * cell_size))), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def data_note(dataset: str) -> str:
    """What a figure's images are: the synthetic renderer, or a named real dataset."""
    return SYNTHETIC_NOTE if dataset == "synthetic" else f"real dataset: {dataset}"


def provenance_record(kind: str, name: str, provenance: dict) -> dict:
    """The sidecar of a figure or table: what it shows and what made it, including the git commit that drew it
    (`git_commit`). Where `provenance` has `commits` (dermgan.provenance.figure_commits: the commits that
    evaluated and trained what it shows), the sidecar's `commits` lists them with that one ("drawn")."""
    from dermgan.runtime import git_commit

    if "dataset" not in provenance:
        raise ValueError(f"{kind} {name!r}: provenance must name the 'dataset' it shows")
    commit = git_commit()
    record = {kind: name, "data": data_note(provenance["dataset"]), **provenance,
              "git_commit": commit, "clean_commit": bool(commit) and not commit.endswith("+dirty")}
    if "commits" in provenance:
        record["commits"] = {"drawn": commit, **provenance["commits"]}
    return record


def _write_atomically(path: Path, write) -> None:
    """write(temporary path) then rename: a reader never sees half a file. The suffix is kept for savefig."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_figure(fig, directory: str | Path, name: str, provenance: dict) -> Path:
    """Write `name`.pdf (vector), `name`.png (300 dpi) and `name`.json (provenance); return the PNG path.

    `provenance` must name the `dataset` the figure shows, so that every saved figure says whether it is
    synthetic. Dates are kept out of the files, so the same figure is byte-identical when regenerated.
    """
    record = provenance_record("figure", name, provenance)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / f"{name}.pdf", lambda p: fig.savefig(
        p, bbox_inches="tight", metadata={"CreationDate": None, "ModDate": None}))
    _write_atomically(directory / f"{name}.png", lambda p: fig.savefig(p, bbox_inches="tight", dpi=DPI))
    _write_atomically(directory / f"{name}.json",
                      lambda p: p.write_text(json.dumps(record, indent=2, default=str) + "\n"))
    return directory / f"{name}.png"


def markdown_table(table) -> str:
    """A pandas DataFrame as a GitHub-flavoured Markdown table (index included when named)."""
    frame = table.reset_index() if table.index.name else table
    cells = [[str(c) for c in frame.columns]] + [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "---|" * len(frame.columns))
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.3g}"
    return str(value).replace("|", "\\|")


def save_table(table, directory: str | Path, name: str, provenance: dict, caption: str = "") -> Path:
    """Write `name`.csv, `name`.tex (booktabs), `name`.md and `name`.json (provenance); return the CSV path.

    Cells are written as given: put each number with its interval and n into the table itself (e.g. a column
    "KID [95% CI]" holding "0.136 [0.131, 0.142]" and a column "n"), so every format carries them.
    """
    record = {**provenance_record("table", name, provenance), "caption": caption,
              "columns": [str(c) for c in table.columns]}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    latex_caption = "".join("\\" + ch if ch in "&%$#_{}" else ch for ch in caption)
    latex = table.to_latex(index=bool(table.index.name), escape=True, caption=latex_caption or None,
                           label=f"tab:{name}", float_format=lambda v: f"{v:.3g}")  # booktabs rules by default
    _write_atomically(directory / f"{name}.csv", lambda p: table.to_csv(p, index=bool(table.index.name)))
    _write_atomically(directory / f"{name}.tex", lambda p: p.write_text(latex))
    _write_atomically(directory / f"{name}.md", lambda p: p.write_text(
        (f"{caption}\n\n" if caption else "") + markdown_table(table)))
    _write_atomically(directory / f"{name}.json",
                      lambda p: p.write_text(json.dumps(record, indent=2, default=str) + "\n"))
    return directory / f"{name}.csv"


FIGURE_FILES, TABLE_FILES = (".pdf", ".png", ".json"), (".csv", ".tex", ".md", ".json")
PROVENANCE_KEYS = ("notebook", "profile", "dataset", "data", "git_commit", "clean_commit", "commits")


def check_outputs(directory: str | Path, figures=(), tables=(), clean: bool = False) -> list[str]:
    """What is wrong with the expected figures and tables in `directory`, one line each (empty when nothing):
    a missing or empty file, or a sidecar that does not name its notebook, profile, dataset, commit and the
    commits its numbers come from (with `clean`, a clean commit)."""
    directory, problems = Path(directory), []
    for stems, suffixes in ((figures, FIGURE_FILES), (tables, TABLE_FILES)):
        for stem in stems:
            for suffix in suffixes:
                path = directory / f"{stem}{suffix}"
                if not path.is_file() or path.stat().st_size == 0:
                    problems.append(f"{path.name}: {'empty' if path.is_file() else 'missing'}")
            sidecar = directory / f"{stem}.json"
            if sidecar.is_file() and sidecar.stat().st_size:
                try:
                    record = json.loads(sidecar.read_text())
                except ValueError:
                    problems.append(f"{sidecar.name}: not JSON")
                    continue
                absent = [k for k in PROVENANCE_KEYS if record.get(k) in (None, "")]
                if absent:
                    problems.append(f"{sidecar.name}: no {', '.join(absent)}")
                elif clean and not record["clean_commit"]:
                    problems.append(f"{sidecar.name}: made at {record['git_commit']}, not a clean commit")
    return problems
