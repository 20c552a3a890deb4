"""Offline evaluation: feature extractors, set metrics with intervals, image statistics, memorisation."""
