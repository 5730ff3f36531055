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

__all__ = ["pixel_mask"]

_FORMATS = {".reg": "ds9", ".crtf": "crtf", ".fits": "fits"}


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
        return list(Regions.read(path, format=fmt))
    except Exception as err:  # regions raises several types for unreadable files
        raise ValueError(f"Could not read region file {path!r} as {fmt}: {err}") from err


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

    Examples
    --------
    >>> from regions import CirclePixelRegion, PixCoord
    >>> from astrokin.masks import pixel_mask
    >>> m = pixel_mask(CirclePixelRegion(PixCoord(5, 5), radius=2.5), (11, 11))
    >>> int(m.sum()), bool(m[5, 5]), bool(m[0, 0])
    (21, True, False)
    """
    from regions import PixelRegion, Regions, SkyRegion

    shape = tuple(int(n) for n in shape)
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
        spec = spec.to_pixel(wcs)
    if isinstance(spec, PixelRegion):
        image = spec.to_mask(mode="center").to_image(shape)
        # a region wholly outside the map covers none of it
        return np.zeros(shape, dtype=bool) if image is None else image.astype(bool)
    arr = np.asarray(spec)
    if arr.dtype != bool:
        raise TypeError(
            f"{what}= must be a boolean array, a regions region, a region file, or a list of "
            f"these; got {type(spec).__name__} of dtype {arr.dtype}."
        )
    if arr.shape != shape:
        raise ValueError(f"{what}= has shape {arr.shape} but the maps have shape {shape}.")
    return arr.copy()
