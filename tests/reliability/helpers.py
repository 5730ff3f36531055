"""Helpers of the reliability tests: maps, FITS headers and raw FITS bytes."""

import hashlib
import warnings

import numpy as np
from astropy import units as u

PIXEL_SCALE = 1.0 * u.arcsec
BEAM = 2.0 * u.arcsec
SHAPE = (32, 32)


def galaxy_maps(shape=SHAPE, **params):
    """mom0 (plain array) and mom1 (km/s Quantity, NaN without emission) of one disc."""
    from astrokin.models import ExponentialArctanDisk

    kw = dict(inclination=55 * u.deg, pa=130 * u.deg, r_scale=4 * u.arcsec,
              r_turn=2 * u.arcsec, v_max=200 * u.km / u.s, v_sys=1200 * u.km / u.s)
    kw.update(params)
    mom0, mom1 = ExponentialArctanDisk(**kw).render(shape, PIXEL_SCALE, beam=BEAM)
    mom1 = np.where(mom0.value > 1e-2 * mom0.value.max(), mom1.value, np.nan) * mom1.unit
    return mom0.value, mom1


def sky_header(shape=SHAPE, bunit=None, beam=True, cdelt=1.0 / 3600, east_left=True):
    """A FITS header with a celestial TAN WCS (square pixels of ``cdelt`` deg) and a beam."""
    from astropy.io import fits

    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.0, 2.0
    h["CRPIX1"], h["CRPIX2"] = (shape[1] + 1) / 2, (shape[0] + 1) / 2
    h["CDELT1"], h["CDELT2"] = (-cdelt if east_left else cdelt), cdelt
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    if beam:
        h["BMAJ"], h["BMIN"], h["BPA"] = 2.0 / 3600, 2.0 / 3600, 0.0
    if bunit is not None:
        h["BUNIT"] = bunit
    return h


def digest(array):
    """A checksum of an array's bytes, shape, dtype and flags that matter."""
    a = np.asarray(array)
    return (a.shape, a.dtype.str, hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())


def file_state(path):
    """Bytes checksum and modification time of a file."""
    import os

    data = open(path, "rb").read()
    return hashlib.sha256(data).hexdigest(), os.stat(path).st_mtime_ns


def card(key, value):
    """One raw 80-character FITS header card; ``value`` is written verbatim (may be garbage)."""
    if key in ("END",):
        return "END".ljust(80)
    return f"{key:<8}= {value:>20}".ljust(80)[:80]


def raw_fits(cards, data, bitpix=-32):
    """Bytes of a FITS file from raw cards (no validation at all) and an array.

    Garbage values (``NaN``, ``'xyz'``, a wrong NAXIS) are written as given,
    which astropy's writer would refuse to do.
    """
    text = "".join(cards) + "END".ljust(80)
    text += " " * (-len(text) % 2880)
    dtype = {-32: ">f4", -64: ">f8", 16: ">i2", 32: ">i4"}[bitpix]
    payload = np.ascontiguousarray(np.asarray(data).astype(dtype)).tobytes()
    payload += b"\0" * (-len(payload) % 2880)
    return text.encode("ascii") + payload


def standard_cards(data, bitpix=-32):
    """SIMPLE/BITPIX/NAXIS cards describing ``data`` truthfully."""
    data = np.asarray(data)
    cards = [card("SIMPLE", "T"), card("BITPIX", str(bitpix)), card("NAXIS", str(data.ndim))]
    for k, n in enumerate(data.shape[::-1], start=1):
        cards.append(card(f"NAXIS{k}", str(n)))
    return cards


def finite_weights(network):
    """Whether every weight of a torch module is finite."""
    import torch

    return all(bool(torch.isfinite(v).all()) for v in network.state_dict().values())


def documented_outcome(call, allowed, *, numpy_warnings_fail=False):
    """Run ``call``: None if it succeeds, the type of a documented error it raises.

    The error must be one of ``allowed`` and have a message; anything else
    propagates (and fails the test). Warnings are ignored, or, with
    ``numpy_warnings_fail``, numpy's floating-point RuntimeWarnings fail.
    """
    with warnings.catch_warnings():
        if numpy_warnings_fail:
            warnings.simplefilter("error", RuntimeWarning)
        else:
            warnings.simplefilter("ignore")
        try:
            call()
        except allowed as err:
            assert str(err).strip(), f"{type(err).__name__} without a message"
            return type(err)
    return None

