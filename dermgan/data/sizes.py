"""The image size a run uses on a real dataset: its images are never enlarged unless that is asked for.

A profile's `data.image_size` is the largest size it wants. On a real dataset the run uses that size lowered
to the largest power of two the dataset's images hold (their smallest side, read from the headers): the paper
profile (256 px) trains on ISIC 2017 (256 x 256) at 256 px and on HAM10000 (200 x 150 here) at 128 px. The
size is recorded in the run directory's run.json, so every notebook of the run uses it. An image_size asked
for explicitly (`-p image_size=N`, a notebook's own parameter) that is larger than the images is refused in
one line naming both sizes, unless `allow_upsampling` is set too; with it, the size asked for (or the
profile's) is used as it is.
"""

from __future__ import annotations

import dataclasses

from dermgan.config import MIN_IMAGE_SIZE, Profile


class UpsamplingRefused(ValueError):
    """A real dataset's images are smaller than the image size asked for, and upsampling was not allowed."""


def largest_power_of_two(side: int) -> int:
    """The largest power of two <= side (side >= 1)."""
    return 1 << (int(side).bit_length() - 1)


def fit_image_size(profile: Profile, dataset: str, data_root, explicit: bool, table=None,
                   log=None) -> Profile:
    """`profile` with data.image_size fitted to the dataset's images (see the module docstring); the synthetic
    dataset is drawn at any size and keeps it. `explicit`: image_size was asked for, not the profile's;
    `table`: the dataset's record table when already read; `log(line)` is told when the size is lowered."""
    data = profile.data
    if dataset == "synthetic" or data_root is None:
        return profile
    from dermgan.data.sources import image_side

    side = image_side(dataset, data_root, table, n_images=data.real_images, val_fraction=data.val_fraction,
                      test_fraction=data.test_fraction)
    if data.image_size <= side or data.allow_upsampling:
        return profile
    fitted = largest_power_of_two(side)
    if explicit or fitted < MIN_IMAGE_SIZE:
        within = f"use image_size <= {fitted}" if fitted >= MIN_IMAGE_SIZE else \
            f"no image size of at least {MIN_IMAGE_SIZE} px fits them"
        raise UpsamplingRefused(
            f"{dataset}'s images are {side} px (their smallest side), smaller than image_size "
            f"{data.image_size}: they would be enlarged; {within}, or allow it with allow_upsampling=true "
            "(-p allow_upsampling=true)")
    if log is not None:
        log(f"{dataset}: image_size {fitted} px, the largest power of two its {side} px images hold (the "
            f"{profile.name} profile's {data.image_size} px would enlarge them)")
    return dataclasses.replace(profile, data=dataclasses.replace(data, image_size=fitted))
