"""A labelled dataset, or one image, from a trained generator: `python -m dermgan synthesize`.

    synthesize("runs/cpu/checkpoints/dermgan", "my_data", n=50)     # 50 per condition x Fitzpatrick type
    image, mask = one_image("runs/cpu/checkpoints/dermgan", "melanoma", size=0.08, x=0.4, y=0.6, skin=5)

Families. A checkpoint's recipe metadata says which family wrote it (`FAMILIES`): a map-conditioned model
(DermGAN, pix2pix and the other models `dermgan.models.dermgan.evaluated_generator` loads) turns semantic maps
into images; an unconditional one (the MelanoGAN baselines, Furger et al.'s model) turns noise into lesions of
the one class it was trained on. A new family is one more `Family` row.

Maps. New maps are drawn as notebook 07 draws them (`augmentation_experiment.draw_maps`): the lesion of a
training image of the condition (size and position; on the synthetic catalogue a new lesion of that
condition's shape), the skin layout of another training image, re-toned to each Fitzpatrick type asked for
with the median skin colour of that type in the training data (colours the generator saw). They need the run
directory the checkpoint was trained in (its run.json names the data), and the data must be the data it was
trained on.

Output. One folder, written as a whole into a temporary sibling and renamed into place (a killed run leaves no
half dataset under the name): images/<label>/<id>.png, masks/<id>.png (lesion 255, else 0), maps/<id>.png (the
colour-coded semantic map), labels.csv in the layout the `folder` reader reads (`--dataset folder --data-root
<output>`: columns image, label, mask; fitzpatrick, skin_r/g/b, lesion_area, centroid_x/y describe the map),
and provenance.json (the checkpoint, its SHA-256 and what it records of its training, the seed, the settings).
The same checkpoint, seed and settings give the same files.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

MADE_BY = "dermgan synthesize"
PROVENANCE = "provenance.json"
LABELS = "labels.csv"
UNCONDITIONAL_LABELS = ("lesion", "melanoma")  # an unconditional model's images: any lesion, or melanoma only


class SynthesisError(ValueError):
    """A request synthesize cannot carry out; the message names what is wrong and the way out."""


# ---------------------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """How to recognise a checkpoint's kind of model from its recipe metadata, and load it (G, metadata)."""

    name: str
    conditioned: bool  # reads a semantic map
    recognises: Callable[[dict], bool]
    load: Callable[..., tuple]  # (checkpoint_dir, device) -> (generator in eval mode, metadata)


def _load_map_model(folder: Path, device):
    from dermgan.models.dermgan import evaluated_generator

    # a user's checkpoint, with no run whose training data it could be checked against; the data it was
    # trained on is recorded in what synthesize writes (meta["training"])
    return evaluated_generator(folder, device=device, trained_on=None)


def _load_noise_model(folder: Path, device):
    from dermgan.models.melanogan import load_generator

    return load_generator(folder, device=device)


FAMILIES = (
    Family("map-conditioned", True, lambda meta: "variant" in meta, _load_map_model),
    Family("unconditional", False, lambda meta: "kind" in meta, _load_noise_model),
)


@dataclass
class Generator:
    """A trained generator ready to sample, with what its checkpoint says about it."""

    family: Family
    network: object  # torch.nn.Module in eval mode
    meta: dict  # recipe metadata (+ "evaluation" / "weights": which weights are evaluated)
    path: Path  # generator.pt
    record: dict  # the checkpoint's plain entries: step, recipe, provenance (data fingerprint, ...)
    device: object

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def encoding(self) -> str:
        return self.meta["variant"]["encoding"]


def generator_file(checkpoint: str | os.PathLike) -> Path:
    """generator.pt of a checkpoint folder (or the file itself); a missing one is a one-line refusal."""
    path = Path(checkpoint).expanduser()
    path = path / "generator.pt" if path.is_dir() else path
    if not path.is_file():
        raise SynthesisError(f"{checkpoint}: no generator.pt there; give a checkpoint folder written by "
                             "training, e.g. runs/cpu/checkpoints/dermgan")
    return path


def load(checkpoint: str | os.PathLike, device: str = "auto") -> Generator:
    """The evaluated generator of a checkpoint folder (or generator.pt), of whichever family wrote it."""
    from dermgan.runtime import pick_device
    from dermgan.train import load_checkpoint

    path = generator_file(checkpoint)
    saved = load_checkpoint(path)  # its SHA-256 is checked first
    meta = saved.get("recipe") if isinstance(saved, dict) else None
    family = next((f for f in FAMILIES if isinstance(meta, dict) and f.recognises(meta)), None)
    if family is None:
        known = ", ".join(f.name for f in FAMILIES)
        raise SynthesisError(f"{path} is not a generator of a known family ({known}); give the checkpoint "
                             "folder of a trained generator")
    chosen = pick_device(device)
    network, meta = family.load(path.parent, chosen)
    return Generator(family, network, meta, path, plain_entries(saved), chosen)


def plain_entries(saved: dict) -> dict:
    """The entries of a checkpoint that are plain values (step, recipe, provenance, ...), without weights."""
    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    return {key: value for key, value in saved.items() if plain(value)}


# ---------------------------------------------------------------------------------------------- one image


def one_image(checkpoint, condition, size: float = 0.05, x: float = 0.5, y: float = 0.5, skin=3,
              seed: int = 0, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (H,W,3) image, bool (H,W) lesion mask): one lesion of `condition` (a class name or index)
    covering `size` of the image (area fraction in (0, 1)), centred at (x, y) (fractions of width and height),
    on skin of Fitzpatrick type `skin` (1..6) or an RGB colour (3 values 0..255), from a map-conditioned
    checkpoint (a folder, its generator.pt, or a `load`ed Generator). Deterministic for a seed."""
    from dermgan.data.semantic import SemanticMap

    model = checkpoint if isinstance(checkpoint, Generator) else load(checkpoint, device)
    if not model.family.conditioned:
        raise SynthesisError(f"{model.path} is an unconditional model: it takes no condition, size or "
                             "position; sample it with `python -m dermgan synthesize`")
    with warnings.catch_warnings():  # a scattered shape (acne) reaches another area: the mask says which
        warnings.simplefilter("ignore")
        semantic = SemanticMap.blank(model.image_size, skin, classes=classes_of(model)).add_lesion(
            condition, size, x, y, seed=seed)
    return generate_from_maps(model, [semantic], seed)[0], semantic.lesion_mask()


def classes_of(model: Generator, train=None) -> tuple[str, ...]:
    """The class names a map-conditioned generator knows, in its class order: the training data's (when
    given), the synthetic catalogue for a model of the synthetic data, else the names its run directory's
    dataset records (read without a pixel)."""
    from dermgan.data.conditions import CONDITION_NAMES

    if train is not None:
        return tuple(train.classes)
    data = (model.record.get("provenance") or {}).get("dataset", "synthetic")
    if data == "synthetic" and model.meta["n_conditions"] == len(CONDITION_NAMES):
        return CONDITION_NAMES
    run = run_of(model)
    from dermgan.data.sources import read_records

    table = read_records(run["dataset"], run["data_root"])
    names = table.drop_duplicates("label").set_index("label")["condition"]
    return tuple(str(names.get(i, i)) for i in range(model.meta["n_conditions"]))


def generate_from_maps(model: Generator, maps: list, seed: int, batch_size: int = 64) -> np.ndarray:
    """Images uint8 (N,H,W,3) for SemanticMaps; torch's generator is seeded with `seed` inside (and restored
    after), so a family that draws noise at sampling time gives the same images again."""
    import torch

    from dermgan.data.semantic import encode_maps
    from dermgan.models.dermgan import generate

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return generate(model.network, encode_maps(maps, model.encoding), batch_size, model.device)


# ---------------------------------------------------------------------------------------------- a dataset


@dataclass(frozen=True)
class Request:
    """What to synthesize, checked before anything is loaded or written."""

    n: int  # images per condition x Fitzpatrick type (an unconditional model: images in all)
    conditions: tuple[str, ...] | None  # None: every class
    fitzpatrick: str  # "all" (every type in the training data), "none" (skin as drawn), or "1,3,6"
    seed: int
    batch_size: int

    def __post_init__(self):
        for name, least in (("n", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise SynthesisError(f"{name} must be an integer >= {least}, got {value!r}")
        if self.conditions is not None:
            bad = [c for c in self.conditions if not isinstance(c, str) or not c]
            if bad or not self.conditions:
                raise SynthesisError(f"conditions are class names, got {list(self.conditions)!r}")
        types = self.fitzpatrick_types()
        if types is not None and (not types or not all(1 <= t <= 6 for t in types)):
            raise SynthesisError(f"fitzpatrick is 'all', 'none' or types 1..6 such as '1,3,6', got "
                                 f"{self.fitzpatrick!r}")

    def fitzpatrick_types(self) -> list[int] | None:
        """The types asked for by number; None for "all" / "none" (decided by the data)."""
        if self.fitzpatrick in ("all", "none"):
            return None
        try:
            return sorted({int(part) for part in str(self.fitzpatrick).split(",")})
        except ValueError:
            return []


def synthesize(checkpoint, output, n: int = 10, conditions=None, fitzpatrick: str = "all", seed: int = 0,
               batch_size: int = 64, device: str = "auto", overwrite: bool = False, run_dir=None,
               log=print) -> Path:
    """Write a labelled dataset made by the generator of `checkpoint` into the folder `output` (see the
    module's docstring); returns the folder. Refused in one line, before anything is written: a bad number,
    an unknown condition or Fitzpatrick type, a non-empty `output` (unless `overwrite`, and then only a folder
    this command wrote), a checkpoint without its run directory, or data other than its training data."""
    from dermgan.runtime import progress
    from dermgan.train import remove_stale_temps, temp_name

    if isinstance(conditions, str):
        conditions = tuple(c.strip() for c in conditions.split(","))
    conditions = None if conditions is None else tuple(conditions)
    request = Request(n, conditions, str(fitzpatrick), seed, batch_size)
    output = Path(output).expanduser().resolve()
    check_output(output, overwrite)
    model = load(checkpoint, device)
    if model.family.conditioned:
        train = training_split(model, run_dir)
        plan = map_plan(model, train, request)
    else:
        plan = noise_plan(model, request)
    log(f"synthesize: {plan.size} images ({plan.describe}) from {model.path} -> {output}")
    temp = temp_name(output)
    remove_stale_temps(output.parent)  # a killed run's half dataset
    try:
        rows = []
        for part in progress(plan.parts(), total=plan.n_parts, desc="synthesize", unit="batch"):
            rows += write_part(temp, part)
        table = pd.DataFrame(rows)
        (temp / LABELS).write_text(table.to_csv(index=False, float_format="%.4f"))
        record = provenance(model, request, plan, run_dir)
        (temp / PROVENANCE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        publish(temp, output)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return output


def check_output(output: Path, overwrite: bool) -> None:
    """The output must be new, empty, or (with `overwrite`) a folder this command wrote."""
    if output.exists() and not output.is_dir():
        raise SynthesisError(f"output {output} is a file; give a folder")
    if not output.exists() or not any(output.iterdir()):
        return
    if not overwrite:
        raise SynthesisError(f"output {output} is not empty; give a new folder, or --overwrite to replace a "
                             "dataset synthesize wrote there")
    try:
        made_by = json.loads((output / PROVENANCE).read_text()).get("made_by")
    except (OSError, ValueError, AttributeError):
        made_by = None
    if made_by != MADE_BY:
        raise SynthesisError(f"output {output} holds files synthesize did not write (no {PROVENANCE} of its "
                             "own); --overwrite replaces only its own datasets: give a new folder")


def publish(temp: Path, output: Path) -> None:
    """Move the finished dataset into place; a dataset replaced by --overwrite is deleted only afterwards."""
    from dermgan.train import temp_name

    if output.exists() and any(output.iterdir()):
        aside = Path(f"{temp_name(output)}-replaced")  # a kill now leaves it to remove_stale_temps
        os.rename(output, aside)
        os.rename(temp, output)
        shutil.rmtree(aside)
    else:
        os.replace(temp, output)  # a new name, or an empty folder


def run_of(model: Generator, run_dir=None) -> dict:
    """The run.json of the run directory the checkpoint was trained in (default: two folders above its
    folder, runs/<name>/checkpoints/<model>)."""
    from dermgan.runtime import read_run_record

    folder = Path(run_dir).expanduser() if run_dir else model.path.parent.parent.parent
    record = read_run_record(folder)
    if record is None:
        raise SynthesisError(f"no run.json in {folder}: new maps are drawn from the training data of the run "
                             f"directory {model.path.parent.name} was trained in; give it with --run-dir")
    return {**record, "run_dir": str(folder.resolve())}


def training_split(model: Generator, run_dir=None):
    """The training split the generator was trained on, from its run directory, checked against the data
    fingerprint in its checkpoint."""
    from dermgan.config import get_profile
    from dermgan.data import load_for_run
    from dermgan.runtime import RunContext
    from dermgan.train import check_provenance, data_fingerprint

    run = run_of(model, run_dir)
    profile = get_profile(run["profile"]).replace(data=run["data"])
    ctx = RunContext(profile, Path(run["run_dir"]), model.device, run["seed"], run["dataset"],
                     run["data_root"])
    train = load_for_run(ctx).split("train")
    check_provenance(model.path, data_fingerprint(train, run["data_root"]))
    return train


@dataclass
class Plan:
    """The images to make, as parts of at most one batch each: (ids, labels, images thunk, maps or None)."""

    size: int
    describe: str
    parts: Callable
    n_parts: int
    settings: dict


def map_plan(model: Generator, train, request: Request) -> Plan:
    """request.n maps per condition x Fitzpatrick type drawn from the training data (draw_maps)."""
    from dermgan.augmentation_experiment import draw_maps
    from dermgan.data.semantic import fitzpatrick_palette

    classes = classes_of(model, train)
    wanted = list(request.conditions or classes)
    unknown = [c for c in wanted if c not in classes]
    if unknown:
        raise SynthesisError(f"unknown condition {', '.join(map(repr, unknown))}; this generator knows: "
                             f"{', '.join(classes)}")
    labels = train.table["label"].to_numpy(np.int64)
    absent = [c for c in wanted if not (labels == classes.index(c)).any()]
    if absent:
        raise SynthesisError(f"no training image of {', '.join(absent)} to draw its lesions from")
    typed = train.table["fitzpatrick"].notna().any()
    palette = fitzpatrick_palette(train.table) if typed else {}
    types = request.fitzpatrick_types()
    if request.fitzpatrick == "all":
        types = sorted(palette) or None
    missing = [t for t in types or [] if t not in palette]
    if missing:
        have = ", ".join(map(str, sorted(palette))) or "none"
        raise SynthesisError(f"Fitzpatrick type {', '.join(map(str, missing))} has no training image with "
                             f"its skin colour (types in the data: {have}); ask for those, or --fitzpatrick "
                             "none")
    per_class = request.n * (len(types) if types else 1)

    def parts():
        for c in wanted:  # one class at a time: at most per_class maps in memory
            label = classes.index(c)
            class_seed = int(np.random.SeedSequence([request.seed, label]).generate_state(1)[0])
            maps, _, donors = draw_maps(train, {label: per_class}, class_seed)
            tone = [types[k // request.n] if types else None for k in range(per_class)]
            maps = [m if t is None else m.with_skin(palette[t]) for m, t in zip(maps, tone)]
            donor_types = pd.array(train.table["fitzpatrick"], dtype="Int64")[donors]
            for start in range(0, per_class, request.batch_size):
                chunk = range(start, min(per_class, start + request.batch_size))
                batch = [maps[k] for k in chunk]
                fitz = [tone[k] if types else (None if pd.isna(donor_types[k]) else int(donor_types[k]))
                        for k in chunk]
                ids = [f"{c}-fitz{tone[k]}-{k % request.n:05d}" if types else f"{c}-{k:05d}" for k in chunk]
                yield Part(ids, [c] * len(batch), fitz, lambda b=batch, s=class_seed + start:
                           generate_from_maps(model, b, s, request.batch_size), batch)

    n_parts = len(wanted) * -(-per_class // request.batch_size)
    cells = f"{request.n} per condition x Fitzpatrick type {', '.join(map(str, types))}" if types else \
        f"{request.n} per condition, skin as drawn from the training images"
    return Plan(len(wanted) * per_class, cells, parts, n_parts,
                {"conditions": wanted, "fitzpatrick": types, "per_condition": per_class})


def noise_plan(model: Generator, request: Request) -> Plan:
    """request.n images of the one class an unconditional model was trained on."""
    from dermgan.models.melanogan import sample_images

    if request.conditions is not None or request.fitzpatrick_types() is not None:
        raise SynthesisError(f"{model.path} is an unconditional model: it makes {label_of(model)} images "
                             "only; leave out --conditions and --fitzpatrick")
    label = label_of(model)

    def parts():
        for start in range(0, request.n, request.batch_size):
            count = min(request.batch_size, request.n - start)
            ids = [f"{label}-{k:05d}" for k in range(start, start + count)]
            yield Part(ids, [label] * count, [None] * count, lambda first=start, count=count: sample_images(
                model.network, count, request.seed, request.batch_size, model.device, first=first), None)

    return Plan(request.n, f"{request.n} {label} images", parts, -(-request.n // request.batch_size),
                {"conditions": [label], "fitzpatrick": None})


def label_of(model: Generator) -> str:
    return UNCONDITIONAL_LABELS[bool(model.meta.get("melanoma_only"))]


@dataclass
class Part:
    """One batch: image ids, labels, Fitzpatrick types (None: unknown), the images (made on demand) and the
    semantic maps they come from (None for an unconditional model)."""

    ids: list[str]
    labels: list[str]
    fitzpatrick: list[int | None]
    images: Callable[[], np.ndarray]
    maps: list | None


def write_part(folder: Path, part: Part) -> list[dict]:
    """The PNGs of one batch; returns their rows of labels.csv."""
    images = part.images()
    rows = []
    for k, (image_id, label, fitz) in enumerate(zip(part.ids, part.labels, part.fitzpatrick)):
        row = {"image": f"images/{label}/{image_id}.png", "label": label}
        write_png(folder / row["image"], images[k])
        if part.maps is not None:
            semantic = part.maps[k]
            lesion = semantic.lesion_mask()
            row.update(mask=f"masks/{image_id}.png", semantic_map=f"maps/{image_id}.png")
            write_png(folder / row["mask"], lesion.astype(np.uint8) * 255)
            write_png(folder / row["semantic_map"], semantic.render())
            yy, xx = np.nonzero(lesion)
            h, w = lesion.shape
            row.update(lesion_area=lesion.mean(), centroid_x=(xx.mean() + 0.5) / w,
                       centroid_y=(yy.mean() + 0.5) / h)
            row.update(dict(zip(("skin_r", "skin_g", "skin_b"), np.round(semantic.skin_colour, 1).tolist())))
        row["fitzpatrick"] = fitz
        rows.append(row)
    return rows


def write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())


def provenance(model: Generator, request: Request, plan: Plan, run_dir) -> dict:
    """What made the dataset: the checkpoint (path, SHA-256, what it records of its training), the run
    directory's run.json, the code, the seed and the settings."""
    from dermgan import __version__
    from dermgan.integrity import file_digest
    from dermgan.runtime import git_commit

    run = run_of(model, run_dir) if model.family.conditioned else None
    return {
        "made_by": MADE_BY,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": {"path": str(model.path.resolve()), "sha256": file_digest(model.path),
                       "family": model.family.name, "evaluation": model.meta.get("evaluation")
                       or {"weights": model.meta.get("weights")}, **model.record},
        "run": run,
        "code": {"dermgan": __version__, "git_commit": git_commit()},
        "request": {**dataclasses.asdict(request), **plan.settings},
        "device": str(model.device),
        "n_images": plan.size,
        "image_size": model.image_size,
    }
