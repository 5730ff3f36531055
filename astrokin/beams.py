"""Restoring beams: one way to say "the beam" everywhere in astrokin.

A ``beam`` argument anywhere in astrokin may be a `radio_beam.Beam`, a
`~astropy.units.Quantity` FWHM (a round beam), or a ``(bmaj, bmin, bpa)``
sequence of angle Quantities, all FWHM, with the position angle of the major
axis measured from North counter-clockwise through East. `to_beam` turns any
of these into a `radio_beam.Beam` and checks it.
"""

import functools

import numpy as np
from astropy import units as u
from radio_beam import Beam

__all__ = ["FWHM_TO_SIGMA", "beam_area_pixels", "beam_parameters", "to_beam"]

#: Standard deviation of a Gaussian per unit FWHM, ``1 / sqrt(8 ln 2)``.
FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def to_beam(beam):
    """Turn any accepted beam description into a `radio_beam.Beam`.

    Parameters
    ----------
    beam : `radio_beam.Beam`, `~astropy.units.Quantity`, tuple, or None
        A `radio_beam.Beam`; a scalar angle Quantity giving the FWHM of a
        round beam; or ``(bmaj, bmin, bpa)`` angle Quantities (FWHM of the
        major and minor axes and the major axis position angle, North
        through East). ``None`` means no beam.

    Returns
    -------
    beam : `radio_beam.Beam` or None
        The beam, or None when ``beam`` is None.

    Raises
    ------
    TypeError
        If ``beam`` is of none of the accepted kinds or lacks units.
    ValueError
        If an axis is not finite and positive, ``bmin > bmaj``, or the
        position angle is not finite.
    astropy.units.UnitsError
        If an axis or the position angle is not an angle.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.beams import to_beam
    >>> to_beam(2 * u.arcsec).major
    <Quantity 2. arcsec>
    >>> b = to_beam((3 * u.arcsec, 2 * u.arcsec, 30 * u.deg))
    >>> b.minor, b.pa
    (<Quantity 2. arcsec>, <Quantity 30. deg>)
    """
    if beam is None:
        return None
    if isinstance(beam, Beam):
        out = beam
    elif isinstance(beam, u.Quantity):
        if not beam.isscalar:
            raise TypeError(
                "A Quantity beam must be a scalar FWHM (a round beam); for an elliptical "
                f"beam give (bmaj, bmin, bpa). Got a Quantity of shape {beam.shape}."
            )
        _check_angle("beam FWHM", beam)
        out = Beam(major=beam, minor=beam, pa=0 * u.deg)
    elif isinstance(beam, (tuple, list)):
        if len(beam) != 3:
            raise TypeError(
                f"A beam sequence must be (bmaj, bmin, bpa); got {len(beam)} elements."
            )
        bmaj, bmin, bpa = beam
        for name, value in (("bmaj", bmaj), ("bmin", bmin), ("bpa", bpa)):
            if not isinstance(value, u.Quantity):
                raise TypeError(
                    f"Beam {name} must be an angle Quantity (e.g. 2*u.arcsec); got {value!r}."
                )
        _check_angle("beam bmaj", bmaj)
        _check_angle("beam bmin", bmin)
        if not bpa.unit.is_equivalent(u.deg):
            raise u.UnitsError(f"Beam bpa must be an angle; got unit {bpa.unit!r}.")
        if not (bpa.isscalar and np.isfinite(bpa.value)):
            raise ValueError(f"Beam bpa must be a finite scalar angle; got {bpa!r}.")
        if bmin.to_value(u.arcsec) > bmaj.to_value(u.arcsec):
            raise ValueError(f"Beam bmin ({bmin}) is larger than bmaj ({bmaj}).")
        out = Beam(major=bmaj, minor=bmin, pa=bpa)
    else:
        raise TypeError(
            "beam must be a radio_beam.Beam, an angle Quantity FWHM, or (bmaj, bmin, bpa) "
            f"Quantities; got {type(beam).__name__}."
        )
    major = out.major.to_value(u.arcsec)
    minor = out.minor.to_value(u.arcsec)
    if not (np.isfinite(major) and np.isfinite(minor) and major > 0 and minor > 0):
        raise ValueError(f"Beam axes must be finite and positive; got {out.major}, {out.minor}.")
    if minor > major * (1 + 1e-9):
        raise ValueError(f"Beam minor axis ({out.minor}) is larger than its major axis "
                         f"({out.major}).")
    if not np.isfinite(out.pa.to_value(u.deg)):
        raise ValueError(f"Beam position angle must be finite; got {out.pa}.")
    return out


def beam_parameters(beam):
    """Return ``(bmaj, bmin, bpa)`` of a beam as floats in arcsec, arcsec, deg.

    Parameters
    ----------
    beam : any beam accepted by `to_beam`, or None

    Returns
    -------
    params : tuple of float or None
        FWHM major and minor axes in arcsec and the position angle in
        degrees (North through East), or None for no beam.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.beams import beam_parameters
    >>> beam_parameters((0.5 * u.arcsec, 0.4 * u.arcsec, 0.5 * u.rad))
    (0.5, 0.4, 28.64788975654116)
    """
    beam = to_beam(beam)
    if beam is None:
        return None
    return (
        float(beam.major.to_value(u.arcsec)),
        float(beam.minor.to_value(u.arcsec)),
        float(beam.pa.to_value(u.deg)),
    )


def beam_area_pixels(beam, pixel_scale):
    """Area of a beam in pixels, as `radio_beam.Beam.sr` defines it.

    Parameters
    ----------
    beam : any beam accepted by `to_beam`, a ``(bmaj, bmin, bpa)`` tuple of floats, or None
        Floats are FWHM in arcsec (and the position angle in deg), as
        `beam_parameters` returns them.
    pixel_scale : float or `~astropy.units.Quantity`
        Angle per pixel (a plain number is in arcsec).

    Returns
    -------
    area : float
        ``pi / (4 ln 2) bmaj bmin / pixel_scale**2``; 1.0 (one pixel) for no beam.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.beams import beam_area_pixels
    >>> round(beam_area_pixels(2 * u.arcsec, 0.5 * u.arcsec), 3)
    18.129
    >>> round(beam_area_pixels((2.0, 2.0, 0.0), 0.5), 3)
    18.129
    """
    if beam is None:
        return 1.0
    ps = float(u.Quantity(pixel_scale, u.arcsec).value)
    if isinstance(beam, tuple) and all(isinstance(v, (int, float)) for v in beam):
        # Floats, on the hot path of reading maps: radio_beam's area of a
        # 1-arcsec beam, scaled (building a Beam per galaxy costs 0.1 ms).
        return _unit_beam_area() * float(beam[0]) * float(beam[1]) / ps ** 2
    return float(to_beam(beam).sr.to_value(u.arcsec ** 2)) / ps ** 2


@functools.cache
def _unit_beam_area():
    """`radio_beam.Beam.sr` of a round 1-arcsec FWHM beam, in arcsec**2."""
    return float(Beam(major=1 * u.arcsec).sr.to_value(u.arcsec ** 2))


def _check_angle(name, value):
    if not value.unit.is_equivalent(u.arcsec):
        raise u.UnitsError(f"{name} must be an angle; got unit {value.unit!r}.")
    v = value.to_value(u.arcsec)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and positive; got {value}.")
