"""The learning side of astrokin: the self-supervised neural kinematic fitter.

`NeuralKinematicFitter` is the entry point. Importing this subpackage does not
import torch (so it can be registered as an ``astropy.modeling`` entry point);
the network pieces load on first use.
"""

# astropy.modeling loads its "astropy.modeling" entry points, ours included,
# while it is first imported. Importing it before .fitter means that happens
# now, not halfway through .fitter's own import (where the entry point would
# find the class not yet defined and astropy would warn).
import astropy.modeling  # noqa: F401, I001

from .fitter import NeuralKinematicFitter

__all__ = [
    "Encoder",
    "KinematicAutoencoder",
    "NeuralKinematicFitter",
    "ParameterLayout",
    "PreparedBatch",
    "TrainedNetwork",
    "TrainingLoop",
    "compare_models",
    "mc_dropout_summary",
]

_LAZY = {
    "Encoder": "encoders",
    "KinematicAutoencoder": "network",
    "ParameterLayout": "parameters",
    "PreparedBatch": "batch",
    "TrainedNetwork": "trained",
    "TrainingLoop": "training",
    "compare_models": "model_choice",
    "mc_dropout_summary": "mc_dropout",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
