"""The learning side of astrokin: the self-supervised neural kinematic fitter.

`NeuralKinematicFitter` is the entry point. Importing this subpackage does not
import torch (so it can be registered as an ``astropy.modeling`` entry point);
the network pieces load on first use.
"""

from .fitter import NeuralKinematicFitter

__all__ = [
    "Encoder",
    "KinematicAutoencoder",
    "NeuralKinematicFitter",
    "ParameterLayout",
    "mc_dropout_summary",
]

_LAZY = {
    "Encoder": "encoders",
    "KinematicAutoencoder": "network",
    "ParameterLayout": "parameters",
    "mc_dropout_summary": "mc_dropout",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
