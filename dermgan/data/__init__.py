"""Datasets: the embedded procedural skin renderer, semantic maps, and readers for real dermatology data."""

from dermgan.data.dataset import (RECORD_COLUMNS, ClassifierDataset, SkinData, load_dataset, load_for_run,
                                  make_synthetic, stratified_split)

__all__ = ["RECORD_COLUMNS", "ClassifierDataset", "SkinData", "load_dataset", "load_for_run", "make_synthetic",
           "stratified_split"]
