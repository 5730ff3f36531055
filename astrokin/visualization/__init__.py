"""Figures of fits: the diagnostic figure of a fit and a corner plot of its MC samples.

Matplotlib (and, for `plot_corner`, the ``corner`` package) are optional
dependencies, imported only when a figure is made; install them with
``pip install "astrokin[plot]"``.
"""

from .corner_plot import plot_corner
from .diagnostic import plot_fit

__all__ = ["plot_corner", "plot_fit"]
