"""Exceptions that the dataset loaders raise for missing or inconsistent data."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """A root, category, split folder or file that a loader expects is missing."""


class DatasetLayoutError(ValueError):
    """Files are present but do not form the layout the loader expects."""
