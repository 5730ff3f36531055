import astropy.units as u
import numpy as np
import pytest
from radio_beam import Beam

from astrokin.beams import beam_area_pixels, beam_parameters, to_beam


def test_round_beam_from_quantity():
    b = to_beam(0.5 * u.arcsec)
    assert b.major == 0.5 * u.arcsec and b.minor == 0.5 * u.arcsec


def test_elliptical_beam_from_tuple_converts_units():
    bp = beam_parameters((1 * u.arcmin, 30 * u.arcsec, np.pi / 2 * u.rad))
    assert bp == pytest.approx((60.0, 30.0, 90.0))


def test_beam_object_passes_through():
    b = Beam(major=2 * u.arcsec, minor=1 * u.arcsec, pa=10 * u.deg)
    assert to_beam(b) is b
    assert to_beam(None) is None and beam_parameters(None) is None


@pytest.mark.parametrize(
    ("beam", "error", "match"),
    [
        (2.0, TypeError, "radio_beam.Beam"),
        (2 * u.km, u.UnitsError, "must be an angle"),
        (-1 * u.arcsec, ValueError, "finite and positive"),
        (np.nan * u.arcsec, ValueError, "finite and positive"),
        ([1, 2] * u.arcsec, TypeError, "scalar FWHM"),
        ((1 * u.arcsec, 2 * u.arcsec), TypeError, r"\(bmaj, bmin, bpa\)"),
        ((1 * u.arcsec, 2 * u.arcsec, 0 * u.deg), ValueError, "larger than bmaj"),
        ((1 * u.arcsec, 0.5, 0 * u.deg), TypeError, "bmin must be an angle Quantity"),
    ],
)
def test_bad_beams_are_refused_clearly(beam, error, match):
    with pytest.raises(error, match=match):
        to_beam(beam)


def test_beam_area_in_pixels_is_radio_beam_s():
    beam = Beam(major=3 * u.arcsec, minor=2 * u.arcsec, pa=30 * u.deg)
    pixel = 0.5 * u.arcsec
    expected = float((beam.sr / pixel ** 2).to_value(u.one))
    assert beam_area_pixels(beam, pixel) == pytest.approx(expected, rel=1e-12)
    # The floats of beam_parameters (the fast path of reading maps) agree.
    assert beam_area_pixels((3.0, 2.0, 30.0), 0.5) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(np.pi / (4 * np.log(2)) * 3 * 2 / 0.25, rel=1e-12)
    assert beam_area_pixels(None, 0.5) == 1.0
