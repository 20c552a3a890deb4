"""One figure style, image grids, and save_figure (PDF + PNG + a provenance sidecar)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

SYNTHETIC_NOTE = "synthetic dataset (procedural renderer), not real patients"


def use_style() -> None:
    """The figure style of every notebook: small, readable, no chart junk."""
    import seaborn as sns

    sns.set_theme(context="paper", style="white", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "axes.spines.top": False,
                         "axes.spines.right": False})


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
                ax.set_title(col_labels[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def data_note(dataset: str) -> str:
    """What a figure's images are: the synthetic renderer, or a named real dataset."""
    return SYNTHETIC_NOTE if dataset == "synthetic" else f"real dataset: {dataset}"


def save_figure(fig, directory: str | Path, name: str, provenance: dict) -> Path:
    """Write `name`.pdf and `name`.png, and `name`.json with what produced the figure; return the PNG path.

    `provenance` must name the `dataset` the figure shows, so that every saved figure says whether it is synthetic.
    """
    if "dataset" not in provenance:
        raise ValueError(f"save_figure({name!r}): provenance must name the 'dataset' the figure shows")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fig.savefig(directory / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
    fig.savefig(directory / f"{name}.png", bbox_inches="tight")
    record = {"figure": name, "data": data_note(provenance["dataset"]), **provenance}
    (directory / f"{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return directory / f"{name}.png"
