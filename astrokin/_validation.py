"""Argument checks and conversions shared by every subpackage.

One implementation of each check, used by the models, the renderer, the
synthetic galaxies and the fitter alike, so that a bad argument gets the same
message wherever it is given. Nothing here imports another part of astrokin.
"""

import numpy as np
from astropy import units as u

__all__ = ["MAX_SIDE", "CheckedOption", "check_bool", "check_integer", "check_real",
           "check_shape", "pixel_scale_arcsec", "plain_value"]

#: Longest map side the renderer accepts (pixels).
MAX_SIDE = 16384


def check_shape(shape):
    """``(ny, nx)`` as ints, each >= 2, or a ValueError/TypeError saying what was wrong."""
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a (ny, nx) tuple of integers; got {shape!r}.") from None
    if len(items) != 2:
        raise ValueError(
            f"shape must be (ny, nx): two sizes for a 2D map; got {len(items)} ({items})."
        )
    out = []
    for n in items:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer, float, np.floating)) \
                or not np.isfinite(n) or int(n) != n:
            raise TypeError(f"shape must be (ny, nx) integers; got {items}.")
        out.append(int(n))
    if min(out) < 2:
        raise ValueError(f"shape must be (ny, nx) with both >= 2; got {tuple(out)}.")
    if max(out) > MAX_SIDE:
        raise ValueError(
            f"shape {tuple(out)} is too large to render: sides up to {MAX_SIDE} pixels "
            "(the Fourier tables grow with the square of the longest side)."
        )
    return tuple(out)


def pixel_scale_arcsec(pixel_scale):
    """Pixel scale in arcsec per pixel from an angle (per pixel) Quantity."""
    if not isinstance(pixel_scale, u.Quantity):
        raise TypeError(
            "pixel_scale must be an angle Quantity, e.g. 0.1 * u.arcsec; "
            f"got {pixel_scale!r}."
        )
    q = pixel_scale
    if q.unit.is_equivalent(u.arcsec / u.pix):
        q = q * u.pix
    if not q.unit.is_equivalent(u.arcsec):
        raise u.UnitsError(f"pixel_scale must be an angle per pixel; got unit {q.unit}.")
    if not q.isscalar:
        raise ValueError("pixel_scale must be a scalar (square pixels).")
    value = float(q.to_value(u.arcsec))
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"pixel_scale must be finite and positive; got {pixel_scale}.")
    return value


def plain_value(value, unit, name="x"):
    """A plain float array in ``unit``; plain input is taken to be in ``unit``."""
    if isinstance(value, u.Quantity):
        if not value.unit.is_equivalent(unit):
            raise u.UnitsError(f"{name} must be in units of {unit}; got {value.unit}.")
        return value.to_value(unit)
    return np.asarray(value, dtype=float)


def check_integer(name, value, minimum):
    """``value`` must be an integer (or an integral float) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or int(value) != value or value < minimum:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {what}; got {value!r}.")


def check_real(name, value, lo=None, hi=None):
    """``value`` must be a finite real number, > ``lo`` and < ``hi`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}.")
    if not np.isfinite(value) or (lo is not None and not value > lo) \
            or (hi is not None and not value < hi):
        rng = {(True, True): f" in ({lo}, {hi})", (True, False): f" > {lo}",
               (False, True): f" < {hi}", (False, False): ""}[(lo is not None,
                                                                hi is not None)]
        raise ValueError(f"{name} must be a finite number{rng}; got {value!r}.")


def check_bool(name, value):
    """``value`` must be True or False (a Python or numpy bool): no other truthy value.

    ``refine='no'`` would otherwise mean ``refine=True``. Returns the value as
    a Python bool.

    Examples
    --------
    >>> from astrokin._validation import check_bool
    >>> check_bool("refine", False)
    False
    >>> check_bool("refine", "no")
    Traceback (most recent call last):
    ...
    TypeError: refine must be True or False; got str 'no'.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}.")
    return bool(value)


class CheckedOption:
    """An attribute checked whenever it is set, in the constructor or later.

    ``check(name, value)`` returns the value to store or raises. A class
    declares its options once, as class attributes, and its ``__init__``
    simply assigns them: ``fitter.refine = 'no'`` then fails as
    ``NeuralKinematicFitter(refine='no')`` does.

    Examples
    --------
    >>> from astrokin._validation import CheckedOption, check_bool
    >>> class Thing:
    ...     verbose = CheckedOption(check_bool, "Print as it goes.")
    ...     def __init__(self, verbose=False):
    ...         self.verbose = verbose
    >>> Thing(True).verbose
    True
    >>> Thing().verbose = "yes"
    Traceback (most recent call last):
    ...
    TypeError: verbose must be True or False; got str 'yes'.
    """

    def __init__(self, check, doc=None):
        self.check = check
        self.__doc__ = doc

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__} has no {self.name} yet") from None

    def __set__(self, obj, value):
        obj.__dict__[self.name] = self.check(self.name, value)

