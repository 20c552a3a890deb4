"""Do synthetic images help a skin-condition classifier on rare malignant classes? (notebook 07)

DermGAN claims that adding its images to a classifier's training data keeps overall accuracy and improves rare
malignant conditions; MelanoGANs that synthetic melanoma counters heavy class imbalance. This module builds
the training sets ("arms") of that experiment, trains one classifier per arm and seed with a fixed recipe, and
scores them with scikit-learn, with intervals.

Arms (every arm is tested on the same real test split):
    real                 the real training split (random flips, as every arm)
    real+classic         the same with classic augmentation (90-degree rotations, brightness/contrast/saturation)
    real+dermgan         + DermGAN images of the rare classes, from maps drawn like the training maps
    real+melanogan       + synthetic melanoma from the MelanoGAN-style model of notebook 03 closest in colour
                           statistics to the real training melanomas (choose_melanoma_model)
    real+oversample      + copies of real rare images, as many per class as real+dermgan adds (the honest baseline:
                           a synthetic arm must beat this, not just "real")
    synthetic-only       DermGAN images for every training map and nothing real: a diagnostic

Design choices (documented because the papers do not give theirs):
- The classifier trains WITHOUT class balancing (ClassifierConfig.balance = "none"), so the arms differ only in
  their training data; with a class-balanced sampler, oversampling would equal the baseline by construction.
- "Rare malignant" classes: malignant classes with fewer than half the training images of the largest class
  (HAM10000: mel, bcc, akiec; ISIC 2017: melanoma), unless named explicitly.
- Each rare class is topped up towards the largest class's count, but by at most `max_ratio` synthetic images
  per real image of that class (the generator cannot add information in unlimited amounts).
- Intervals: the test-set bootstrap (paired: the same resampled test images for both arms) for differences
  against the baseline; the spread over seeds (mean, SD, paired t-interval) beside it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dermgan.data.dataset import SkinData


# ----------------------------------------------------------------------------------------------------------
# Scores


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
    result = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": balanced,
        "macro_auroc": _macro_auroc(truth, probabilities, present, roc_auc_score),
        "recall": {name: (float(recall[i]) if i in present else float("nan")) for i, name in enumerate(classes)},
    }
    if fitzpatrick is not None:
        types = pd.array(fitzpatrick, dtype="Int64").to_numpy(dtype=np.float64, na_value=np.nan)
        result["accuracy_by_fitzpatrick"] = {
            int(t): float((predicted[types == t] == truth[types == t]).mean())
            for t in np.unique(types[np.isfinite(types)])
        }
    return result


def _macro_auroc(truth, probabilities, present, roc_auc_score) -> float:
    """Mean one-vs-rest AUROC over the classes that occur in the test set (others have no positives)."""
    if len(present) < 2:
        return float("nan")
    aucs = [roc_auc_score(truth == c, probabilities[:, c]) for c in present]
    return float(np.mean(aucs))


def bootstrap_interval(statistic, n: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile interval of statistic(rows) over `n_boot` resamples (with replacement) of range(n).

    `statistic` takes an index array and returns a float; NaN replicates (a class absent from a resample) are
    dropped. Returns (low, high).
    """
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=np.float64)
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


def build_classifier(architecture: str, n_classes: int, width: int, weights: str | None = None):
    """"small": dermgan's SkinClassifier; "resnet18": torchvision's, from scratch unless `weights` names a
    state-dict file (nothing is downloaded). The final layer is replaced to fit n_classes."""
    if architecture == "small":
        from dermgan.models.classifier import SkinClassifier

        return SkinClassifier(n_classes, width)
    if architecture != "resnet18":
        raise ValueError(f"unknown classifier architecture {architecture!r}; use 'small' or 'resnet18'")
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


@dataclass
class ArmResult:
    arm: str
    seed: int
    n_train: int
    n_added: int
    probabilities: np.ndarray  # (n_test, n_classes)
    scores: dict


def run_arm(arm: str, train: SkinData, extra: SkinData | None, test: SkinData, val: SkinData | None, cfg,
            seed: int, device="cpu", architecture: str = "small", weights: str | None = None,
            classic: bool = False) -> ArmResult:
    """Train one classifier on train (+ extra) and score it on test."""
    from dermgan.classify import predict, train_classifier

    model = build_classifier(architecture, len(train.classes), cfg.width, weights)
    transform = classic_augmentation if classic else None
    trained, _ = train_classifier(train, val, cfg, device=device, seed=seed, extra=extra, model=model,
                                  transform=transform)
    probabilities = predict(trained, test, device)
    truth = test.table["label"].to_numpy(np.int64)
    return ArmResult(arm, seed, len(train) + (len(extra) if extra is not None else 0),
                     len(extra) if extra is not None else 0, probabilities,
                     scores(truth, probabilities, test.classes, test.table["fitzpatrick"]))


# ----------------------------------------------------------------------------------------------------------
# Tables


def summary_table(results: list[ArmResult], test: SkinData, baseline: str = "real", rare: list[int] = (),
                  n_boot: int = 1000) -> pd.DataFrame:
    """One row per arm and metric: mean over seeds, seed SD, and for arms other than the baseline the mean
    difference with its paired test-set bootstrap interval and its seed t-interval."""
    truth = test.table["label"].to_numpy(np.int64)
    by_arm: dict[str, list[ArmResult]] = {}
    for r in results:
        by_arm.setdefault(r.arm, []).append(r)
    metrics = {"balanced_accuracy": None, "accuracy": None, "macro_auroc": None}
    metrics.update({f"recall_{test.classes[c]}": c for c in rare})
    rows = []
    base = sorted(by_arm.get(baseline, []), key=lambda r: r.seed)
    for arm, runs in by_arm.items():
        runs = sorted(runs, key=lambda r: r.seed)
        for metric, cls in metrics.items():
            values = [_metric(r.probabilities, truth, test.classes, metric, cls) for r in runs]
            row = {"arm": arm, "metric": metric, "mean": float(np.mean(values)),
                   "seed_sd": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                   "n_seeds": len(values), "n_test": len(truth), "n_added": runs[0].n_added}
            if arm != baseline and base and [r.seed for r in base] == [r.seed for r in runs]:
                row.update(_difference(base, runs, truth, test.classes, metric, cls, n_boot))
            rows.append(row)
    return pd.DataFrame(rows)


def _metric(probabilities, truth, classes, metric, cls, rows=None) -> float:
    with warnings.catch_warnings():  # a resample may lack a predicted class: expected, not worth a line each
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        return _metric_of(probabilities, truth, classes, metric, cls, rows)


def _metric_of(probabilities, truth, classes, metric, cls, rows) -> float:
    if rows is not None:
        probabilities, truth = probabilities[rows], truth[rows]
    if cls is not None:
        positives = truth == cls
        return float((probabilities[positives].argmax(1) == cls).mean()) if positives.any() else float("nan")
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    predicted = probabilities.argmax(1)
    if metric == "accuracy":
        return float(accuracy_score(truth, predicted))
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(truth, predicted))
    return _macro_auroc(truth, probabilities, sorted(set(truth.tolist())), roc_auc_score)


def _difference(base, runs, truth, classes, metric, cls, n_boot) -> dict:
    def mean_difference(rows):
        return float(np.mean([_metric(r.probabilities, truth, classes, metric, cls, rows)
                              - _metric(b.probabilities, truth, classes, metric, cls, rows)
                              for b, r in zip(base, runs)]))

    everything = np.arange(len(truth))
    low, high = bootstrap_interval(mean_difference, len(truth), n_boot, seed=1)
    per_seed = paired_seed_difference([_metric(b.probabilities, truth, classes, metric, cls, everything) for b in base],
                                      [_metric(r.probabilities, truth, classes, metric, cls, everything) for r in runs])
    return {"diff": mean_difference(everything), "diff_low": low, "diff_high": high,
            "seed_diff_low": per_seed["low"], "seed_diff_high": per_seed["high"]}


def recall_change_figure(table: pd.DataFrame, classes, rare, title: str):
    """Per-class change in recall of every arm against real-only, with its 95 % test-bootstrap interval; the rare
    malignant classes starred. `table` is summary_table's frame (notebook 07's metrics/07_augmentation.csv)."""
    import matplotlib.pyplot as plt

    recall = table[table.metric.str.startswith("recall_") & table["diff"].notna()].copy()
    recall["class"] = recall.metric.str.removeprefix("recall_")
    arm_names = list(dict.fromkeys(recall.arm))
    fig, axis = plt.subplots(figsize=(6.5, 0.45 * len(classes) + 1.2))
    offsets = np.linspace(-0.3, 0.3, len(arm_names)) if len(arm_names) > 1 else [0.0]
    for k, arm in enumerate(arm_names):
        part = recall[recall.arm == arm].set_index("class").reindex(list(classes))
        y = np.arange(len(classes)) + offsets[k]
        axis.errorbar(part["diff"], y, xerr=[part["diff"] - part["diff_low"], part["diff_high"] - part["diff"]],
                      fmt="o", ms=4, capsize=2, label=arm, color=f"C{k}")
    axis.axvline(0, color="0.4", lw=0.8)
    axis.set_yticks(range(len(classes)))
    axis.set_yticklabels([("★ " if c in rare else "") + name.replace("_", " ") for c, name in enumerate(classes)])
    axis.invert_yaxis()
    axis.set_xlabel("change in recall against real only (95 % test bootstrap)")
    axis.set_title(title)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no point is ever hidden
    fig.tight_layout()
    return fig
