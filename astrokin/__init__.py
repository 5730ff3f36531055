"""astrokin: kinematics of gas discs with a self-supervised, physics-aware neural network."""

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - only in a source tree that was never built
    __version__ = "0.0.0"

__all__ = ["__version__"]
