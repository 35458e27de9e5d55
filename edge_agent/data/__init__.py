"""Data sets: raw-file loaders, the vendored demo sets, normalization and drift."""

from edge_agent.data.datasets import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
