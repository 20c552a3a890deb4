"""The condition catalogue of the embedded dataset: one entry per class, in class-index order.

Prevalences give the default dataset a realistic imbalance: common benign and inflammatory conditions, rare
malignant ones (melanoma about 3 %). `map_colour` is the fixed colour that DermGAN's colour-coded semantic map
paints lesion pixels with; the colours are far from every skin tone and from black (the map's background).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Condition:
    name: str  # identifier used in tables and file names
    label: str  # for figures
    malignant: bool
    prevalence: float  # share of the default synthetic dataset
    map_colour: tuple[int, int, int]  # RGB uint8 in DermGAN's colour-coded semantic map


CONDITIONS: tuple[Condition, ...] = (
    Condition("nevus", "Melanocytic nevus", False, 0.36, (0, 0, 255)),
    Condition("seborrheic_keratosis", "Seborrheic keratosis", False, 0.15, (255, 255, 0)),
    Condition("psoriasis", "Psoriasis", False, 0.13, (0, 255, 0)),
    Condition("eczema", "Eczema", False, 0.13, (255, 0, 255)),
    Condition("acne", "Acne", False, 0.12, (0, 255, 255)),
    Condition("basal_cell_carcinoma", "Basal cell carcinoma", True, 0.05, (128, 0, 255)),
    Condition("squamous_cell_carcinoma", "Squamous cell carcinoma", True, 0.03, (255, 128, 0)),
    Condition("melanoma", "Melanoma", True, 0.03, (255, 0, 0)),
)

CONDITION_NAMES: tuple[str, ...] = tuple(c.name for c in CONDITIONS)
MALIGNANT: tuple[bool, ...] = tuple(c.malignant for c in CONDITIONS)
N_CONDITIONS = len(CONDITIONS)


def condition_number(condition, classes: tuple[str, ...] = CONDITION_NAMES) -> int:
    """Class index of `condition`, a name in `classes` or an integer index (numpy integers too). A bool is
    refused: `True` would silently mean class 1; so is any other type (a float 1.0 is no class index)."""
    if isinstance(condition, (bool, np.bool_)):
        raise ValueError(f"a condition is a class name or an integer index, not the bool {condition!r}")
    if isinstance(condition, (int, np.integer)):
        if not 0 <= int(condition) < len(classes):
            raise ValueError(f"condition index {int(condition)} out of range 0..{len(classes) - 1}")
        return int(condition)
    if isinstance(condition, str) and condition in classes:
        return classes.index(condition)
    raise ValueError(f"unknown condition {condition!r}; use an index 0..{len(classes) - 1} or one of: "
                     f"{', '.join(classes)}")


def condition_index(name_or_index: str | int) -> int:
    """Class index of a condition of the catalogue given by name or index (see `condition_number`)."""
    return condition_number(name_or_index, CONDITION_NAMES)
