"""Differentiable torch rendering of disc models into moment maps."""

from .reference import render_reference
from .renderer import DiskRenderer

__all__ = ["DiskRenderer", "render_reference"]
