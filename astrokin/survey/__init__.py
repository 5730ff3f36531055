"""Survey scale: catalogue fitting on Dask clusters, distributed training with torch.

`fit_catalogue` fits catalogues of FITS moment maps blind, in this process or
on any `dask.distributed` cluster; `train_distributed` trains a network on
maps stored as shards on disk (`write_shards`, `catalogue_to_shards`) with
`torch.nn.parallel.DistributedDataParallel`, as one process or launched by
``torchrun`` on many GPUs and nodes (``python -m astrokin.survey.train``).
See :doc:`/survey` for how to run them on clusters.

Importing this subpackage imports neither torch nor dask; they load on first
use.
"""

__all__ = [
    "ShardDataset",
    "catalogue_to_shards",
    "fit_catalogue",
    "load_maps",
    "read_catalogue",
    "train_distributed",
    "write_shards",
]

_LAZY = {
    "ShardDataset": "shards",
    "catalogue_to_shards": "shards",
    "write_shards": "shards",
    "fit_catalogue": "catalogue",
    "load_maps": "catalogue",
    "read_catalogue": "catalogue",
    "train_distributed": "distributed",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
