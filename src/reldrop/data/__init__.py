"""Datasets, one module per source. ``data_root()`` says where they live; ``build_dataset`` builds one."""
from .catalog import build_dataset, dataset_names
from .registry import DatasetInfo, register_dataset
from .root import ENV_VAR, cache_dir, data_root

__all__ = ["data_root", "cache_dir", "ENV_VAR", "DatasetInfo", "build_dataset", "dataset_names",
           "register_dataset"]
