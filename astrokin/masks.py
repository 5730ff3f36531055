"""Pixel masks from boolean arrays and `regions` shapes.

`pixel_mask` turns whatever a user gives as ``mask=`` or ``exclude=`` into a
boolean array on a map's pixel grid: a boolean array of the map's shape, any
`regions` region (pixel regions directly, sky regions through the map's
celestial WCS), a `regions.Regions` list, the path of a region file that
`regions.Regions.read` understands (DS9 ``.reg``, CASA ``.crtf``, or any
format given explicitly), or a list of these (their union). A pixel belongs
to a region when its centre lies inside it (``mode='center'`` of
`regions.PixelRegion.to_mask`).
"""

import os

import numpy as np

from astrokin._validation import check_integer

__all__ = ["pixel_mask"]

_FORMATS = {".reg": "ds9", ".crtf": "crtf", ".fits": "fits"}
#: A region whose bounding box holds more pixels than this (and than four
#: maps) is rasterised on the map's own pixels, a strip at a time, instead of
#: on its bounding box (a circle of radius 1e5 pixels would need 40 GB).
_MAX_BOX_PIXELS = 2**22


def _read_regions(path, region_format=None):
    from regions import Regions

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Region file {path!r} does not exist.")
    fmt = region_format or _FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(
            f"Cannot tell the format of region file {path!r} from its extension; "
            f"use one of {sorted(_FORMATS)} or give region_format= (e.g. 'ds9', 'crtf')."
        )
    try:
        regions = list(Regions.read(path, format=fmt))
    except Exception as err:  # regions raises several types for unreadable files
        raise ValueError(f"Could not read region file {path!r} as {fmt}: {err}") from err
    if not regions:
        raise ValueError(f"Region file {path!r} holds no region that regions can read as "
                         f"{fmt} (is it empty, or in another format?).")
    return regions


def _check_shape(shape, what):
    """``(ny, nx)`` as positive ints (maps of any size: no upper limit)."""
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be the (ny, nx) of the map {what}= is for, two integers; "
                        f"got {type(shape).__name__} {shape!r}.") from None
    if len(items) != 2:
        raise ValueError(f"shape must be the (ny, nx) of the map {what}= is for, two "
                         f"integers; got {len(items)} values {items!r}.")
    for name, n in zip(("shape[0] (ny)", "shape[1] (nx)"), items, strict=True):
        check_integer(name, n, 1)
    return tuple(int(n) for n in items)


def _check_wcs(wcs):
    """None, or a celestial WCS (an astropy WCS is cut to its celestial axes)."""
    from astropy.wcs import WCS
    from astropy.wcs.wcsapi import BaseHighLevelWCS

    if wcs is None:
        return None
    if isinstance(wcs, WCS):
        if not wcs.has_celestial:
            raise ValueError(f"wcs must be a celestial WCS (RA/Dec or other sky axes); got "
                             f"one with axes {list(wcs.wcs.ctype)}.")
        return wcs.celestial if wcs.naxis > 2 else wcs
    if not isinstance(wcs, BaseHighLevelWCS):
        raise TypeError(f"wcs must be an astropy.wcs.WCS (the map's celestial WCS) or None; "
                        f"got {type(wcs).__name__}.")
    return wcs


def _region_image(region, shape, what):
    """Pixels of ``shape`` whose centre lies inside a pixel region."""
    from regions import PixCoord

    kind = type(region).__name__
    no_area = TypeError(f"{what}= holds a {kind}, which covers no area (points, lines and "
                        "text mark no pixels); give an area region such as a circle, an "
                        "ellipse, a box or a polygon.")
    try:
        box = region.bounding_box
        size = (box.ixmax - box.ixmin) * (box.iymax - box.iymin)
    except (ValueError, TypeError, OverflowError, ArithmeticError) as err:
        raise ValueError(f"{what}= holds a {kind} that cannot be placed on the map: its "
                         f"centre or size is not a finite number of pixels ({err}).") from None
    except (AttributeError, NotImplementedError):
        raise no_area from None
    ny, nx = shape
    if size <= max(_MAX_BOX_PIXELS, 4 * ny * nx):
        try:
            mask = region.to_mask(mode="center")
        except NotImplementedError:
            raise no_area from None
        image = mask.to_image(shape)
        # a region wholly outside the map covers none of it
        return np.zeros(shape, dtype=bool) if image is None else image.astype(bool)
    out = np.zeros(shape, dtype=bool)
    x0, x1 = max(int(box.ixmin), 0), min(int(box.ixmax), nx)
    y0, y1 = max(int(box.iymin), 0), min(int(box.iymax), ny)
    if x0 >= x1 or y0 >= y1:
        return out
    rows = max(1, 2**20 // (x1 - x0))
    for y in range(y0, y1, rows):
        yy, xx = np.mgrid[y:min(y + rows, y1), x0:x1]
        out[y:y + yy.shape[0], x0:x1] = region.contains(PixCoord(xx, yy))
    return out


def pixel_mask(spec, shape, wcs=None, *, region_format=None, what="mask"):
    """Boolean map of the pixels inside ``spec``.

    Parameters
    ----------
    spec : array-like of bool, `regions.Region`, `regions.Regions`, str, path-like, or list
        What to turn into a mask (see the module docstring). A list is the
        union of its items.
    shape : tuple of int
        ``(ny, nx)`` of the map.
    wcs : `~astropy.wcs.WCS`, optional
        Celestial WCS of the map; needed for sky regions.
    region_format : str, optional
        Format of region files whose extension does not tell it.
    what : str, optional
        Name used in error messages (``'mask'`` or ``'exclude'``).

    Returns
    -------
    inside : `numpy.ndarray` of bool
        ``True`` for pixels inside.

    Raises
    ------
    TypeError
        If ``spec`` is none of the kinds above (or a region without area:
        a point, line or text), ``shape`` is not a pair, ``wcs`` is not a
        WCS, or ``region_format`` is not a string.
    ValueError
        If a boolean array is not of ``shape``, a region cannot be placed
        (non-finite centre or size; a sky region without a celestial
        ``wcs``), a region file cannot be read or holds no region, or
        ``shape`` is not two positive integers.
    FileNotFoundError
        If a region file does not exist.

    Examples
    --------
    >>> from regions import CirclePixelRegion, PixCoord
    >>> from astrokin.masks import pixel_mask
    >>> m = pixel_mask(CirclePixelRegion(PixCoord(5, 5), radius=2.5), (11, 11))
    >>> int(m.sum()), bool(m[5, 5]), bool(m[0, 0])
    (21, True, False)
    """
    from regions import PixelRegion, Regions, SkyRegion

    shape = _check_shape(shape, what)
    wcs = _check_wcs(wcs)
    if region_format is not None and not isinstance(region_format, str):
        raise TypeError(f"region_format must be a str naming a format of regions.Regions.read "
                        f"(e.g. 'ds9', 'crtf') or None; got {type(region_format).__name__} "
                        f"{region_format!r}.")
    if isinstance(spec, (str, os.PathLike)):
        return pixel_mask(_read_regions(spec, region_format), shape, wcs, what=what)
    if isinstance(spec, Regions):
        spec = list(spec)
    if isinstance(spec, (list, tuple)) and spec and not isinstance(spec[0], (bool, np.bool_)) \
            and not np.ndim(spec[0]) > 0:
        out = np.zeros(shape, dtype=bool)
        for item in spec:
            out |= pixel_mask(item, shape, wcs, region_format=region_format, what=what)
        return out
    if isinstance(spec, SkyRegion):
        if wcs is None:
            raise ValueError(
                f"{what}= is a sky region ({type(spec).__name__}) but the map has no celestial "
                "WCS to place it; give a pixel region or maps with a WCS."
            )
        try:
            spec = spec.to_pixel(wcs)
        except (ValueError, TypeError, ArithmeticError, AttributeError,
                NotImplementedError) as err:
            raise ValueError(f"{what}= holds a {type(spec).__name__} that cannot be placed "
                             f"on the map through its WCS ({type(err).__name__}: {err}).") \
                from None
    if isinstance(spec, PixelRegion):
        return _region_image(spec, shape, what)
    try:
        arr = np.asarray(spec)
    except (ValueError, TypeError) as err:
        raise TypeError(f"{what}= must be a boolean array, a regions region, a region file, "
                        f"or a list of these; got {type(spec).__name__} that is none of "
                        f"these ({err}).") from None
    if arr.dtype != bool:
        raise TypeError(
            f"{what}= must be a boolean array, a regions region, a region file, or a list of "
            f"these; got {type(spec).__name__} of dtype {arr.dtype}."
        )
    if arr.shape != shape:
        raise ValueError(f"{what}= has shape {arr.shape} but the maps have shape {shape}.")
    return arr.copy()
