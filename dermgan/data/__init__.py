"""Datasets: the embedded procedural skin renderer, semantic maps, and readers for real dermatology data."""
