"""Training and evaluation of the small skin-condition CNN (dermgan.models.classifier.SkinClassifier)."""

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
from dermgan.data.dataset import ClassifierDataset, SkinData
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


def train_classifier(train: SkinData, val: SkinData | None, cfg: ClassifierConfig, device="cpu",
                     seed: int = 0, extra: SkinData | None = None, progress=None, log=None,
                     model: nn.Module | None = None, transform=None):
    """Train a SkinClassifier from scratch; returns (model at its best validation epoch, history).

    extra: more training images (e.g. GAN samples for augmentation) with labels in the same class list;
    they are appended to `train`. cfg.balance: "sampler" (class-balanced sampling), "loss" (inverse-frequency
    weighted cross-entropy) or "none". With `val`, the epoch with the best balanced accuracy is kept.
    history: list of dicts per epoch (epoch, loss, train_accuracy, val_balanced_accuracy, val_macro_f1).
    log: called with each epoch's history row as it is finished (e.g. print).
    model: the network to train (default: a SkinClassifier of cfg.width); its weights are used as given.
    transform: extra training-time augmentation `(image, numpy Generator) -> image` after the flips.
    """
    if cfg.balance not in ("sampler", "loss", "none"):
        raise ValueError(f"ClassifierConfig.balance must be 'sampler', 'loss' or 'none', got {cfg.balance!r}")
    device = torch.device(device)
    n_classes = len(train.classes)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    parts = [ClassifierDataset(train, augment=cfg.augment, seed=seed, transform=transform)]
    if extra is not None:
        if tuple(extra.classes) != tuple(train.classes):
            raise ValueError(f"extra training data has classes {extra.classes}, expected {train.classes}")
        parts.append(ClassifierDataset(extra, augment=cfg.augment, seed=seed + 1, transform=transform))
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

    model = (SkinClassifier(n_classes, cfg.width) if model is None else model).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
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
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            logits = model(images)
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
            scores = evaluate(model, val, device)
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
def predict(model: nn.Module, data: SkinData, device="cpu", batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, n_classes) for every image of `data`."""
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        batch = to_model(np.array(data.images[start:start + batch_size])).to(device)
        out.append(torch.softmax(model(batch), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(data.classes)))


def evaluate(model: nn.Module, data: SkinData, device="cpu") -> dict:
    """Balanced accuracy, accuracy, macro F1, per-class recall and the confusion matrix (rows = truth)."""
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                                 recall_score)

    truth = data.table["label"].to_numpy(dtype=np.int64)
    predicted = predict(model, data, device).argmax(axis=1)
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
    (data fingerprints of the splits, class list, ClassifierConfig, seed); a human-readable copy of that record
    goes to meta.json beside it. The file is reused only when that record matches this run exactly; otherwise
    the classifier is trained again and the file replaced (atomically), so features of one dataset or setting
    never come from a network trained on another.
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
    model, history = train_classifier(train, val, cfg, device=device, seed=seed)
    model = model.cpu().eval()
    save_atomic({"format": CLASSIFIER_FORMAT, "state_dict": model.state_dict(), "record": record,
                 "history": history}, path)
    meta = {"format": CLASSIFIER_FORMAT, **record, "history": history}
    write_atomic(path.with_name("meta.json"), lambda f: f.write(json.dumps(meta, indent=2) + "\n"), text=True)
    return model, f"metrics classifier: trained ({reason})"
