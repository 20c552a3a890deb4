"""Content hashes of the records notebooks hand to each other: checkpoints, the dataset cache, sample files.

Every such file `x` is written with `write_with_digest` and read only after `verify_digest(x)`: its SHA-256 is
kept beside it in `x.sha256`, in sha256sum's format (`<hex>  x`; `sha256sum -c x.sha256` checks it by hand).

Kill-safe in two steps. The sidecar is rewritten (atomically) BEFORE the new file is renamed into place,
listing the new digest and the digest of the file it replaces; once the new file is in place, it is rewritten
with the new digest alone. Whenever a kill strikes, the file on disk is one its sidecar lists: an intact file
is never refused, a damaged one always is. A file without a sidecar (written by an older version, or copied
without it) is refused too: nothing vouches for it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

SUFFIX = ".sha256"
_HEX = re.compile(r"[0-9a-f]{64}")


class IntegrityError(ValueError):
    """A file whose bytes are not the ones that were written, or that carries no digest to show they are."""


def digest_path(path: str | os.PathLike) -> Path:
    """Where the SHA-256 of `path` is kept: `path` + ".sha256"."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_digests(path: str | os.PathLike, remedy: str | None = None) -> list[str]:
    """The digests the sidecar of `path` vouches for (two only after a kill during a replacement); [] without
    a sidecar; a sidecar that is not sha256sum lines is an IntegrityError ending with `remedy`."""
    sidecar = digest_path(path)
    remedy = remedy or way_out(path)
    try:
        lines = sidecar.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise IntegrityError(f"{sidecar} cannot be read ({error}); {remedy}") from None
    digests = [line.split()[0] for line in lines if line.strip()]
    if not digests or not all(_HEX.fullmatch(d) for d in digests):
        raise IntegrityError(f"{sidecar} is damaged (not lines of '<sha256>  {Path(path).name}'); "
                             f"{remedy}")
    return digests


def _write_sidecar(path: Path, digests: list[str]) -> None:
    from dermgan.train import write_atomic  # lazy: the loop module imports torch

    lines = "".join(f"{d}  {path.name}\n" for d in digests)
    write_atomic(digest_path(path), lambda f: f.write(lines), text=True)


def write_with_digest(path: str | os.PathLike, write) -> str:
    """`dermgan.train.write_atomic(path, write)` with the file's SHA-256 kept in path.sha256; returns it.

    The sidecar vouches for the new and the old file while the new one is renamed into place (module doc)."""
    from dermgan.train import write_atomic

    path = Path(path)
    new: list[str] = []

    def vouch_before_rename(temp: Path) -> None:
        new.append(file_digest(temp))
        try:
            old = recorded_digests(path) if path.exists() else []
        except IntegrityError:  # a damaged sidecar vouches for nothing
            old = []
        _write_sidecar(path, new + [d for d in old if d != new[0]])

    write_atomic(path, write, before_replace=vouch_before_rename)
    _write_sidecar(path, new)  # the old file is gone: only the new digest is right now
    return new[0]


def verify_digest(path: str | os.PathLike, remedy: str | None = None) -> None:
    """Refuse `path` (IntegrityError, one line naming it and the way out: `remedy`, by default way_out(path))
    unless its bytes hash to a digest its sidecar lists. Reads the whole file once."""
    path = Path(path)
    sidecar = digest_path(path)
    remedy = remedy or way_out(path)
    if not sidecar.is_file():
        raise IntegrityError(f"{path} has no {sidecar.name} beside it (written by an older version of "
                             f"dermgan, or copied without it), so its content cannot be checked; {remedy}")
    if file_digest(path) not in recorded_digests(path, remedy):
        raise IntegrityError(f"{path} is damaged: its SHA-256 is not the one recorded in {sidecar.name} when "
                             f"it was written; {remedy}")


def way_out(path: str | os.PathLike) -> str:
    """How to get a good copy of a run directory's file back, for the one-line error that refuses it."""
    path = Path(path)
    return f"restore a good copy, or delete it and its {SUFFIX} and re-run {writer_of(path)}"


def writer_of(path: Path) -> str:
    """Which notebook writes this file of a run directory (checkpoints/<model>/..., samples/<model>/...)."""
    model, parts = path.parent.name, path.parts
    if "lesion_edit" in parts or model.startswith("edit-"):
        return "notebook 04"
    if "metrics_classifier" in parts:
        return "notebook 05"
    if "checkpoints" not in parts and "samples" not in parts:
        return "the notebook or command that wrote it"
    from dermgan.models.melanogan import KINDS, MELANOMA_SUFFIX

    if model.removesuffix(MELANOMA_SUFFIX) in KINDS:
        return "notebook 03"
    return "notebook 02 (or `python -m dermgan train`)"
