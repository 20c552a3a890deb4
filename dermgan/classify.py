"""Training and evaluation of skin-condition classifiers (dermgan.models.classifier): the small CNN trained
from scratch and the ImageNet-pretrained EfficientNet-Lite0, whose frozen trunk may be computed once per image
and flip (TrunkCache) and shared by every seed and training set of a run."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from dermgan.config import ClassifierConfig
from dermgan.data.dataset import FLIP_VARIANTS, ClassifierDataset, SkinData, flip_variant
from dermgan.imageops import to_model
from dermgan.models.classifier import SkinClassifier
from dermgan.runtime import progress as default_progress


class _Concat(torch.utils.data.ConcatDataset):
    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            part.set_epoch(epoch)


def _class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse class frequency, normalised to mean 1 over the classes present."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return weights * (counts > 0).sum() / weights.sum()


def seeded_build(build, seed: int) -> nn.Module:
    """build() with the global torch RNG seeded first, so the seed fixes every randomly initialised weight."""
    torch.manual_seed(seed)
    return build()


# ---------------------------------------------------------------------------------------------------------
# The frozen trunk's outputs, computed once


class _TrunkExtractor(nn.Module):
    """A feature extractor (dermgan.metrics.features protocol) for the trunk output of one flip variant."""

    name = "trunk"

    def __init__(self, model: nn.Module, variant: int):
        super().__init__()
        self.model = model
        self.dims = tuple(d + 1 for d in FLIP_VARIANTS[variant])  # dims of (3, H, W) -> of (N, 3, H, W)
        self.identity = f"{model.trunk_identity()}-flip{variant}"

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        images = to_model(batch)
        return torch.flip(images, self.dims) if self.dims else images

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.trunk(x).flatten(1)


class TrunkCache:
    """The outputs of a classifier's frozen trunk (PretrainedClassifier.trunk) for image sets, per flip.

    The trunk is a fixed function of the image (frozen weights, batch norm in eval mode), so its outputs are
    computed once per image and flip variant and every seed and every training set of a run reads them;
    training from them equals training from the images, up to the last bits that batched arithmetic rounds
    differently (tests/test_efficientnet_lite.py). The sets are held by dermgan.metrics' FeatureStore, one per
    flip variant, keyed by the trunk's weights, input size and cut (trunk_identity) and by a hash of the
    images; with `cache_dir` they are also kept on disk.
    """

    def __init__(self, model: nn.Module, device="cpu", batch_size: int = 64, cache_dir=None):
        from dermgan.metrics.features import FeatureStore

        if not callable(getattr(model, "trunk_identity", None)):
            raise TypeError(f"{type(model).__name__} has no frozen trunk to cache (needs trunk / top / "
                            "trunk_identity, as PretrainedClassifier)")
        model = copy.deepcopy(model).eval()  # the trunk only; the caller's network trains on
        self.identity = model.trunk_identity()
        probe = model.trunk(torch.zeros(1, 3, model.input_size, model.input_size))
        self.shape = tuple(probe.shape[1:])
        self.stores = [FeatureStore(_TrunkExtractor(model, v), cache_dir, batch_size, device, dtype="float32")
                       for v in range(len(FLIP_VARIANTS))]
        # the same image array asked for again (every seed reads the training split): skip hashing its bytes.
        # The array itself is kept, so its id cannot be reused by another while the entry exists (SkinData
        # arrays are never written in place).
        self._by_array: dict[tuple[int, int], tuple[np.ndarray, torch.Tensor]] = {}

    def features(self, data: SkinData, variant: int = 0) -> torch.Tensor:
        """float32 (N, C, h, w) trunk outputs of every image of `data`, flipped as flip variant `variant`."""
        key = (id(data.images), variant)
        if key in self._by_array and self._by_array[key][0] is data.images:
            return self._by_array[key][1]
        flat = self.stores[variant].features(np.asarray(data.images), dataset=data.name)
        features = torch.from_numpy(flat).view(len(flat), *self.shape)
        self._by_array[key] = (data.images, features)
        return features

    def check(self, model: nn.Module) -> None:
        if getattr(model, "trunk_identity", lambda: None)() != self.identity:
            raise ValueError("the trunk cache was computed for another network (weights, input size or "
                             "frozen stages differ); make a TrunkCache of this one")


class _CachedDataset:
    """(trunk output, label) per image, flipped as ClassifierDataset would for (seed, epoch, index)."""

    def __init__(self, cache: TrunkCache, data: SkinData, augment: bool, seed: int):
        self.labels = data.table["label"].to_numpy(dtype=np.int64)
        variants = range(len(FLIP_VARIANTS)) if augment else [0]
        self.features = {v: cache.features(data, v) for v in variants}
        self.augment, self.seed, self.epoch = augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        variant = flip_variant(self.seed, self.epoch, index) if self.augment else 0
        return self.features[variant][index], int(self.labels[index])


# ---------------------------------------------------------------------------------------------------------
# Training


def train_classifier(train: SkinData, val: SkinData | None, cfg: ClassifierConfig, device="cpu",
                     seed: int = 0, extra: SkinData | None = None, progress=None, log=None,
                     build=None, transform=None, cache: TrunkCache | None = None):
    """Train a classifier; returns (model at its best validation epoch, history).

    build: makes the network (default: a SkinClassifier of cfg.width). It is called after seeding the global
    RNG with `seed`, so the seed fixes the initial weights as well as the data order and the flips.
    extra: more training images (e.g. GAN samples for augmentation) with labels in the same class list;
    they are appended to `train`. cfg.balance: "sampler" (class-balanced sampling), "loss" (inverse-frequency
    weighted cross-entropy) or "none". With `val`, the epoch with the best balanced accuracy is kept.
    history: list of dicts per epoch (epoch, loss, train_accuracy, val_balanced_accuracy, val_macro_f1).
    log: called with each epoch's history row as it is finished (e.g. print).
    transform: extra training-time augmentation `(image, numpy Generator) -> image` after the flips.
    cache: a TrunkCache of the network's frozen trunk: training and validation then read the trunk's outputs
    instead of running it (flips only: a `transform` cannot be cached).
    """
    if cfg.balance not in ("sampler", "loss", "none"):
        raise ValueError(f"ClassifierConfig.balance must be 'sampler', 'loss' or 'none', got {cfg.balance!r}")
    if cache is not None and transform is not None:
        raise ValueError("a trunk cache holds flipped images only: train without the cache to use a "
                         "transform")
    device = torch.device(device)
    n_classes = len(train.classes)
    model = seeded_build(build or (lambda: SkinClassifier(n_classes, cfg.width)), seed).to(device)
    if cache is not None:
        cache.check(model)
    generator = torch.Generator().manual_seed(seed)
    if extra is not None and tuple(extra.classes) != tuple(train.classes):
        raise ValueError(f"extra training data has classes {extra.classes}, expected {train.classes}")
    sources = [(train, seed)] + ([(extra, seed + 1)] if extra is not None else [])
    if cache is None:
        parts = [ClassifierDataset(d, augment=cfg.augment, seed=s, transform=transform) for d, s in sources]
    else:
        parts = [_CachedDataset(cache, d, cfg.augment, s) for d, s in sources]
    dataset = _Concat(parts)
    labels = np.concatenate([p.labels for p in parts])
    weights = _class_weights(labels, n_classes)
    if cfg.balance == "sampler":
        sampler = WeightedRandomSampler(torch.as_tensor(weights[labels]), num_samples=len(labels),
                                        replacement=True, generator=generator)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                            drop_last=len(labels) > cfg.batch_size)
    else:
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                            drop_last=len(labels) > cfg.batch_size)
    loss_weight = None
    if cfg.balance == "loss":
        loss_weight = torch.as_tensor(weights, dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=loss_weight)

    forward = model if cache is None else model.top
    trained = [p for p in model.parameters() if p.requires_grad]  # a pretrained trunk stays frozen
    optimiser = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(cfg.epochs * len(loader), 1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=cfg.lr, total_steps=steps)
    history, best, best_score = [], None, -np.inf
    if progress is None:  # a bar over the epochs (silent in batch runs) unless the caller brings its own
        def progress(items):
            return default_progress(items, desc="classifier epochs", leave=False)
    epochs = progress(range(cfg.epochs))
    for epoch in epochs:
        dataset.set_epoch(epoch)
        model.train()
        total, correct, seen = 0.0, 0, 0
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            logits = forward(inputs)
            loss = criterion(logits, targets)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(targets)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
        row = {"epoch": epoch + 1, "loss": total / max(seen, 1), "train_accuracy": correct / max(seen, 1)}
        if val is not None and len(val):
            scores = evaluate(model, val, device, cache=cache)
            row.update(val_balanced_accuracy=scores["balanced_accuracy"], val_macro_f1=scores["macro_f1"])
            if scores["balanced_accuracy"] > best_score:
                best_score, best = scores["balanced_accuracy"], copy.deepcopy(model.state_dict())
        history.append(row)
        if log is not None:
            log(row)
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return model, history


@torch.no_grad()
def predict(model: nn.Module, data: SkinData, device="cpu", batch_size: int = 256,
            cache: TrunkCache | None = None) -> np.ndarray:
    """Class probabilities (N, n_classes) for every image of `data` (from the trunk cache, if given)."""
    model.eval()
    if cache is not None:
        cache.check(model)
        inputs, forward = cache.features(data), model.top
    else:
        inputs, forward = None, model
    out = []
    for start in range(0, len(data), batch_size):
        batch = (inputs[start:start + batch_size] if inputs is not None
                 else to_model(np.array(data.images[start:start + batch_size])))
        out.append(torch.softmax(forward(batch.to(device)), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(data.classes)))


def evaluate(model: nn.Module, data: SkinData, device="cpu", cache: TrunkCache | None = None) -> dict:
    """Balanced accuracy, accuracy, macro F1, per-class recall and the confusion matrix (rows = truth)."""
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                                 recall_score)

    truth = data.table["label"].to_numpy(dtype=np.int64)
    predicted = predict(model, data, device, cache=cache).argmax(axis=1)
    classes = list(range(len(data.classes)))
    recall = recall_score(truth, predicted, labels=classes, average=None, zero_division=0)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)),
        "per_class_recall": {name: float(r) for name, r in zip(data.classes, recall)},
        "confusion_matrix": confusion_matrix(truth, predicted, labels=classes).tolist(),
        "classes": list(data.classes),
    }


# ---------------------------------------------------------------------------------------------------------
# The domain feature extractor of notebook 05, reused only for the data and settings it was trained with

CLASSIFIER_FORMAT = "dermgan.classifier/1"


def _training_record(train: SkinData, val: SkinData | None, cfg: ClassifierConfig, seed: int, data_root) -> dict:
    from dermgan.train import data_fingerprint

    return {
        "data": data_fingerprint(train, data_root),
        "val": None if val is None else data_fingerprint(val, data_root),
        "classes": list(train.classes),
        "config": dataclasses.asdict(cfg),
        "seed": int(seed),
    }


def _reason_to_retrain(path: Path, record: dict) -> str | None:
    """Why the classifier at `path` cannot be reused for `record` (None: it can)."""
    from dermgan.train import CheckpointError, first_difference, load_checkpoint

    if not path.exists():
        return "no earlier model"
    try:
        saved = load_checkpoint(path)
    except CheckpointError as error:  # a derived file: retraining replaces it
        return f"the earlier file is unreadable: {error}"
    if not isinstance(saved, dict) or saved.get("format") != CLASSIFIER_FORMAT:
        return f"{path.name} records no training data or settings (written by an older version)"
    found = first_difference(saved["record"], record)
    if found is not None:
        key, old, new = found
        return f"{path.name} was trained with {key}={old!r}, this run has {key}={new!r}"
    return None


def metrics_classifier(train: SkinData, val: SkinData | None, cfg: ClassifierConfig, path, device="cpu",
                       seed: int = 0, data_root=None) -> tuple[nn.Module, str]:
    """The domain feature extractor (a SkinClassifier) of notebook 05: (model in eval mode on the CPU, one line
    saying whether it was reused or trained, and why).

    `path` (checkpoints/metrics_classifier/model.pt) holds the weights together with what they were trained on
    (data fingerprints of the splits, class list, ClassifierConfig, seed) and the code that trained it
    (dermgan.provenance; model.training.json); a human-readable copy of that record goes to meta.json beside
    it. The file is reused only when that record matches this run exactly; otherwise the classifier is trained
    again and the file replaced (atomically), so features of one dataset or setting never come from a network
    trained on another. (Notebook 04 keeps its classifier by the same rule.)
    """
    from dermgan.train import load_checkpoint, load_weights, save_atomic, write_atomic

    path = Path(path)
    record = _training_record(train, val, cfg, seed, data_root)
    reason = _reason_to_retrain(path, record)
    if reason is None:
        model = SkinClassifier(len(train.classes), cfg.width)
        load_weights(model, load_checkpoint(path)["state_dict"], path, "classifier")
        return model.eval(), (f"metrics classifier: reused {path.parent.name}/{path.name} (trained on this data "
                             "with these settings)")
    from dermgan.provenance import continued, write_training_record

    model, history = train_classifier(train, val, cfg, device=device, seed=seed)
    model = model.cpu().eval()
    code = continued(None, 0)  # the code path and commit that trained it
    digest = save_atomic({"format": CLASSIFIER_FORMAT, "state_dict": model.state_dict(), "record": record,
                          "history": history, "code": code}, path)
    write_training_record(path, digest, record["data"], code)
    meta = {"format": CLASSIFIER_FORMAT, **record, "history": history, "code": code}
    write_atomic(path.with_name("meta.json"), lambda f: f.write(json.dumps(meta, indent=2) + "\n"), text=True)
    return model, f"metrics classifier: trained ({reason})"
