"""The condition catalogue of the embedded dataset: one entry per class, in class-index order.

Prevalences give the default dataset a realistic imbalance: common benign and inflammatory conditions, rare
malignant ones (melanoma about 3 %). `map_colour` is the fixed colour that DermGAN's colour-coded semantic map
paints lesion pixels with; the colours are far from every skin tone and from black (the map's background).
"""

from __future__ import annotations

from dataclasses import dataclass


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


def condition_index(name_or_index: str | int) -> int:
    """Class index of a condition given by name or index; unknown ones are an error listing the known."""
    if isinstance(name_or_index, int):
        if not 0 <= name_or_index < N_CONDITIONS:
            raise ValueError(f"condition index {name_or_index} out of range 0..{N_CONDITIONS - 1}")
        return name_or_index
    try:
        return CONDITION_NAMES.index(name_or_index)
    except ValueError:
        raise ValueError(f"unknown condition {name_or_index!r}; known: {', '.join(CONDITION_NAMES)}") from None
