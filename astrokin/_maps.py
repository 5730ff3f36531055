"""Reading one moment map from whatever a user holds it in.

Arrays, Quantities, FITS HDUs and HDULists, `~astropy.nddata.NDData`, FITS
file names, and stacks or lists of these, become ``(data, unit, wcs,
header)``: the data as floats, the unit from ``BUNIT`` or the Quantity, and
the celestial WCS (built only when it is needed: `LazyWCS`). Shared by the
fitter's input parsing (`astrokin.fitting.preprocessing`) and the figures.
"""

import os
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import NDData
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

__all__ = ["GRID_CARDS", "LazyWCS", "celestial_wcs", "header_unit", "read_fits_map", "read_map",
           "resolve_wcs", "same_grid_cards", "split_maps", "wcs_orientation"]


def _is_hdu(obj):
    return isinstance(obj, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU, fits.HDUList))


def _real_array(data):
    """The map's values as an array of real numbers, not copied when they already are.

    Integer and floating arrays (a float32 FITS image) are kept as they are:
    `astrokin.fitting.preprocessing.parse_maps` copies them into float64 or,
    for maps too large for that, reads them a strip at a time
    (`astrokin.fitting.binning`). Anything else is converted to float64.
    """
    if isinstance(data, np.ndarray) and not isinstance(data, np.ma.MaskedArray) \
            and data.dtype.kind in "fiu":
        return data
    return np.asarray(data, dtype=float)


def read_map(obj, what):
    """``(data ndarray, unit or None, wcs or None, header or None)`` of one input."""
    if isinstance(obj, (str, os.PathLike)):
        return read_fits_map(obj, what)
    if isinstance(obj, fits.HDUList):
        hdus = [h for h in obj if getattr(h, "data", None) is not None]
        if not hdus:
            raise ValueError(f"The HDUList given as {what} has no HDU with data.")
        obj = hdus[0]
    if _is_hdu(obj):
        header = obj.header
        unit = header_unit(header)
        if obj.data is None:
            raise ValueError(f"The HDU given as {what} has no data.")
        data = _real_array(obj.data)
        return _image_data(data, header, what), unit, LazyWCS(header), header
    if isinstance(obj, NDData):
        wcs = obj.wcs
        if wcs is not None and not isinstance(wcs, WCS):
            wcs = getattr(wcs, "celestial", None) if hasattr(wcs, "celestial") else None
        if wcs is not None:
            wcs = wcs.celestial
        header = obj.meta if hasattr(obj.meta, "keys") else None
        data = _real_array(obj.data)
        if obj.mask is not None:
            data = np.where(np.asarray(obj.mask, dtype=bool), np.nan, data)
        return data, obj.unit, wcs, header
    if isinstance(obj, (np.ndarray, u.Quantity)) and obj.dtype.kind in "bcmMSU":
        raise TypeError(
            f"{what} holds {obj.dtype} values: a map is real numbers (intensities, or "
            "velocities); use a mask= for booleans.")
    if isinstance(obj, np.ma.MaskedArray) and not isinstance(obj, u.Quantity):
        # Pixels under the mask are not data.
        data = np.where(np.ma.getmaskarray(obj), np.nan, np.ma.getdata(obj).astype(float))
        return data, None, None, None
    if isinstance(obj, u.Quantity):
        wcs = getattr(obj, "wcs", None)
        return _real_array(obj.value), obj.unit, wcs, None
    if isinstance(obj, np.ndarray) or np.isscalar(obj) is False:
        try:
            data = _real_array(obj)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{what} must be a numpy array, Quantity, FITS HDU, NDData, a stack of maps, or a "
                f"list of these; got {type(obj).__name__}."
            ) from err
        return data, None, None, None
    raise TypeError(
        f"{what} must be a numpy array, Quantity, FITS HDU, NDData, a stack of maps, or a list "
        f"of these; got {type(obj).__name__}."
    )


#: Cards compared to decide that mom1 lies on mom0's pixel grid without building
#: a second WCS (the slowest step of reading a map: astropy verifies every card).
GRID_CARDS = ("NAXIS1", "NAXIS2", "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
               "CDELT1", "CDELT2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "PC1_1", "PC1_2",
               "PC2_1", "PC2_2", "PC01_01", "PC01_02", "PC02_01", "PC02_02", "CROTA1",
               "CROTA2", "CUNIT1", "CUNIT2")


def same_grid_cards(h0, h1):
    """Whether two headers have the same celestial pixel-grid cards."""
    return all(h0.get(k) == h1.get(k) for k in GRID_CARDS)


class LazyWCS:
    """A header's celestial WCS, built on first use."""

    def __init__(self, header):
        self.header = header

    def resolve(self):
        return celestial_wcs(self.header)


def resolve_wcs(wcs):
    """The WCS itself, built now if it was a `LazyWCS`."""
    return wcs.resolve() if isinstance(wcs, LazyWCS) else wcs


def celestial_wcs(header):
    """The 2D celestial WCS of a header, or None (extra spectral/Stokes axes dropped).

    ``HISTORY`` and ``COMMENT`` cards are left out first: astropy verifies
    every card while building a WCS, and CASA maps carry hundreds of them
    (WISDOM's: 640 cards, 14 ms instead of 3).
    """
    if header.get("NAXIS", 0) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            cards = fits.Header([c for c in header.cards
                                 if c.keyword not in ("HISTORY", "COMMENT", "")])
            wcs = WCS(cards).celestial
        except Exception:  # an unparsable WCS is no WCS; a pixel scale must then be given
            return None
    return wcs if wcs.naxis == 2 and wcs.has_celestial else None


def _image_data(data, header, what):
    """A map's data with degenerate (length-1) spectral or Stokes axes removed.

    Refuses spectral cubes: a FITS image with a spectral axis of more than one
    channel is not a moment map.
    """
    if data.ndim <= 2:
        return data
    squeezed = data.reshape([n for n in data.shape if n != 1] or [1])
    if squeezed.ndim <= 2:
        return squeezed
    ctypes = [str(header.get(f"CTYPE{k}", "")).upper() for k in range(1, data.ndim + 1)]
    spectral = ("FREQ", "VRAD", "VOPT", "VELO", "FELO", "WAVE", "ZOPT", "BETA", "VELOCITY")
    if any(c.startswith(spectral) for c in ctypes):
        raise ValueError(
            f"{what} is a spectral cube (shape {data.shape}), not a 2D moment map; make "
            "moment maps first with astrokin.cubes.moment_maps(cube)."
        )
    return squeezed


def header_unit(header):
    """The unit in a header's ``BUNIT``, or None (absent or not understood)."""
    if "BUNIT" not in header:
        return None
    try:
        unit = u.Unit(header["BUNIT"], format="fits", parse_strict="silent")
    except (ValueError, TypeError):
        return None
    return None if isinstance(unit, u.UnrecognizedUnit) else unit


def check_data_size(hdu, path, what):
    """Refuse an HDU whose header claims more data than its file holds.

    A lying or truncated header (``NAXIS1 = NAXIS2 = 100000`` over a few
    bytes) would otherwise make numpy allocate the whole claimed array (tens
    of GB) before anything can say what is wrong.
    """
    if isinstance(hdu, fits.CompImageHDU):
        return
    header = hdu.header
    n = header.get("NAXIS", 0)
    try:
        dims = [int(header.get(f"NAXIS{k}", 0)) for k in range(1, int(n) + 1)]
        claimed = abs(int(header.get("BITPIX", 8))) // 8 * int(np.prod(dims, dtype=object))
    except (TypeError, ValueError):
        return
    size = os.path.getsize(path)
    if claimed > size:
        shape = " x ".join(str(d) for d in dims)
        raise ValueError(f"{what}: the header of {path!r} claims {shape} pixels "
                         f"({claimed / 1e9:.3g} GB of data) but the file holds {size} bytes: it "
                         "is truncated, or its NAXIS cards are wrong.")


def read_fits_map(path, what):
    """``(data, unit, wcs, header)`` of the first image HDU of a FITS file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}: no such file {path!r}.")
    data = header = None
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            for hdu in hdul:
                if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                    check_data_size(hdu, path, what)
                if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) \
                        and hdu.data is not None:
                    data = _real_array(hdu.data)
                    header = hdu.header.copy()
                    break
    except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
        # astropy and numpy raise all of these for corrupt or truncated files
        raise ValueError(f"{what}: {path!r} is not a readable FITS file ({err}).") from err
    if data is None:
        raise ValueError(f"{what}: the FITS file {path!r} has no image HDU with data.")
    data = _image_data(data, header, f"{what} ({path})")
    return data, header_unit(header), LazyWCS(header), header


def wcs_orientation(wcs):
    """``(flipped, north_angle_deg, pixel_scale_arcsec)`` from a celestial WCS."""
    scales = proj_plane_pixel_scales(wcs) * 3600.0  # deg -> arcsec (celestial axes are deg)
    if not np.isclose(scales[0], scales[1], rtol=1e-3):
        raise ValueError(
            f"The WCS has non-square pixels ({scales[0]:.4g} x {scales[1]:.4g} arcsec); "
            "resample the maps to square pixels first."
        )
    m = np.array(wcs.pixel_scale_matrix, dtype=float)
    flipped = bool(np.linalg.det(m) > 0)
    if flipped:
        m[:, 0] = -m[:, 0]
    north = np.linalg.solve(m, np.array([0.0, 1.0]))
    theta = float(np.degrees(np.arctan2(-north[0], north[1])))
    return flipped, theta, float(np.sqrt(scales[0] * scales[1]))


def split_maps(obj, what):
    """List of ``(data, unit, wcs, header)`` single maps from any accepted input."""
    if isinstance(obj, (list, tuple)) and not isinstance(obj, fits.HDUList):
        if len(obj) == 0:
            raise ValueError(f"{what} is an empty list.")
        items = []
        for k, item in enumerate(obj):
            data, unit, wcs, header = read_map(item, f"{what}[{k}]")
            if data.ndim != 2:
                raise ValueError(f"{what}[{k}] must be a 2D map; got shape {data.shape}.")
            items.append((data, unit, wcs, header))
        return items
    data, unit, wcs, header = read_map(obj, what)
    if data.ndim == 2:
        return [(data, unit, wcs, header)]
    if data.ndim == 3:
        return [(d, unit, wcs, header) for d in data]
    raise ValueError(
        f"{what} must be a 2D map, a (N, ny, nx) stack, or a list of maps; got shape {data.shape}."
    )
