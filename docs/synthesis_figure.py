"""The README's figure of `dermgan.synthesis.one_image`: python docs/synthesis_figure.py CHECKPOINT [OUT.png]

One row per condition, one image per Fitzpatrick type (the same lesion request: size 0.12 of the image,
centred, seed 0), and the lesion mask the call returns. Made from whichever trained DermGAN checkpoint is
given; the README says which one the committed figure comes from.
"""

import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")

from dermgan import viz  # noqa: E402
from dermgan.synthesis import load, one_image  # noqa: E402

CONDITIONS = ("nevus", "psoriasis", "eczema", "basal_cell_carcinoma", "melanoma")
TYPES = (1, 2, 3, 4, 5, 6)


def main(checkpoint: str, out: str = "docs/synthesis_one_image.png") -> None:
    model = load(checkpoint, "cpu")
    rows = []
    for condition in CONDITIONS:
        made = [one_image(model, condition, size=0.12, x=0.5, y=0.5, skin=t, seed=0) for t in TYPES]
        mask = np.repeat(made[0][1][..., None], 3, axis=2).astype(np.uint8) * 255  # the same for every type
        rows.append(np.stack([image for image, _ in made] + [mask]))
    step = model.record.get("step")
    fig = viz.image_grid(rows, row_labels=[c.replace("_", " ") for c in CONDITIONS],
                         col_labels=[f"type {t}" for t in TYPES] + ["mask"], cell_size=1.0,
                         title=f"one_image(..., condition, size=0.12, skin=type): {model.image_size} px, "
                               f"step {step} (synthetic data)")
    fig.savefig(out, dpi=150)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
