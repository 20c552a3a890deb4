"""How long a profile's series takes, and how much memory, before it runs:

    python -m dermgan list --profile paper [--dataset ham10000 --data-root DIR] [--device cuda]

Each notebook's work is counted from the profile (steps, models, seeds, epochs, sample counts) and the data's
split sizes, in units whose cost was measured at the profile's sizes by `benchmarks/bench_step_costs.py` and
kept in benchmarks/results/step_costs.json:

    <family>/<model>     one GAN training step through the loop (the profile's batch)
    classifier/<arch>    one classifier training step (the classifier section's batch)
    inception            one batch of Inception features (the metrics section's batch)
    sample/<family>      one batch of 64 generated images
    render               one synthetic image

A notebook's time is the sum of its units' counts times their measured seconds; its peak memory the largest
peak among its units' processes (resident memory on the CPU, allocated GPU memory on CUDA), plus, in host
memory, the image sets it holds (`held_images`). Only the units are priced: figures, I/O, checkpoint writes
and the metrics' arithmetic are not, so the times are lower bounds of the work that dominates. The costs are
those of the machine and load they were measured on; a device without a measured cost for a unit prices
nothing for it and says so (its notebooks' times are then marked as lower bounds ">=").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermgan.config import Profile, get_profile

COSTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "step_costs.json"
GAN_FAMILIES = ("dermgan", "melanogan", "lesion_edit")
SAMPLE_BATCH = 64  # the batch of the sample/* units (dg.generate, mg.sample_images)


@dataclass(frozen=True)
class Counts:
    """What the work of a series depends on besides the profile: the data's split sizes and what it holds."""

    n_train: int
    n_val: int
    n_test: int
    masks: bool  # lesion masks (02, 04, 06 run)
    healthy: bool  # healthy twins (04 trains every method, 04's classifier check)
    melanoma_train: int  # training melanomas (03's melanoma-only models need a batch of them)
    synthetic: bool


@dataclass
class Work:
    """unit x count: `count` steps of the unit (GAN steps, batches) or, for image units, images."""

    unit: str
    count: float
    images: bool = False  # count is in images, priced at the unit's seconds per image
    upper: bool = False  # the count includes work a cache skips: the price is an upper bound


@dataclass
class NotebookEstimate:
    notebook: str
    seconds: float = 0.0
    peak_mb: float = 0.0
    held_mb: float = 0.0  # data the notebook holds beside its largest unit (05's image sets)
    units: list[str] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)
    upper: bool = False  # some of its work is priced from above (Work.upper)


def counts_of(profile: Profile, dataset: str = "synthetic", table=None) -> Counts:
    """The split sizes a run of `profile` gets: the synthetic dataset's from its labels and splits (no pixel
    drawn), a real one's from its record table."""
    from dermgan.data.conditions import CONDITION_NAMES

    if dataset == "synthetic":
        from dermgan.data.dataset import synthetic_labels_and_splits

        data = profile.data
        labels, splits = synthetic_labels_and_splits(data.n_images, 0, data.val_fraction, data.test_fraction)
        melanoma = CONDITION_NAMES.index("melanoma")
        n = {split: int((splits == split).sum()) for split in ("train", "val", "test")}
        return Counts(n["train"], n["val"], n["test"], True, True,
                      int(((splits == "train") & (labels == melanoma)).sum()), True)
    split = table["split"].to_numpy()
    is_melanoma = table["condition"].astype(str).str.lower().isin(("melanoma", "mel")).to_numpy()
    return Counts(int((split == "train").sum()), int((split == "val").sum()), int((split == "test").sum()),
                  "mask_path" in table, False, int(((split == "train") & is_melanoma).sum()), False)


# ---------------------------------------------------------------------------------------------- the work

def work_of(notebook: str, p: Profile, c: Counts) -> list[Work]:
    """The priced work of one notebook (its number, "02") for profile p on data counted by c."""
    return WORK.get(notebook, lambda p, c: [])(p, c)


def _render(p: Profile, c: Counts) -> list[Work]:
    return [Work("render", p.data.n_images, images=True)] if c.synthetic else []


def _dermgan(p: Profile, c: Counts) -> list[Work]:
    from dermgan.models.dermgan import variants

    if not c.masks:
        return []
    cfg = p.dermgan
    work = [Work("dermgan/dermgan", cfg.steps)]
    work += [Work(f"dermgan/{name}", cfg.seeds * cfg.ablation_steps) for name in variants(cfg)]
    runs = 1 + cfg.seeds * len(variants(cfg))
    steps = p.compare.steps or cfg.steps
    for name, n_runs in _compared_runs(p).items():
        work.append(Work("oasis/oasis" if name == "oasis" else f"dermgan/{name}", n_runs * steps))
        runs += n_runs
    n_eval = min(cfg.n_eval or c.n_test, c.n_test)
    return work + [Work("sample/dermgan", runs * n_eval, images=True)]


def _compared_runs(p: Profile) -> dict[str, int]:
    """02's comparison: runs of dermgan and of each compared model over compare.seeds, beyond the main run (one
    of them when the comparison keeps the main schedule)."""
    same_schedule = (p.compare.steps or p.dermgan.steps) == p.dermgan.steps
    runs = {name: p.compare.seeds - (1 if name == "dermgan" and same_schedule else 0)
            for name in ["dermgan", *p.compare.model_names]}
    return {name: n for name, n in runs.items() if n > 0}


def _melanogan_models(p: Profile, c: Counts) -> list[str]:
    from dermgan.models.melanogan import model_names

    return model_names(p.melanogan, with_melanoma=c.melanoma_train >= p.melanogan.batch_size)


def _melanogan(p: Profile, c: Counts) -> list[Work]:
    from dermgan.models.melanogan import parse_model

    models = _melanogan_models(p, c)
    work = [Work(f"melanogan/{parse_model(name).kind}", p.melanogan.steps) for name in models]
    work.append(Work("sample/melanogan", len(models) * p.metrics.n_samples, images=True))
    if p.metrics.inception:  # the diversity check: every model's samples and the real images of each kind
        kinds = 2 if any(name.endswith("-melanoma") for name in models) else 1
        work.append(Work("inception", (len(models) + kinds) * p.metrics.n_samples, images=True))
    return work


def _lesion_edit(p: Profile, c: Counts) -> list[Work]:
    from dermgan.models.lesion_edit import METHODS

    if not c.masks:
        return []
    cfg = p.lesion_edit
    work = [Work(f"lesion_edit/{name}", cfg.steps) for name in (METHODS if c.healthy else ("masked",))]
    if c.healthy:  # the classifier that checks the added conditions
        work.append(Work("classifier/small", cfg.classifier_epochs * (c.n_train + c.n_val), images=True))
    return work


def _sets_of_05(p: Profile, c: Counts, melanogan: bool = True) -> list[int]:
    """Image counts of the sets 05 scores: the real reference, three test-split references, the main DermGAN
    and 02's compared runs, and (with `melanogan`) every MelanoGAN model."""
    n = p.metrics.n_samples
    sets = [min(n, c.n_train)] + [min(n, c.n_test)] * 3
    if c.masks:
        n_model = min(n, p.dermgan.n_eval or c.n_test, c.n_test)
        sets += [n_model] * (1 + sum(_compared_runs(p).values()))
    return sets + ([n] * len(_melanogan_models(p, c)) if melanogan else [])


def _metrics(p: Profile, c: Counts) -> list[Work]:
    work = [Work("classifier/small", p.classifier.epochs * (c.n_train + c.n_val), images=True)]
    if p.metrics.inception:  # the MelanoGAN sets' features are in the run's cache: 03 computed them
        work.append(Work("inception", sum(_sets_of_05(p, c, melanogan=False)), images=True))
    return work


def _controllability(p: Profile, c: Counts) -> list[Work]:
    return [Work("sample/dermgan", p.controllability.n_probe, images=True)] if c.masks else []


def _augmentation(p: Profile, c: Counts) -> list[Work]:
    """07: seven arms (real, its A/A copy, classic, oversample, DermGAN, synthetic-only, MelanoGAN) and the
    imbalance protocol's four base arms plus one per melanoma-only model (plus one per candidate cut when the
    cut is chosen on validation), each `seeds` classifiers of `epochs` epochs over the training split (top-ups
    not counted) and the validation split; and the small CNN's baseline row. The OOD test is not priced."""
    aug = p.augmentation
    melanoma_models = sum(name.endswith("-melanoma") for name in _melanogan_models(p, c))
    candidates = len(aug.keep_candidates) if aug.melanoma_keep is None else 0
    arms = 7 + (4 + melanoma_models + candidates if c.melanoma_train else 0)
    # A pretrained network's frozen trunk runs once per image and flip (classify.TrunkCache), not once per
    # epoch and seed as priced here; its unit is a whole-network step, so the price is an upper bound
    work = [Work(f"classifier/{aug.architecture}", arms * aug.seeds * (aug.epochs * (c.n_train + c.n_val) + c.n_test),
                 images=True, upper=aug.architecture != "small")]
    if aug.small_baseline and aug.architecture != "small":  # the small CNN's baseline row beside it
        work.append(Work("classifier/small", aug.seeds * (aug.small_epochs * (c.n_train + c.n_val) + c.n_test),
                         images=True))
    return work


def _turing(p: Profile, c: Counts) -> list[Work]:
    models = len(_melanogan_models(p, c)) + (1 if c.masks else 0)
    return [Work("classifier/small", models * p.turing.c2st_steps * p.classifier.batch_size, images=True)]


WORK = {"01": _render, "02": _dermgan, "03": _melanogan, "04": _lesion_edit, "05": _metrics,
        "06": _controllability, "07": _augmentation, "08": _turing}


# ---------------------------------------------------------------------------------------------- pricing

def load_costs(path: Path = COSTS) -> dict:
    """The measured unit costs per profile, then per device: {"paper": {"cpu": entry, "cuda:...": entry}, ...}
    (see benchmarks/bench_step_costs.py); {} when none were measured."""
    try:
        return json.loads(Path(path).read_text())["profiles"]
    except (OSError, ValueError, KeyError):
        return {}


def device_entry(costs: dict, device) -> tuple[str | None, dict]:
    """(key, entry) of the measured costs for `device` (a torch.device): the same card, else another card of
    the same kind ('cuda:...'), else none."""
    import torch

    if device.type == "cuda":
        wanted = f"cuda:{torch.cuda.get_device_name(device)}"
        if wanted in costs:
            return wanted, costs[wanted]
        for key, entry in costs.items():
            if key.startswith("cuda:"):
                return key, entry
        return None, {}
    return (device.type, costs[device.type]) if device.type in costs else (None, {})


def price(notebook: str, work: list[Work], units: dict, held_mb: float = 0.0) -> NotebookEstimate:
    found = NotebookEstimate(notebook, held_mb=held_mb)
    for item in work:
        used = item.unit if item.unit in units else _stand_in(item.unit)
        if used not in units:
            found.unmeasured.append(item.unit)
            continue
        cost = units[used]
        found.seconds += item.count * (cost["s_per_image"] if item.images else cost["s_per_step"])
        found.peak_mb = max(found.peak_mb, cost["peak_mb"])
        found.units.append(used)
        found.upper = found.upper or item.upper
    found.units = list(dict.fromkeys(found.units))
    found.unmeasured = list(dict.fromkeys(found.unmeasured))
    return found


# Units priced as another when they have no measured cost of their own: DermGAN's ablation variants (one
# switch away from it) as DermGAN.
STAND_INS = {"dermgan": "dermgan/dermgan"}


def _stand_in(unit: str) -> str:
    return STAND_INS.get(unit.partition("/")[0], unit)


def held_images(number: str, p: Profile, c: Counts) -> int:
    """Images a notebook keeps in memory at once besides the dataset's memory-mapped cache: 02 every run's
    samples, 03 every model's, 05 every scored set, 07 the synthetic-only arm's regenerated training split."""
    from dermgan.models.dermgan import variants

    if number == "02" and c.masks:
        return (1 + p.dermgan.seeds * len(variants(p.dermgan))) * min(p.dermgan.n_eval or c.n_test, c.n_test)
    if number == "03":
        return len(_melanogan_models(p, c)) * p.metrics.n_samples
    if number == "05":
        return sum(_sets_of_05(p, c))
    if number == "07" and c.masks:
        return c.n_train
    return 0


def estimate(profile: Profile, counts: Counts, notebooks: list[str], units: dict) -> list[NotebookEstimate]:
    """Per notebook (names as "05_metrics"), its priced work with the measured `units` of one device, and the
    images it holds (uint8, image_size^2 x 3 bytes each)."""
    image_mb = profile.data.image_size ** 2 * 3 / 2**20
    return [price(name, work_of(name[:2], profile, counts), units,
                  held_images(name[:2], profile, counts) * image_mb) for name in notebooks]


# ---------------------------------------------------------------------------------------------- report

def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= 1.5 * size or unit == "min":
            value = seconds / size
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{seconds:.0f} s"


def memory(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def device_key(device) -> str:
    """How step_costs.json names a device: 'cpu', or 'cuda:<card name>'."""
    import torch

    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def report(profile: Profile, counts: Counts, notebooks: list[str], device, costs: dict | None = None,
           source: Path = COSTS) -> list[str]:
    """The lines `list --profile` prints: where the costs were measured, one line per notebook, the total.
    `costs` as `load_costs` returns them: only the profile's own are used (other sizes, other costs)."""
    costs = load_costs(source) if costs is None else costs
    key, entry = device_entry(costs.get(profile.name, {}), device)
    data = (f"{'synthetic' if counts.synthetic else 'real'} data: {counts.n_train:,} train / "
            f"{counts.n_val:,} val / {counts.n_test:,} test images at {profile.data.image_size} px")
    lines = [f"{profile.name} profile on {device_key(device)} ({data})"]
    if entry:
        lines.append("unit costs: " + measured_where(key, entry)
                     + ("" if key == device_key(device) else " -- another card than this one"))
        measured_size = get_profile(entry.get("profile", profile.name)).data.image_size
        if measured_size != profile.data.image_size:  # a real dataset's fitted size (dermgan.data.sizes)
            lines.append(f"(costs measured at {measured_size} px, this run is at {profile.data.image_size} "
                         "px: the times are upper bounds)")
    else:
        measured = [f"{name} on {key}" for name, devices in costs.items() for key in devices]
        lines.append(f"no unit costs of the {profile.name} profile measured on {device_key(device)} "
                     f"(measured: {', '.join(measured) or 'none'}); run benchmarks/bench_step_costs.py "
                     f"--profile {profile.name} on this machine to price its units")
    on_gpu = device.type == "cuda"  # 05's image sets are in host memory, not on the GPU
    found = estimate(profile, counts, notebooks, entry.get("units", {}))
    peak_of = "peak GPU memory" if on_gpu else "peak memory"
    lines.append(f"{'notebook':<26} {'time':>12}  {peak_of:>15}  priced as")
    for item in found:
        time = duration(item.seconds) if item.units else "-"
        if item.unmeasured:
            time = f">= {time}" if item.units else "not measured"
        elif item.upper:
            time = f"<= {time}"
        peak = memory(item.peak_mb + (0 if on_gpu else item.held_mb)) if item.units else "-"
        priced = ", ".join(item.units) or "-"
        if item.held_mb >= 1 and not on_gpu:
            priced += f"; {memory(item.held_mb)} of image sets held"
        if item.unmeasured:
            priced += f"; not measured here: {', '.join(item.unmeasured)}"
        if item.upper:
            priced += "; an upper bound (a cached frozen trunk is priced as trained every epoch)"
        lines.append(f"{item.notebook:<26} {time:>12}  {peak:>15}  {priced}")
    peaks = [item.peak_mb + (0 if on_gpu else item.held_mb) for item in found if item.units]
    total = duration(sum(item.seconds for item in found)) if peaks else "not measured"
    if peaks and any(item.unmeasured for item in found):
        total = f">= {total}"
    elif peaks and any(item.upper for item in found):
        total = f"<= {total}"
    lines.append(f"{'total':<26} {total:>12}  "
                 f"{memory(max(peaks)) if peaks else '-':>15}  (training, sampling and features; figures, "
                 "I/O and checkpoints are not priced)")
    return lines


def measured_where(key: str, entry: dict) -> str:
    """'cpu (Intel ..., 2 cores, 1 torch thread, load 6.6-7.1) at commit abc1234 by <source>'."""
    machine = entry.get("machine", {})
    loads = sorted(u["load_1min"] for u in entry["units"].values() if u.get("load_1min") is not None)
    load = f", load {loads[0]:g}-{loads[-1]:g}" if loads else ""
    return (f"{key} ({machine.get('cpu')}, {machine.get('cores')} cores, {entry.get('torch_threads')} torch "
            f"thread(s){load}) at {entry.get('profile')}-profile sizes, commit "
            f"{str(entry.get('commit'))[:7]}, by {entry.get('source')}")


def estimate_command(profile_name: str, dataset: str, data_root, device: str, notebooks_dir: Path) -> int:
    """`python -m dermgan list --profile P [--dataset D --data-root R] [--device X]`: print the estimate of
    every notebook of the series. A real dataset's split sizes come from its record table (no pixel decoded)
    and its image size is fitted as a run would fit it (dermgan.data.sizes)."""
    from dermgan.config import get_profile
    from dermgan.data.sizes import fit_image_size
    from dermgan.pipeline import list_notebooks
    from dermgan.runtime import pick_device

    profile, table = get_profile(profile_name), None
    if dataset != "synthetic":
        from dermgan.data.sources import SourceError, read_records

        if data_root is None:
            raise ValueError(f"dataset {dataset} is read from a folder: give --data-root")
        data = profile.data
        try:
            table = read_records(dataset, data_root, n_images=data.real_images,
                                 val_fraction=data.val_fraction, test_fraction=data.test_fraction)
        except SourceError as error:
            raise ValueError(str(error).splitlines()[0]) from None
        profile = fit_image_size(profile, dataset, data_root, explicit=False, table=table)
    names = [nb.stem for nb in list_notebooks(notebooks_dir)]
    for line in report(profile, counts_of(profile, dataset, table), names, pick_device(device)):
        print(line)
    return 0
