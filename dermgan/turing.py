"""Turing test: a rating study of real versus generated skin images, its analysis, and a machine baseline.

Study. `design_study` takes the same number of held-out samples from every model (samples/<model>/samples.npz),
spread over each model's conditions, and as many real test images as all samples together, with the samples'
conditions where the test split has them: real and synthetic are balanced (50 %) and share their condition mix
(the manifest says when the test split could not match it, e.g. for melanoma-only models). No test row appears
twice, so a real image never sits beside a synthetic one made from its own semantic map (which would give it
away). The items are shuffled with the recorded seed. `write_study` writes one self-contained HTML page
(dermgan.turing_page) and a manifest JSON with the truth, both named after the study id (a hash of the design and
the pixels), so a rebuilt study never overwrites one that raters already have.

Analysis. `read_responses` checks the CSV files the page exports against the manifest (one-line error naming
file and line); `analyse` gives accuracy per rater and overall with exact binomial tests against 50 %,
sensitivity and specificity (synthetic = positive), condition identification on real versus synthetic
images, Fleiss' kappa, and breakdowns per model, condition, skin type and confidence. Proportions carry
Clopper-Pearson (exact) 95 % intervals; pooled accuracy and kappa also carry a bootstrap interval that resamples
raters and items, since answers of one rater, or on one item, are not independent.

Machine baseline. `classifier_two_sample_test`: a small CNN (dermgan.models.classifier) learns real versus
generated on one half of the images and is scored on the other half; held-out accuracy above 50 % (exact
one-sided binomial test) means the two sets are distinguishable (the classifier two-sample test of
Lopez-Paz & Oquab, 2017).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import glob
import hashlib
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermgan.runtime import write_text_atomic

STUDY_FORMAT = "dermgan.turing/1"
RESPONSE_COLUMNS = ("study_id", "rater_id", "item_id", "answer", "confidence", "condition", "answered_at")
ANSWERS = ("real", "synthetic")
CONFIDENCE_LEVELS = (1, 2, 3)
CONFIDENCE_LABELS = ("guess", "fairly sure", "certain")
POSITIVE = "synthetic"  # sensitivity = synthetic images called synthetic; specificity = real called real


class TuringError(ValueError):
    """Bad study input or response file; the message names the file, the line and what was expected."""


# ---------------------------------------------------------------------------------------------------------
# Study design
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ImagePool:
    """Candidate images of one kind: uint8 (N, H, W, 3), condition label, Fitzpatrick type (0 = unknown) and
    source_index, the test-split row an image shows (real) or was generated from (-1 = none)."""

    images: np.ndarray
    condition: np.ndarray
    fitzpatrick: np.ndarray
    source_index: np.ndarray

    def __post_init__(self):
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise TuringError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        for name in ("condition", "fitzpatrick", "source_index"):
            if len(getattr(self, name)) != n:
                raise TuringError(f"{name} has {len(getattr(self, name))} entries for {n} images")


@dataclass
class Study:
    study_id: str
    seed: int
    dataset: str
    classes: tuple[str, ...]
    items: list[dict]  # in presentation order: id, position, truth, model, condition, label, fitzpatrick, ...
    images: np.ndarray  # uint8 (n_items, H, W, 3), row i = items[i]
    n_per_model: int
    condition_matched: bool  # the real images have exactly the samples' known conditions

    def manifest(self) -> dict:
        return {"format": STUDY_FORMAT, "study_id": self.study_id, "seed": self.seed, "dataset": self.dataset,
                "classes": list(self.classes), "n_per_model": self.n_per_model,
                "condition_matched": self.condition_matched,
                "models": sorted({i["model"] for i in self.items if i["model"]}),
                "answers": list(ANSWERS), "positive": POSITIVE, "confidence_levels": list(CONFIDENCE_LEVELS),
                "confidence_labels": list(CONFIDENCE_LABELS), "response_columns": list(RESPONSE_COLUMNS),
                "image_size": int(self.images.shape[1]), "items": self.items}


def pool_from_samples(path: Path, image_shape: tuple, trained_on: dict | None) -> ImagePool:
    """samples/<model>/samples.npz (docs/CONVENTIONS.md) as an ImagePool, checked against the real images' shape
    and, unless `trained_on` is None, shown to come from a model trained on that data (`read_samples`)."""
    path = Path(path)
    if not path.is_file():
        raise TuringError(f"{path}: no such samples file")
    from dermgan.models.dermgan import read_samples

    stored = read_samples(path, trained_on)
    missing = [k for k in ("images", "condition", "fitzpatrick", "source_index") if k not in stored]
    if missing:
        raise TuringError(f"{path}: missing arrays {missing} (has {list(stored)}); see docs/CONVENTIONS.md")
    arrays = {k: stored[k] for k in ("images", "condition", "fitzpatrick", "source_index")}
    if arrays["images"].dtype != np.uint8 or arrays["images"].shape[1:] != tuple(image_shape):
        raise TuringError(f"{path}: images must be uint8 (N, {', '.join(map(str, image_shape))}) like the real "
                          f"test images, got {arrays['images'].dtype} {arrays['images'].shape}")
    return ImagePool(**arrays)


def pool_from_split(test) -> ImagePool:
    """The real images of a SkinData split (rows = source_index)."""
    tone = pd.to_numeric(test.table["fitzpatrick"], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
    return ImagePool(np.asarray(test.images), test.table["label"].to_numpy(dtype=np.int64), tone,
                     np.arange(len(test)))


def _round_robin(candidates, keys, n: int, rng, take) -> list[int]:
    """Up to n of `candidates` (in the order given), one per key in turn (keys in a random order); take(c) says
    whether c may be used, and claims it when it may."""
    queues = {int(k): [int(c) for c, kk in zip(candidates, keys) if kk == k] for k in rng.permutation(np.unique(keys))}
    picked = []
    while len(picked) < n and any(queues.values()):
        for key, queue in queues.items():
            while queue and len(picked) < n:
                candidate = queue.pop(0)
                if take(candidate):
                    picked.append(candidate)
                    break
    return picked


def _known(label) -> bool:
    return int(label) >= 0


def design_study(real: ImagePool, models: dict[str, ImagePool], classes, n_per_model: int, seed: int,
                 dataset: str = "synthetic") -> Study:
    """The balanced, shuffled study (see the module docstring); an impossible size is an error naming what
    is short.

    Each model gives n_per_model samples spread over its conditions in turn; then as many real test images as
    all models' samples together, condition by condition as many as the samples have (when the test split
    has them; the rest, and the match of samples of unknown condition, spread over the conditions in turn).
    No test row is shown twice, as a real image or as the input of a sample. Condition -1 = unknown (an
    unconditional model), Fitzpatrick type outside 1..6 = unknown (stored as 0).
    """
    if not models:
        raise TuringError("no generated samples to rate: no samples/<model>/samples.npz in the run directory")
    if n_per_model < 1:
        raise TuringError(f"n_per_model must be >= 1, got {n_per_model}")
    rng = np.random.default_rng([seed, 14])
    used_rows: set[int] = set()

    def claim_row(row: int) -> bool:
        if row >= 0 and row in used_rows:
            return False
        if row >= 0:
            used_rows.add(row)
        return True

    entries = []  # (truth, model, pool, index in pool)
    for name in sorted(models):
        pool = models[name]
        order = rng.permutation(len(pool.images))
        picked = _round_robin(order, pool.condition[order], n_per_model, rng,
                              lambda j, pool=pool: claim_row(int(pool.source_index[j])))
        if len(picked) < n_per_model:
            raise TuringError(f"model {name}: only {len(picked)} samples whose test row is not used already; "
                              f"n_per_model {n_per_model} is too large")
        entries += [("synthetic", name, pool, j) for j in picked]
    wanted = np.bincount([int(e[2].condition[e[3]]) for e in entries if _known(e[2].condition[e[3]])],
                         minlength=len(classes))
    order = rng.permutation(len(real.images))
    real_picks = []
    for label in range(len(classes)):  # condition by condition, as many as the samples have
        rows = order[real.condition[order] == label]
        real_picks += _round_robin(rows, np.zeros(len(rows)), int(wanted[label]), rng,
                                   lambda j: claim_row(int(real.source_index[j])))
    condition_matched = len(real_picks) == int(wanted.sum())
    missing = len(entries) - len(real_picks)  # unknown-condition samples and shortfalls: any condition, in turn
    real_picks += _round_robin(order, real.condition[order], missing, rng,
                               lambda j: claim_row(int(real.source_index[j])))
    if len(real_picks) < len(entries):
        raise TuringError(f"the test split has {len(real_picks)} real images free for {len(entries)} samples "
                          f"({len(models)} models x {n_per_model}); use a smaller n_per_model or fewer models")
    entries += [("real", None, real, j) for j in real_picks]
    entries = [entries[k] for k in rng.permutation(len(entries))]
    items, images = [], []
    for position, (truth, model, pool, j) in enumerate(entries):
        label, tone = int(pool.condition[j]), int(pool.fitzpatrick[j])
        items.append({"id": f"item-{position + 1:03d}", "position": position, "truth": truth, "model": model,
                      "condition": classes[label] if label >= 0 else None, "label": label,
                      "fitzpatrick": tone if 1 <= tone <= 6 else 0, "source_index": int(pool.source_index[j])})
        images.append(pool.images[j])
    images = np.stack(images)
    digest = hashlib.sha256(json.dumps([items, list(classes), seed, dataset]).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return Study(digest.hexdigest()[:12], seed, dataset, tuple(classes), items, images, n_per_model,
                 condition_matched)


def design_largest_study(real: ImagePool, models: dict[str, ImagePool], classes, n_per_model: int, seed: int,
                         dataset: str = "synthetic") -> Study:
    """design_study with n_per_model, or with the largest smaller number the test split allows (study.n_per_model
    says which; the caller reports it). Many models against a small test split (smoke) need this. When not even
    one image per model fits, the last models (in the order given) are left out until the rest fit; the study's
    items say which models are in it, and the caller reports the others."""
    if n_per_model < 1:
        raise TuringError(f"n_per_model must be >= 1, got {n_per_model}")
    names = list(models)
    for kept in range(len(names), 0, -1):
        chosen = {name: models[name] for name in names[:kept]}
        for n in range(n_per_model if kept == len(names) else 1, 0, -1):
            try:
                return design_study(real, chosen, classes, n, seed, dataset)
            except TuringError:
                if kept == 1 and n == 1:
                    raise
    raise TuringError("no model to design a study for")


def _ablation_run(folder: Path) -> bool:
    """02's ablation-table runs (<variant>-s<seed>, meta.json schedule "ablation") are short repeats over seeds,
    not models to show raters."""
    meta = folder / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("schedule") == "ablation"


def run_pools(ctx, models: list[str] | None = None) -> tuple:
    """(dataset, real test-split pool, {model: samples pool}) of a run directory; `models` None = every
    samples/<model>/samples.npz there except 02's ablation runs, else the named ones (a missing one is an
    error). Samples of a model trained on other data than the run's training split are refused."""
    from dermgan.data import load_for_run
    from dermgan.train import data_fingerprint

    data = load_for_run(ctx)
    trained_on = data_fingerprint(data.split("train"), ctx.data_root)
    test = data.split("test")
    found = {p.parent.name: p for p in sorted(ctx.run_dir.glob("samples/*/samples.npz"))
             if models is not None or not _ablation_run(p.parent)}
    if models is not None:
        missing = [m for m in models if m not in found]
        if missing:
            raise TuringError(f"{ctx.run_dir / 'samples'}: no samples.npz for {missing}; found {sorted(found)}")
        found = {m: found[m] for m in models}
    pools = {name: pool_from_samples(path, test.images.shape[1:], trained_on) for name, path in found.items()}
    return data, pool_from_split(test), pools


# ---------------------------------------------------------------------------------------------------------
# Writing the page and the manifest
# ---------------------------------------------------------------------------------------------------------


def _png_data_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_page(study: Study, title: str = "Real or synthetic?", note: str = "", display_size: int = 384) -> str:
    """The study's HTML page: ids and pixels only, never the truth. `note`: a sentence for the raters shown
    under the instructions (e.g. what "real" means when the real images are themselves rendered)."""
    from dermgan.turing_page import PAGE_TEMPLATE

    public = {"study_id": study.study_id, "classes": list(study.classes),
              "confidence_levels": list(CONFIDENCE_LEVELS), "confidence_labels": list(CONFIDENCE_LABELS),
              "image_size": int(study.images.shape[1]), "display_size": int(display_size),
              "items": [{"id": item["id"], "src": _png_data_uri(image)}
                        for item, image in zip(study.items, study.images)]}
    # "</" inside a script element would end it early; JSON allows the escaped form.
    data = json.dumps(public).replace("</", "<\\/")
    return (PAGE_TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__NOTE__", html.escape(note))
            .replace("__STUDY_JSON__", data))


def write_study(study: Study, folder: Path, title: str = "Real or synthetic?", note: str = "") -> tuple[Path, Path]:
    """folder/study_<id>.html and folder/study_<id>.json (the truth); returns both paths."""
    folder = Path(folder)
    page = write_text_atomic(folder / f"study_{study.study_id}.html", render_page(study, title, note))
    manifest = write_text_atomic(folder / f"study_{study.study_id}.json",
                                 json.dumps(study.manifest(), indent=1) + "\n")
    return page, manifest


def load_study(path: Path) -> dict:
    """A study manifest written by write_study, checked."""
    path = Path(path)
    if not path.is_file():
        raise TuringError(f"{path}: no such study manifest")
    try:
        study = json.loads(path.read_text())
    except ValueError as error:
        raise TuringError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(study, dict) or study.get("format") != STUDY_FORMAT:
        raise TuringError(f"{path}: not a study manifest (expected format {STUDY_FORMAT!r})")
    return study


def find_study(folder: Path, study_id: str) -> dict:
    """The manifest of `study_id` in `folder` (where write_study put it)."""
    return load_study(Path(folder) / f"study_{study_id}.json")


# ---------------------------------------------------------------------------------------------------------
# Reading response files
# ---------------------------------------------------------------------------------------------------------


def response_files(spec: str, root: Path | None = None) -> list[Path]:
    """A folder (its *.csv files) or a glob pattern; relative paths are taken from `root`."""
    path = Path(spec)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    files = sorted(path.glob("*.csv")) if path.is_dir() else sorted(Path(p) for p in glob.glob(str(path)))
    files = [f for f in files if f.is_file()]
    if not files:
        raise TuringError(f"responses {spec!r}: no CSV files there (give a folder of CSV files or a glob)")
    return files


def study_id_of(path: Path) -> str:
    """The study id in the first answer row of a response file."""
    rows = _read_rows(Path(path))
    if not rows:
        raise TuringError(f"{path}: no answers (only a header)")
    return rows[0][1]["study_id"]


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for every data row; the header must be exactly RESPONSE_COLUMNS (any order)."""
    if not path.is_file():
        raise TuringError(f"{path}: no such response file")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise TuringError(f"{path}: empty file (expected a header {','.join(RESPONSE_COLUMNS)})")
        missing = [c for c in RESPONSE_COLUMNS if c not in header]
        extra = [c for c in header if c not in RESPONSE_COLUMNS]
        if missing or extra or len(set(header)) != len(header):
            raise TuringError(f"{path} line 1: wrong columns (missing {missing}, unexpected {extra}); "
                              f"expected {','.join(RESPONSE_COLUMNS)}")
        rows = []
        for row in reader:
            if not row or all(not v.strip() for v in row):
                continue
            if len(row) != len(header):
                raise TuringError(f"{path} line {reader.line_num}: {len(row)} fields, expected {len(header)}")
            rows.append((reader.line_num, dict(zip(header, (v.strip() for v in row)))))
    return rows


def _check_row(path, line, row, study, items) -> dict:
    where = f"{path} line {line}"
    if row["study_id"] != study["study_id"]:
        raise TuringError(f"{where}: study_id {row['study_id']!r} is not this study's ({study['study_id']!r}); "
                          "the file answers another version of the study")
    if not row["rater_id"]:
        raise TuringError(f"{where}: empty rater_id")
    if row["item_id"] not in items:
        ids = list(items)
        raise TuringError(f"{where}: unknown item_id {row['item_id']!r} (the study has {len(ids)} items, "
                          f"{ids[0]} .. {ids[-1]})")
    if row["answer"] not in ANSWERS:
        raise TuringError(f"{where}: answer {row['answer']!r} is not one of {list(ANSWERS)}")
    levels = [str(level) for level in study["confidence_levels"]]
    if row["confidence"] not in levels:
        raise TuringError(f"{where}: confidence {row['confidence']!r} is not one of {levels}")
    if row["condition"] not in study["classes"]:
        raise TuringError(f"{where}: condition {row['condition']!r} is not one of the study's classes "
                          f"{study['classes']}")
    return {**row, "confidence": int(row["confidence"]), "file": str(path), "line": line}


def read_responses(paths, study: dict, allow_partial: bool = False) -> pd.DataFrame:
    """Every answer of every file, checked, one row per (rater, item) with the item's truth joined on.

    A file that is malformed (columns, values, another study's id, an unknown item, a repeated answer of one
    rater, also across files) is an error naming file and line. A rater who did not answer every item is an
    error unless allow_partial.
    """
    items = {item["id"]: item for item in study["items"]}
    records, seen = [], {}
    for path in [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]:
        rows = _read_rows(path)
        if not rows:
            raise TuringError(f"{path}: no answers (only a header)")
        for line, row in rows:
            record = _check_row(path, line, row, study, items)
            key = (record["rater_id"], record["item_id"])
            if key in seen:
                raise TuringError(f"{path} line {line}: rater {key[0]!r} answered {key[1]!r} again (first in "
                                  f"{seen[key]})")
            seen[key] = f"{path} line {line}"
            records.append(record)
    frame = pd.DataFrame(records)
    if not allow_partial:
        for rater, part in frame.groupby("rater_id", sort=True):
            missing = [i for i in items if i not in set(part["item_id"])]
            if missing:
                files = ", ".join(sorted(set(part["file"])))
                raise TuringError(f"{files}: rater {rater!r} answered {len(part)} of {len(items)} items (first "
                                  f"missing: {missing[0]}); a partial file is analysed only with allow_partial")
    truth = pd.DataFrame(study["items"]).rename(columns={"id": "item_id", "condition": "true_condition"})
    frame = frame.merge(truth[["item_id", "truth", "model", "true_condition", "fitzpatrick", "position"]],
                        on="item_id", how="left")
    frame["correct"] = frame["answer"] == frame["truth"]
    # NA where the item's condition is unknown (an unconditional model): such answers are not scored
    frame["condition_correct"] = (frame["condition"] == frame["true_condition"]).astype("boolean")
    frame.loc[frame["true_condition"].isna(), "condition_correct"] = pd.NA
    return frame


# ---------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion k / n; (nan, nan) for n = 0."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def binomial_p(k: int, n: int, alternative: str = "two-sided") -> float:
    """Exact binomial test of k successes in n against p = 0.5."""
    from scipy.stats import binomtest

    return float(binomtest(int(k), int(n), 0.5, alternative=alternative).pvalue) if n else float("nan")


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa of an (items, categories) table of rating counts, every row summing to the same number of
    raters (>= 2); nan when all ratings fall in one category (agreement by chance is then 1)."""
    counts = np.asarray(counts, dtype=np.float64)
    raters = counts.sum(axis=1)
    if counts.ndim != 2 or len(counts) == 0 or raters[0] < 2 or not np.all(raters == raters[0]):
        raise ValueError("fleiss_kappa needs an (items, categories) table with the same number (>= 2) of "
                         "ratings in every row")
    r = raters[0]
    agreement = ((counts ** 2).sum(axis=1) - r) / (r * (r - 1))  # P_i: agreeing rater pairs per item
    shares = counts.sum(axis=0) / counts.sum()  # p_j: share of all ratings in category j
    chance = float((shares ** 2).sum())
    if chance >= 1.0:
        return float("nan")
    return float((agreement.mean() - chance) / (1.0 - chance))


def _kappa_table(frame: pd.DataFrame, column: str, categories) -> np.ndarray | None:
    """Counts per (item, category) over the items answered by every rater; None with < 2 raters or items."""
    raters = frame["rater_id"].nunique()
    per_item = frame.groupby("item_id")["rater_id"].nunique()
    complete = per_item.index[per_item == raters]
    if raters < 2 or len(complete) < 2:
        return None
    part = frame[frame["item_id"].isin(complete)]
    table = pd.crosstab(part["item_id"], part[column]).reindex(columns=list(categories), fill_value=0)
    return table.to_numpy()


def _row(section, group, metric, k, n, p_value=float("nan"), confidence=0.95):
    lo, hi = clopper_pearson(k, n, confidence)
    return {"section": section, "group": str(group), "metric": metric, "k": int(k), "n": int(n),
            "value": k / n if n else float("nan"), "lo": lo, "hi": hi, "interval": "clopper-pearson",
            "p_value": p_value}


def _proportions(frame, section, group, confidence):
    """Accuracy (with its binomial test), sensitivity, specificity and condition accuracy of some answers."""
    synthetic, real = frame[frame["truth"] == "synthetic"], frame[frame["truth"] == "real"]
    k, n = int(frame["correct"].sum()), len(frame)
    return [
        _row(section, group, "accuracy", k, n, binomial_p(k, n), confidence),
        _row(section, group, "sensitivity", int(synthetic["correct"].sum()), len(synthetic), confidence=confidence),
        _row(section, group, "specificity", int(real["correct"].sum()), len(real), confidence=confidence),
        _condition_row(frame, section, group, confidence),
    ]


def _condition_row(frame, section, group, confidence):
    """Condition identification, over the answers on items whose condition is known."""
    scored = frame["condition_correct"].dropna()
    return _row(section, group, "condition_accuracy", int(scored.sum()), len(scored), confidence=confidence)


def _category_counts(choices: np.ndarray, n_categories: int) -> np.ndarray:
    """(raters, items) category indices -> (items, categories) counts, the table Fleiss' kappa reads."""
    return (choices[:, :, None] == np.arange(n_categories)).sum(axis=0)


def _bootstrap_rows(frame, study, n_bootstrap, seed, confidence):
    """Pooled accuracy and both kappas, each with an interval from resampling raters and items together."""
    raters = sorted(frame["rater_id"].unique())
    item_ids = [i["id"] for i in study["items"]]
    rows = frame["rater_id"].map({r: i for i, r in enumerate(raters)}).to_numpy()
    cols = frame["item_id"].map({i: j for j, i in enumerate(item_ids)}).to_numpy()
    correct = np.full((len(raters), len(item_ids)), np.nan)
    correct[rows, cols] = frame["correct"].to_numpy(dtype=float)
    kinds = {"fleiss_kappa_real_synthetic": ("answer", list(ANSWERS)),
             "fleiss_kappa_condition": ("condition", list(study["classes"]))}
    choices = {}  # metric -> (raters, items) category index, -1 where unanswered
    for metric, (column, categories) in kinds.items():
        choices[metric] = np.full(correct.shape, -1)
        choices[metric][rows, cols] = frame[column].map({c: i for i, c in enumerate(categories)}).to_numpy()
    complete = ~np.isnan(correct).any(axis=0)  # kappa needs every rater on an item
    rng = np.random.default_rng([seed, 1414])
    replicates = {"accuracy": [], **{metric: [] for metric in kinds}}
    for _ in range(n_bootstrap):
        pick_r = rng.integers(0, len(raters), len(raters))
        pick_i = rng.integers(0, len(item_ids), len(item_ids))
        replicates["accuracy"].append(np.nanmean(correct[np.ix_(pick_r, pick_i)]))
        kept = pick_i[complete[pick_i]]
        if len(raters) >= 2 and len(kept) >= 2:
            for metric, (_, categories) in kinds.items():
                counts = _category_counts(choices[metric][np.ix_(pick_r, kept)], len(categories))
                replicates[metric].append(fleiss_kappa(counts))
    tail = (1 - confidence) / 2 * 100
    method = f"bootstrap over raters and items ({n_bootstrap})"

    def interval(values):
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        if not len(values):
            return float("nan"), float("nan")
        return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))

    k, n = int(frame["correct"].sum()), len(frame)
    lo, hi = interval(replicates["accuracy"])
    out = [{"section": "overall", "group": "all", "metric": "accuracy", "k": k, "n": n, "value": k / n,
            "lo": lo, "hi": hi, "interval": method, "p_value": float("nan")}]
    for metric, (column, categories) in kinds.items():
        table = _kappa_table(frame, column, categories)
        lo, hi = interval(replicates[metric])
        out.append({"section": "agreement", "group": "all", "metric": metric, "k": 0,
                    "n": 0 if table is None else len(table),
                    "value": fleiss_kappa(table) if table is not None else float("nan"),
                    "lo": lo, "hi": hi, "interval": method, "p_value": float("nan")})
    return out


def analyse(frame: pd.DataFrame, study: dict, n_bootstrap: int = 1000, seed: int = 0,
            confidence: float = 0.95) -> pd.DataFrame:
    """Every result as one long table: section, group, metric, k, n, value, lo, hi, interval, p_value.

    Sections: "rater" (one group per rater), "overall", "agreement" (Fleiss' kappa, on the items that every
    rater answered: n = those items), "truth" (condition accuracy on real vs synthetic images), "model",
    "condition" (the item's true condition; "unknown" for unconditional models), "fitzpatrick" (0 = unknown)
    and "confidence" (the level given). Condition accuracy counts only items whose condition is known.
    p_value: exact two-sided binomial test of the accuracy against 50 %. Pooled "overall" rows treat every
    rating as independent (Clopper-Pearson); the bootstrap row of the same accuracy does not.
    """
    rows = []
    for rater, part in frame.groupby("rater_id", sort=True):
        rows += _proportions(part, "rater", rater, confidence)
    rows += _proportions(frame, "overall", "all", confidence)
    rows += _bootstrap_rows(frame, study, n_bootstrap, seed, confidence)
    for truth in ANSWERS:
        rows.append(_condition_row(frame[frame["truth"] == truth], "truth", truth, confidence))
    for model, part in frame[frame["truth"] == "synthetic"].groupby("model", sort=True):
        rows.append(_row("model", model, "sensitivity", int(part["correct"].sum()), len(part),
                         confidence=confidence))
        rows.append(_condition_row(part, "model", model, confidence))
    groups = frame.assign(condition_group=frame["true_condition"].fillna("unknown"))
    for column, section in (("condition_group", "condition"), ("fitzpatrick", "fitzpatrick"),
                            ("confidence", "confidence")):
        for group, part in groups.groupby(column, sort=True):
            rows += _proportions(part, section, group, confidence)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Machine baseline: classifier two-sample test
# ---------------------------------------------------------------------------------------------------------


def _labelled(images: np.ndarray, labels: np.ndarray):
    """A two-class SkinData (0 = real, 1 = generated) for dermgan.classify."""
    from dermgan.data.dataset import RECORD_COLUMNS, SkinData

    table = pd.DataFrame({c: [pd.NA] * len(labels) for c in RECORD_COLUMNS})
    table["label"] = labels.astype(np.int64)
    table["condition"] = np.where(labels == 1, "generated", "real")
    return SkinData("two-sample", ("real", "generated"), images, None, None, table)


def _halves(groups: np.ndarray, rng) -> np.ndarray:
    """True for the rows in the training half: whole groups go to one half."""
    unique = rng.permutation(np.unique(groups))
    return np.isin(groups, unique[: len(unique) // 2])


def _balanced(rows_real: np.ndarray, rows_fake: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(rows_real), len(rows_fake))
    return rng.permutation(rows_real)[:n], rng.permutation(rows_fake)[:n]


def real_for(fake: ImagePool, real: ImagePool) -> ImagePool:
    """The real images to compare a model's samples with: those of the conditions the samples show when every
    sample's condition is known (a melanoma-only model against real melanomas), else all of them."""
    if np.any(fake.condition < 0):
        return real
    keep = np.isin(real.condition, np.unique(fake.condition))
    return ImagePool(real.images[keep], real.condition[keep], real.fitzpatrick[keep], real.source_index[keep])


def classifier_two_sample_test(real: ImagePool, fake: ImagePool, cfg, device="cpu", seed: int = 0,
                               steps: int | None = None, confidence: float = 0.95) -> dict:
    """Train a SkinClassifier to tell `real` from `fake` on one half; score it on the other half.

    cfg: a ClassifierConfig (width, batch size, learning rate); `steps` optimiser steps (None: cfg.epochs).

    A real image and the generated images made from its test row (source_index) always fall in the same half,
    so the held-out half holds no twin of a training image. Each half has as many real as generated images,
    so chance accuracy is exactly 50 %. Returns counts, held-out accuracy with a Clopper-Pearson interval and
    the one-sided exact binomial p-value of accuracy > 50 %.
    """
    from dermgan.classify import predict, train_classifier

    rng = np.random.default_rng([seed, 2])
    fresh = len(real.images) + np.arange(len(fake.images))  # fakes without a source row form their own groups
    groups = np.concatenate([real.source_index, np.where(fake.source_index >= 0, fake.source_index, fresh)])
    is_fake = np.r_[np.zeros(len(real.images), bool), np.ones(len(fake.images), bool)]
    in_train = _halves(groups, rng)
    images = np.concatenate([np.asarray(real.images), np.asarray(fake.images)])
    split = {}
    for name, mask in (("train", in_train), ("test", ~in_train)):
        r, f = _balanced(np.flatnonzero(mask & ~is_fake), np.flatnonzero(mask & is_fake), rng)
        split[name] = np.concatenate([r, f])
    if min(len(split["train"]), len(split["test"])) < 4:
        raise TuringError(f"two-sample test: {len(real.images)} real and {len(fake.images)} generated images "
                          "leave fewer than 2 per class in a half")
    labels = is_fake.astype(np.int64)
    n_train = len(split["train"])
    train_data = _labelled(images[split["train"]], labels[split["train"]])
    test_data = _labelled(images[split["test"]], labels[split["test"]])
    # Classes are balanced by construction; a weighted sampler would only add noise. `steps` sets the number of
    # optimiser steps whatever the set size: a few dozen steps leave BatchNorm's running statistics unsettled
    # and the network at chance even on trivially different sets.
    epochs = cfg.epochs if steps is None else max(1, math.ceil(steps / max(1, n_train // cfg.batch_size)))
    cfg = dataclasses.replace(cfg, balance="none", epochs=epochs)
    model, _ = train_classifier(train_data, None, cfg, device=device, seed=seed)
    predicted = predict(model, test_data, device).argmax(axis=1)
    k, n = int((predicted == labels[split["test"]]).sum()), len(split["test"])
    lo, hi = clopper_pearson(k, n, confidence)
    return {"n_train": n_train, "n_test": n, "epochs": epochs, "k_correct": k, "accuracy": k / n, "lo": lo, "hi": hi,
            "interval": "clopper-pearson", "p_value": binomial_p(k, n, alternative="greater")}
