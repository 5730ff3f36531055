"""Lazy imports of the optional plotting dependencies, with a clear message."""

__all__ = ["import_corner", "new_figure"]

_HINT = 'install it with: pip install "astrokin[plot]"'


def new_figure(**kwargs):
    """A `matplotlib.figure.Figure` not attached to pyplot (no GUI backend needed)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(f"astrokin's figures need matplotlib; {_HINT}") from err
    return Figure(**kwargs)


def import_corner():
    """The ``corner`` module."""
    try:
        import corner
    except ImportError as err:
        raise ImportError(f"astrokin's corner plots need the corner package; {_HINT}") from err
    return corner
