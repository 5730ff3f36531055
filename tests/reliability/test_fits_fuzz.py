"""Fuzz the FITS path: random headers and arrays, written to disc, fed to the fitter.

Every outcome must be a success or a documented exception with a message:
ValueError (including astrokin's NetworkFormatError), TypeError,
astropy.units.UnitsError or FileNotFoundError; never IndexError, KeyError,
ZeroDivisionError, RuntimeError, AttributeError, and never a numpy
RuntimeWarning (they are turned into errors here).
"""

import uuid

import numpy as np
import pytest
from astropy import units as u
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import card, documented_outcome, file_state, galaxy_maps, raw_fits, standard_cards

pytest.importorskip("torch")
pytestmark = [pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning"),
              pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyWarning")]

ALLOWED = (ValueError, TypeError, u.UnitsError, FileNotFoundError)
NUMBERS = st.sampled_from(["0.0", "NaN", "nan", "Inf", "-1.0", "1E300", "'abc'", "T", "",
                           "2.777777777777E-04", "-2.777777777777E-04", "1e-12"])
BUNITS = st.sampled_from([None, "'km/s'", "'m/s'", "'Jy/beam'", "'Jy/beam.km/s'", "'K'",
                          "'furlongs'", "'km/s/s'", "''", "'Jy/beam km s-1'", "'???'", "3"])
CTYPES = st.sampled_from([None, "'RA---TAN'", "'GLON-CAR'", "'FREQ'", "'VRAD'", "'LINEAR'",
                          "'XX--XXX'", "''"])

mom0_ref, mom1_ref = galaxy_maps((16, 16))


@st.composite
def headers(draw):
    cards = []
    for axis in (1, 2):
        ctype = draw(CTYPES)
        if ctype is not None:
            cards.append(card(f"CTYPE{axis}", ctype if axis == 1 else
                              ctype.replace("RA---", "DEC--").replace("GLON", "GLAT")))
        for key in ("CDELT", "CRPIX", "CRVAL"):
            if draw(st.booleans()):
                cards.append(card(f"{key}{axis}", draw(NUMBERS)))
        if draw(st.booleans()):
            cards.append(card(f"CUNIT{axis}", draw(st.sampled_from(["'deg'", "'arcsec'",
                                                                   "'m/s'", "'bogus'"]))))
    for key in ("BMAJ", "BMIN", "BPA"):
        if draw(st.booleans()):
            cards.append(card(key, draw(NUMBERS)))
    return cards


@st.composite
def arrays(draw, which):
    base = mom0_ref if which == 0 else mom1_ref.value
    kind = draw(st.sampled_from(["model", "nan", "zeros", "noise", "inf", "huge", "cube1",
                                 "cube2", "small", "int"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    data = base.copy()
    if kind == "nan":
        data[:] = np.nan
    elif kind == "zeros":
        data[:] = 0
    elif kind == "noise":
        data = rng.normal(size=data.shape) * (1 if which == 0 else 200)
        data[rng.random(data.shape) < 0.3] = np.nan
    elif kind == "inf":
        data[rng.random(data.shape) < 0.2] = np.inf
    elif kind == "huge":
        data[3, 4] = 3e38
    elif kind == "cube1":
        data = data[None]
    elif kind == "cube2":
        data = np.stack([data, data])
    elif kind == "small":
        data = data[:3, : draw(st.integers(1, 16))]
    elif kind == "int":
        return np.nan_to_num(data).astype(np.int16), 16
    return data, -32


@st.composite
def fits_pairs(draw):
    out = []
    for which in (0, 1):
        data, bitpix = draw(arrays(which))
        cards = standard_cards(data, bitpix) + draw(headers())
        bunit = draw(BUNITS)
        if bunit is not None:
            cards.append(card("BUNIT", bunit))
        if draw(st.integers(0, 9)) == 0:  # lie about the axes
            cards[2] = card("NAXIS", str(draw(st.integers(0, 4))))
        blob = raw_fits(cards, data, bitpix)
        cut = draw(st.sampled_from([None, None, None, None, 0.5, 0.99, 80]))
        if cut is not None:
            blob = blob[: int(len(blob) * cut) if cut < 1 else cut]
        out.append(blob)
    pixel_scale = draw(st.sampled_from([None, None, 1 * u.arcsec]))
    return out[0], out[1], pixel_scale


def _run(function):
    # numpy's divide/invalid warnings fail
    return documented_outcome(function, ALLOWED, numpy_warnings_fail=True)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fits_pairs())
def test_random_fits_files_succeed_or_fail_clearly(tmp_path, tiny_fitter, pair):
    from astrokin.fitting.preprocessing import parse_maps
    from astrokin.models import ExponentialArctanDisk

    blob0, blob1, pixel_scale = pair
    tag = uuid.uuid4().hex[:8]
    p0, p1 = tmp_path / f"m0_{tag}.fits", tmp_path / f"m1_{tag}.fits"
    p0.write_bytes(blob0)
    p1.write_bytes(blob1)
    before = file_state(p0), file_state(p1)
    _run(lambda: parse_maps(str(p0), str(p1), pixel_scale=pixel_scale))
    _run(lambda: tiny_fitter(ExponentialArctanDisk(), p0, p1, pixel_scale=pixel_scale,
                             mc_samples=4))
    assert (file_state(p0), file_state(p1)) == before  # the files are only read


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(arrays(0), arrays(1), st.sampled_from([None, 1 * u.arcsec, 0.3 * u.deg]),
       st.sampled_from([None, 2 * u.arcsec]))
def test_random_arrays_succeed_or_fail_clearly(tiny_fitter, a0, a1, pixel_scale, beam):
    from astrokin.models import ExponentialArctanDisk

    (d0, _), (d1, _) = a0, a1
    _run(lambda: tiny_fitter(ExponentialArctanDisk(), d0, d1, pixel_scale=pixel_scale,
                             beam=beam, mc_samples=4))


def test_cube_reader_on_random_files(tmp_path):
    cubes = pytest.importorskip("astrokin.cubes")
    rng = np.random.default_rng(3)
    for k in range(12):
        data = rng.normal(size=(4, 8, 8)) if k % 3 else np.full((4, 8, 8), np.nan)
        cards = standard_cards(data) + [card("CTYPE3", "'VRAD'"), card("CDELT3", "NaN"),
                                        card("BMAJ", "-1.0")][: k % 4]
        blob = raw_fits(cards, data)
        path = tmp_path / f"cube{k}.fits"
        path.write_bytes(blob[: len(blob) // (1 + k % 2)])
        _run(lambda path=path: cubes.moment_maps(str(path)))
