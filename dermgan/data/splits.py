"""How a dataset's images are divided into train / val / test, and how a smaller set is drawn from it.

Pure functions of labels, group ids, fractions and a seed: the same records give the same split on every
machine. The synthetic dataset splits image by image (`stratified_split`); real datasets never cut a group
(a patient, else a lesion, else the image: `split_groups`) and are stratified by class as well
(`stratified_grouped_split`, `assign_splits`), and a run that asks for fewer images gets a subsample that
keeps every split's class mix (`subsample`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermgan.config import DataConfig

SPLITS = ("train", "val", "test")
# The data section's defaults (every profile uses them): what "no fraction asked for" means for real data.
DEFAULT_FRACTIONS = {"val": DataConfig().val_fraction, "test": DataConfig().test_fraction}
# Fixed so that a derived split is the same on every machine and in every notebook, whatever the run seed.
SPLIT_SEED = 20_17_2018
MIN_CLASS_IMAGES = 3  # one image each in train, val and test


def check_settings(n_images=None, val_fraction=None, test_fraction=None) -> None:
    """Refuse an impossible data setting in one line (None = not set)."""
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer))
                                 or n_images < 1):
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0.0 <= value < 1.0):
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    held_out = (val_fraction or 0) + (test_fraction or 0)
    if held_out >= 1.0:
        raise ValueError(f"val_fraction + test_fraction = {held_out} leaves no training images; it must be "
                         "below 1")


# --------------------------------------------------------------------------------------- image by image

def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """"train"/"val"/"test" per row: in every class, round(fraction * class size) rows go to val and test.

    Depends only on (labels, fractions, seed). Every class with at least 3 images has all three splits.
    """
    labels = np.asarray(labels)
    split = np.full(len(labels), "train", dtype=object)
    rng = np.random.default_rng([seed, 7])
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n = len(rows)
        n_val, n_test = int(round(val_fraction * n)), int(round(test_fraction * n))
        if n >= MIN_CLASS_IMAGES:  # the rare classes are the interesting ones: no split goes without them
            n_val = max(n_val, 1) if val_fraction > 0 else 0
            n_test = max(n_test, 1) if test_fraction > 0 else 0
        n_val, n_test = min(n_val, n), min(n_test, n - min(n_val, n))
        split[rows[:n_val]] = "val"
        split[rows[n_val:n_val + n_test]] = "test"
    return split


# ------------------------------------------------------------------------------------------- by group

def split_groups(table: pd.DataFrame) -> np.ndarray:
    """The unit no split may cut: the patient when known, else the lesion, else the image."""
    rows = zip(table["patient_id"], table["lesion_id"], table["image_id"])
    return np.asarray([f"P:{p}" if not pd.isna(p) else f"L:{le}" if not pd.isna(le) else f"I:{i}"
                       for p, le, i in rows], dtype=object)


def grouped_split(groups: np.ndarray, names: tuple[str, ...], weights: tuple[float, ...],
                  seed=SPLIT_SEED, preference: np.ndarray | None = None) -> np.ndarray:
    """Assign whole groups to splits so that image counts approach `weights`.

    Groups are sorted before shuffling, so the result depends only on the set of groups, not on row order.
    Every split with a positive weight first gets one of the smallest groups while groups remain (so three
    single images reach three splits; with fewer groups than splits, the larger weights first); each further
    group goes to the split furthest below its target. Ties go to the split with the larger `preference`
    left after this call's groups (how far each split is behind elsewhere, e.g. over the other classes).
    """
    groups = np.asarray(groups, dtype=object)
    weights = np.asarray(weights, dtype=float)
    preference = np.zeros(len(names)) if preference is None else np.asarray(preference, dtype=float)
    unique, inverse, counts = np.unique(groups.astype(str), return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    targets = weights / weights.sum() * len(groups)
    open_ = weights > 0
    chosen = np.full(len(unique), -1, dtype=np.int64)
    wanted = sorted(np.flatnonzero(open_), key=lambda k: (-weights[k], -preference[k]))[:len(unique)]
    # The smallest groups go to the wanted splits with the smallest weights, the next ones to larger weights.
    smallest = order[np.argsort(counts[order], kind="stable")][:len(wanted)]
    for group, split in zip(smallest, sorted(wanted, key=lambda k: weights[k])):
        chosen[group] = split
    filled = np.bincount(chosen[chosen >= 0], weights=counts[chosen >= 0], minlength=len(names))
    for g in order:
        if chosen[g] < 0:
            deficit = np.where(open_, targets - filled, -np.inf)
            tied = np.flatnonzero(np.isclose(deficit, deficit.max()))
            pick = int(tied[np.argmax((preference - filled)[tied])])
            chosen[g] = pick
            filled[pick] += counts[g]
    return np.asarray(names, dtype=object)[chosen[inverse]]


def primary_labels(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per row: the most common label of its group (ties: the smaller label). A patient's images can show
    several conditions; the group is placed with the class most of its images have."""
    frame = pd.crosstab(pd.Series(groups.astype(str), name="group"), pd.Series(labels, name="label"))
    return frame.idxmax(axis=1).reindex(groups.astype(str)).to_numpy()


def stratified_grouped_split(labels: np.ndarray, groups: np.ndarray, names: tuple[str, ...],
                             weights: tuple[float, ...], seed=SPLIT_SEED) -> np.ndarray:
    """`grouped_split` within each class: every class with at least one group per split reaches every split
    with a positive weight, in about the weights' proportions, and no group is cut."""
    labels, groups = np.asarray(labels), np.asarray(groups, dtype=object)
    primary = primary_labels(labels, groups)
    out = np.empty(len(labels), dtype=object)
    # A class too small for every split fills the split that is furthest behind over the classes done so far.
    behind = np.asarray(weights, dtype=float) / sum(weights) * len(labels)
    for label in np.unique(primary):
        rows = primary == label
        out[rows] = grouped_split(groups[rows], names, weights, [seed, int(label) + 1], preference=behind)
        behind -= [np.sum(out[rows] == name) for name in names]
    return out


def assign_splits(official: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                  fractions: dict[str, float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Keep the official split; carve a missing val / test split out of the "train" rows, by class and group.

    `official` holds "train" for every row the dataset does not place itself. A carved split takes
    `fractions[split]` of those rows' images.
    """
    official = np.asarray(official, dtype=object).copy()
    missing = tuple(s for s in ("val", "test") if not (official == s).any())
    pool = official == "train"
    if not missing or not pool.any():
        return official
    weights = tuple(fractions[s] for s in missing)
    names = ("train",) + missing
    labels, groups = np.asarray(labels)[pool], np.asarray(groups, dtype=object)[pool]
    official[pool] = stratified_grouped_split(labels, groups, names, (1.0 - sum(weights),) + weights)
    return official


# ------------------------------------------------------------------------------------------ subsample

def allocate(sizes: np.ndarray, n: int) -> np.ndarray:
    """n items shared out over strata of `sizes` in proportion, at least one each (largest remainders)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    exact = n * sizes / sizes.sum()
    quota = np.minimum(np.maximum(np.floor(exact), 1), sizes).astype(np.int64)
    while quota.sum() > n:
        quota[np.argmax(np.where(quota > 1, quota - exact, -np.inf))] -= 1
    while quota.sum() < n:
        quota[np.argmax(np.where(quota < sizes, exact - quota, -np.inf))] += 1
    return quota


def subsample(labels: np.ndarray, groups: np.ndarray, splits: np.ndarray, n: int,
              seed=SPLIT_SEED) -> np.ndarray:
    """Sorted row positions of about n rows: whole groups, every (split, class) cell of the table shrunk in
    proportion and kept (at least one image), so a class keeps every split it had.

    Within a split, groups are visited in a seeded order and taken while they fit the cells' quotas; a class
    whose every remaining group is larger than its quota gets its smallest group anyway (a few images over n).
    Raises ValueError when n is below the number of non-empty cells.
    """
    labels, groups = np.asarray(labels), np.asarray(groups, dtype=object)
    splits = np.asarray(splits, dtype=object)
    cells = pd.crosstab(pd.Series(splits, name="split"), pd.Series(labels, name="label"))
    sizes = cells.to_numpy().ravel()
    filled = sizes > 0
    if n < filled.sum():
        raise ValueError(f"n_images={n} is too few to keep every class in every split it has: there are "
                         f"{filled.sum()} (split, class) pairs with images, so at least {filled.sum()} are "
                         "needed")
    quota = np.zeros(sizes.shape, dtype=np.int64)
    quota[filled] = allocate(sizes[filled], n)
    quotas = pd.DataFrame(quota.reshape(cells.shape), index=cells.index, columns=cells.columns)
    rng = np.random.default_rng([seed, 2])
    taken = []
    for split in cells.index:
        rows = np.flatnonzero(splits == split)
        taken.append(rows[_fill(labels[rows], groups[rows].astype(str), quotas.loc[split], rng)])
    return np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)


def _fill(labels: np.ndarray, groups: np.ndarray, quota: pd.Series, rng) -> np.ndarray:
    """Which rows of one split to keep: the groups taken to meet its per-class quota (bool per row)."""
    counts = pd.crosstab(pd.Series(groups, name="group"), pd.Series(labels, name="label"))
    counts = counts.reindex(columns=quota.index, fill_value=0)
    left = quota.to_numpy().copy()
    matrix = counts.to_numpy()
    order = rng.permutation(len(counts))
    take = np.zeros(len(counts), dtype=bool)
    for g in order:
        if (matrix[g] <= left).all():
            take[g] = True
            left -= matrix[g]
    for c in np.flatnonzero((quota.to_numpy() > 0) & (matrix[take].sum(axis=0) == 0)):
        having = np.flatnonzero(matrix[:, c] > 0)
        take[having[np.argmin(matrix[having].sum(axis=1))]] = True  # the class's smallest group
    return pd.Series(groups).isin(counts.index[take]).to_numpy()
