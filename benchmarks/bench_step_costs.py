"""Issue 29: what one unit of work costs at a profile's sizes: the table that `python -m dermgan list
--profile` (dermgan.estimate) prices each notebook with.

    python benchmarks/bench_step_costs.py [--profile paper] [--steps 2] [--units dermgan/dermgan ...]
    python benchmarks/bench_step_costs.py --import-cuda     # the H100 DermGAN step of cuda_train_step.json

Each unit runs in a fresh child process, one after another (so that its peak memory is its own), on the device
at hand (the CPU here: one torch thread, the venv's OMP_NUM_THREADS), at the profile's image size, widths and
batch sizes, on a small synthetic dataset rendered at that size:

    <family>/<model>      one GAN training step through dermgan.train's loop (D step, G step, critic, EMA),
                          timed between the loop's step callbacks after a warm-up step; the run stops before its
                          final checkpoint, so no save is timed (dermgan/*, oasis/oasis, melanogan/*,
                          lesion_edit/*)
    classifier/<arch>     one training step of a classifier (AdamW, cross-entropy) at the classifier batch
    inception             Inception features of one batch at the metrics section's batch and precision
    sample/<family>       a generator on one batch of 64 in eval mode (dermgan.models.dermgan.generate,
                          melanogan sample_images)
    render                the synthetic renderer, per image

The cost of a unit is its process (CPU) time on the CPU, which is the wall time of one thread with a core to
itself however loaded the machine is (a shared 2-core machine gives a niced benchmark a fraction of a core:
its wall time says more about the neighbours than about the work), and its synchronised wall time on a GPU.
Both are recorded, with the batch, seconds per image, the peak memory of the unit's process (resident set on the
CPU, allocated GPU memory on CUDA) and the 1-minute load average while it ran. Results go to
benchmarks/results/step_costs.{json,md}, kept per profile and device: a run adds or replaces the entry of its
profile on its device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402

RESULT = _report.RESULTS / "step_costs.json"
N_IMAGES = 64  # the rendered dataset the units train on: enough for every batch of the paper profile


class _Enough(Exception):
    """Raised from the loop's step callback once the timed steps are done (no final checkpoint is written)."""


def default_units() -> list[str]:
    """Every unit dermgan.estimate prices (DermGAN's ablation variants other than pix2pix are priced as
    "dermgan", the melanoma-only MelanoGANs as their kind)."""
    from dermgan.models import lesion_edit as le
    from dermgan.models import melanogan as mg

    return ([f"dermgan/{name}" for name in ("dermgan", "pix2pix", "dermgan-projected")] + ["oasis/oasis"]
            + [f"melanogan/{kind}" for kind in mg.KINDS]
            + [f"lesion_edit/{name}" for name in le.METHODS]
            + ["classifier/efficientnet_lite0", "classifier/resnet18", "classifier/small", "inception", "sample/dermgan", "sample/melanogan",
               "render"])


def small_dataset(profile, seed: int = 0):
    from dermgan.data.dataset import make_synthetic

    return make_synthetic(profile.data.image_size, N_IMAGES, seed, val_fraction=0.0, test_fraction=0.0)


def device_of(name: str) -> torch.device:
    from dermgan.runtime import pick_device

    return pick_device(name)


def loop_unit(family: str, model: str, profile, data, steps: int, device: str) -> dict:
    """Seconds per step of one GAN through the loop, after one warm-up step."""
    from dermgan.models import dermgan as dg
    from dermgan.models import lesion_edit as le
    from dermgan.models import melanogan as mg
    from dermgan.train import initial_weights, loop_settings, train

    with initial_weights(0):
        if family == "dermgan":
            recipe = dg.build(model, profile.dermgan, data.image_size, len(data.classes), profile.projected)
            dataset, config = dg.training_dataset(data, recipe, steps + 1, 0), dg.train_config(profile.dermgan)
        elif family == "oasis":
            from dermgan.models.oasis import OASISRecipe

            recipe = OASISRecipe(profile.oasis, data.image_size, len(data.classes))
            dataset, config = dg.training_dataset(data, recipe, steps + 1, 0), loop_settings(profile.oasis, 0)
        elif family == "melanogan":
            recipe = mg.build(model, profile.melanogan, data.image_size)
            dataset = mg.ImageDataset(mg.training_images(model, data))
            config = mg.train_config(model, profile.melanogan)
        else:
            recipe = le.build(model, profile.lesion_edit, data.image_size, len(data.classes))
            dataset, config = le.EditDataset(data, 0), le.train_config(profile.lesion_edit)
    config = dataclasses.replace(config, steps=10 * (steps + 1), checkpoint_every=0, sample_every=0,
                                 log_every=1, device=device)
    stamps = []

    def on_step(done):
        synchronise(device)
        stamps.append((time.perf_counter(), time.process_time()))
        if done > steps:
            raise _Enough

    with tempfile.TemporaryDirectory() as folder:
        try:
            train(recipe, dataset, config, folder, resume=False, on_step=on_step)
        except _Enough:
            pass
    (wall0, cpu0), (wall1, cpu1) = stamps[0], stamps[-1]
    n = len(stamps) - 1
    return {"wall_s_per_step": (wall1 - wall0) / n, "cpu_s_per_step": (cpu1 - cpu0) / n, "batch": config.batch_size,
            "steps_timed": n}


def timed(run, steps: int, device: str) -> dict:
    """Median wall and CPU seconds of `run()` over `steps` calls after a first (warm-up) one."""
    walls, cpus = [], []
    for _ in range(steps + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        synchronise(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s_per_step": float(np.median(walls[1:])), "cpu_s_per_step": float(np.median(cpus[1:])),
            "steps_timed": steps}


def classifier_unit(architecture: str, profile, data, steps: int, device: str) -> dict:
    """One training step of 07's classifier (architecture) or of the profile's SkinClassifier (05's domain
    features, 08's two-sample test), as dermgan.classify.train_classifier takes it."""
    from dermgan.augmentation_experiment import build_classifier
    from dermgan.imageops import to_model

    aug = profile.augmentation
    width = aug.width if architecture == "resnet18" else profile.classifier.width
    cfg = profile.classifier
    torch.manual_seed(0)
    # EfficientNet at 07's input size and frozen stages; with a frozen trunk 07 computes the trunk once per
    # image (classify.TrunkCache), so this whole-network step prices its training from above
    model = build_classifier(architecture, len(data.classes), width, None, aug.input_size, aug.train_from).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rows = np.arange(cfg.batch_size) % len(data)
    images = to_model(np.asarray(data.images)[rows]).to(device)
    labels = torch.as_tensor(data.table["label"].to_numpy()[rows]).to(device)

    def step():
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return {**timed(step, steps, device), "batch": cfg.batch_size}


def inception_unit(profile, data, steps: int, device: str) -> dict:
    from dermgan.metrics.features import extract_features, get_extractor

    cfg = profile.metrics
    extractor = get_extractor("inception")
    images = np.asarray(data.images)[np.arange(cfg.batch_size) % len(data)]
    return {**timed(lambda: extract_features(images, extractor, cfg.batch_size, device,
                                             precision=cfg.inception_precision), steps, device),
            "batch": cfg.batch_size, "precision": cfg.inception_precision}


def sample_unit(family: str, profile, data, steps: int, device: str) -> dict:
    """The generator of a family on one batch in eval mode, as the notebooks sample."""
    from dermgan.data.semantic import MapDataset
    from dermgan.models import dermgan as dg
    from dermgan.models import melanogan as mg
    from dermgan.train import initial_weights

    batch = 64  # what dg.generate and mg.sample_images use
    with initial_weights(0):
        if family == "dermgan":
            recipe = dg.build("dermgan", profile.dermgan, data.image_size, len(data.classes))
            maps = MapDataset(data, recipe.variant.encoding).maps(np.arange(batch) % len(data))
            G = recipe.generator.to(device)
            run = lambda: dg.generate(G, maps, batch, device)  # noqa: E731
        else:
            G = mg.build("dcgan", profile.melanogan, data.image_size).generator.to(device)
            run = lambda: mg.sample_images(G, batch, 0, batch, device)  # noqa: E731
    return {**timed(run, steps, device), "batch": batch}


def render_unit(profile, steps: int) -> dict:
    from dermgan.data.dataset import make_synthetic

    n = 16  # one worker: in this process, so that its CPU time counts
    wall, cpu = time.perf_counter(), time.process_time()
    make_synthetic(profile.data.image_size, n, 1, val_fraction=0.0, test_fraction=0.0, workers=1)
    return {"wall_s_per_step": (time.perf_counter() - wall) / n, "cpu_s_per_step": (time.process_time() - cpu) / n,
            "batch": 1, "steps_timed": n}


def synchronise(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


SECTIONS = {"dermgan": "dermgan", "oasis": "oasis", "melanogan": "melanogan", "lesion_edit": "lesion_edit"}


def measure_unit(unit: str, profile_name: str, steps: int, device: str, divisor: int = 1) -> dict:
    """Run one unit in this process; its cost and this process's peak memory. With divisor > 1 a GAN unit
    runs at its section's batch // divisor and its time is scaled back to the full batch (linear in the
    batch: a lower bound where a larger batch would use the cores better)."""
    from dermgan.config import get_profile

    profile = get_profile(profile_name)
    family = unit.partition("/")[0]
    full_batch = None
    if divisor > 1 and family in SECTIONS:
        full_batch = getattr(profile, SECTIONS[family]).batch_size
        profile = profile.replace(**{SECTIONS[family]: {"batch_size": max(1, full_batch // divisor)}})
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    family, _, model = unit.partition("/")
    if unit == "render":
        row = render_unit(profile, steps)
    else:
        data = small_dataset(profile)
        if family in ("dermgan", "oasis", "melanogan", "lesion_edit"):
            row = loop_unit(family, model, profile, data, steps, device)
        elif family == "classifier":
            row = classifier_unit(model, profile, data, steps, device)
        elif family == "inception":
            row = inception_unit(profile, data, steps, device)
        elif family == "sample":
            row = sample_unit(model, profile, data, steps, device)
        else:
            raise SystemExit(f"unknown unit {unit!r}")
    # The cost of a unit: on a GPU its wall time (synchronised); on the CPU its process time, which is the wall
    # time of one thread with a core to itself whatever else the machine runs (data loader workers not counted)
    if full_batch is not None:
        scale = full_batch / row["batch"]
        row.update(measured_batch=row["batch"], batch=full_batch, wall_s_per_step=row["wall_s_per_step"] * scale,
                   cpu_s_per_step=row["cpu_s_per_step"] * scale)
    row["s_per_step"] = row["wall_s_per_step"] if torch.device(device).type == "cuda" else row["cpu_s_per_step"]
    row["s_per_image"] = row["s_per_step"] / row["batch"]
    if torch.device(device).type == "cuda":
        row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        row["peak_of"] = "allocated GPU memory"
    else:
        row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row["peak_of"] = "resident memory of the process (torch included)"
    return row


def device_key(device: torch.device) -> str:
    """'cpu', or 'cuda:<card name>': estimates look their device up by this."""
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def git_commit() -> str | None:
    from dermgan.runtime import git_commit as commit

    return commit(HERE.parent)


def run_child(command: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run a unit's process in a session of its own, its output in files: when it is killed (out of memory), its
    data-loader workers would keep pipes open and hang the wait; they are killed with their session instead."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env, start_new_session=True)
        code = child.wait()
        try:
            os.killpg(child.pid, signal.SIGKILL)  # whatever it left running
        except ProcessLookupError:
            pass
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, code, out.read(), err.read())


def main(argv=None) -> None:
    from dermgan.config import get_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per unit (after one warm-up step)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--units", nargs="+", default=None, help="default: every unit of the profile")
    parser.add_argument("--import-cuda", action="store_true",
                        help="only copy the H100 DermGAN step of results/cuda_train_step.json into the table")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--divisor", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = device_of(args.device)
    if args.import_cuda:
        record = read_record()
        record["profiles"].setdefault("paper", {}).update(cuda_train_step_entry())
        write(record)
        return
    if args.child:
        print(json.dumps(measure_unit(args.child, args.profile, args.steps, str(device), args.divisor)))
        return
    get_profile(args.profile)  # an unknown profile fails before anything runs
    units = args.units or default_units()
    record = read_record()
    entry = record["profiles"].get(args.profile, {}).get(device_key(device), {}) if args.units else {}
    measured = dict(entry.get("units", {}))
    env = {**os.environ, "DERMGAN_BATCH": "1"}
    for unit in units:
        load_before = os.getloadavg()[0]
        divisor = 1
        while True:  # killed for memory (the CPU at 256 px): again at half the batch, scaled back
            out = run_child([sys.executable, __file__, "--child", unit, "--profile", args.profile, "--steps",
                             str(args.steps), "--device", str(device), "--divisor", str(divisor)], env)
            if out.returncode != -signal.SIGKILL or divisor >= 16 or unit.partition("/")[0] not in SECTIONS:
                break
            divisor *= 2
            print(f"{unit}: killed (out of memory?); again at 1/{divisor} of the batch", flush=True)
        if out.returncode:
            raise SystemExit(f"{unit} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["load_1min"] = round((load_before + os.getloadavg()[0]) / 2, 2)  # mean of before and after
        row["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        measured[unit] = row
        print(f"{unit}: {row['s_per_step']:.3g} s/step (wall {row['wall_s_per_step']:.3g}; batch {row['batch']}), "
              f"{row['peak_mb']:.0f} MB peak, "
              f"load {row['load_1min']}", flush=True)
    record["profiles"].setdefault(args.profile, {})[device_key(device)] = {
        "profile": args.profile, "machine": _report.machine(), "torch_threads": torch.get_num_threads(),
        "commit": git_commit(), "source": "benchmarks/bench_step_costs.py", "units": measured}
    write(record)


def cuda_train_step_entry() -> dict:
    """The paper DermGAN step that bench_cuda.py measured through the loop (bf16, the loop's CUDA default), as a
    device entry of this table: the only GPU number there is (other families have none on a GPU)."""
    measured = json.loads((_report.RESULTS / "cuda_train_step.json").read_text())
    bf16 = next(row for row in measured["rows"] if row["mode"] == "bf16")
    batch = round(bf16["img/s"] * bf16["s/step"])
    unit = {"s_per_step": bf16["s/step"], "wall_s_per_step": bf16["s/step"], "batch": batch,
            "s_per_image": bf16["s/step"] / batch,
            "peak_mb": bf16["peak GB"] * 1024, "peak_of": "allocated GPU memory", "load_1min": None,
            "steps_timed": 270}
    return {f"cuda:{measured['machine']['cuda']}": {
        "profile": "paper", "machine": measured["machine"], "torch_threads": measured["machine"]["torch_threads"],
        "commit": "1f9fe09", "units": {"dermgan/dermgan": unit},
        "source": "benchmarks/results/cuda_train_step.json (bench_cuda.py, bf16 row: 300 steps through the loop, "
                  "the batch-norm DermGAN of that time; instance norm, the default since, is not timed on a GPU)"}}


def read_record() -> dict:
    """The committed table as {"profiles": {profile: {device: entry}}}; a table of the earlier layout (one
    entry per device, {"devices": ...}, each naming its profile) is read into this one."""
    if not RESULT.exists():
        return {"profiles": {}}
    record = json.loads(RESULT.read_text())
    if "profiles" not in record:
        profiles = {}
        for key, entry in record.get("devices", {}).items():
            profiles.setdefault(entry["profile"], {})[key] = entry
        record = {"profiles": profiles}
    return record


def write(record: dict) -> None:
    keys = ("s_per_step", "wall_s_per_step", "batch", "measured_batch", "s_per_image", "peak_mb", "load_1min")
    rows = [{"profile": profile, "device": key, "unit": unit, **{k: row.get(k) for k in keys}}
            for profile, devices in record["profiles"].items()
            for key, entry in devices.items() for unit, row in entry["units"].items()]
    notes = ("s_per_step: a GAN step through the loop after a warm-up step (no checkpoint timed), a classifier "
             "or Inception batch, a sampling batch of 64, one rendered image; CPU time on a CPU (one thread), "
             "synchronised wall time on a GPU; wall_s_per_step beside it (on a shared CPU it includes waiting "
             "for a core). peak_mb: the unit's own process (CPU: resident set, torch included; CUDA: allocated "
             "GPU memory). measured_batch: where the full batch ran out of memory, the batch the unit ran at (its "
             "time scaled linearly to the full batch, its peak memory as measured). load_1min: the machine's load "
             "average while it ran. dermgan.estimate multiplies s_per_step by the profile's counts.")
    _report.write("step_costs", "Cost of one unit of work at the profile's sizes (dermgan list --profile)",
                  rows, ["profile", "device", "unit", *keys],
                  notes=notes, extra={"profiles": record["profiles"]})


if __name__ == "__main__":
    main()
