"""Data-quality warnings: odd maps warn, naming the galaxy; clean ones stay quiet."""

import re
import warnings

import numpy as np
import pytest
from astropy import units as u

from astrokin.exceptions import AstrokinWarning, BoundWarning, DataQualityWarning
from astrokin.fitting.preprocessing import parse_maps

KW = dict(pixel_scale=1 * u.arcsec, beam=3 * u.arcsec)


def disc(shape=(64, 64), centre=(31.5, 31.5), scale=6.0, v_sys=1500.0, v_max=150.0,
         inclination=50.0):
    """An exponential disc with an arctan rotation curve, PA 0, truncated at 4 scales."""
    y, x = np.mgrid[:shape[0], :shape[1]].astype(float)
    dx, dy = x - centre[1], (y - centre[0]) / np.cos(np.radians(inclination))
    r = np.hypot(dx, dy)
    mom0 = np.exp(-r / scale)
    mom1 = v_sys + v_max * (2 / np.pi) * np.arctan(r / 2.0) * np.sin(np.radians(inclination)) \
        * dx / np.maximum(r, 1e-9)
    out = r > 4 * scale
    mom0[out] = np.nan
    mom1[out] = np.nan
    return mom0, mom1


def caught(mom0, mom1, names=("NGC 42",), **kw):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        parse_maps(mom0, mom1, names=list(names), **{**KW, **kw})
    return [str(w.message) for w in record if issubclass(w.category, DataQualityWarning)]


def test_a_clean_disc_gives_no_warning():
    assert caught(*disc()) == []


def test_velocities_in_m_per_s_are_named():
    mom0, mom1 = disc()
    with pytest.warns(DataQualityWarning, match=r"look like m/s \(NGC 42:"), \
            pytest.raises(ValueError, match=r"mom1 \(NGC 42\) has no valid pixels left .*"
                                            r"look like m/s"):
        parse_maps(mom0, mom1 * 1000.0, names=["NGC 42"], **KW)
    # a galaxy rotating fast, in m/s, with a large systemic velocity: the same
    with pytest.raises(ValueError, match="m/s"):
        parse_maps(mom0, (mom1 + 3000.0) * 1000.0, **KW)


def test_a_hot_mom0_pixel_is_named():
    mom0, mom1 = disc()
    mom0[30, 30] = 1e30
    msgs = caught(mom0, mom1)
    assert any(m.startswith("A hot mom0 pixel (NGC 42:") for m in msgs)


def test_too_few_beams_and_no_gradient():
    mom0, mom1 = disc(scale=0.6)  # a few pixels: about 5 beam areas... of 1 px
    msgs = caught(mom0, mom1, beam=4 * u.arcsec)
    assert any(m.startswith("Too few beams (NGC 42:") for m in msgs)
    flat0, flat1 = disc()
    msgs = caught(flat0, np.where(np.isfinite(flat1), 1500.0, np.nan))
    assert any(m.startswith("No velocity gradient (NGC 42: 0)") for m in msgs)


def test_a_disc_cut_by_the_edge_and_two_sources():
    mom0, mom1 = disc(centre=(31.5, 4.0), scale=8.0)
    assert any(m.startswith("Cut by the map edge (NGC 42:") for m in caught(mom0, mom1))
    a0, a1 = disc(shape=(64, 128), centre=(31.5, 31.5))
    b0, b1 = disc(shape=(64, 128), centre=(31.5, 96.0), v_sys=1800.0)
    both0, both1 = np.fmax(a0, b0), np.fmax(a1, b1)
    msgs = caught(both0, both1)
    assert any(re.match(r"More than one source \(NGC 42: 9\d%\)", m) for m in msgs)


def test_several_galaxies_are_listed_in_one_warning_by_index_or_name():
    good0, good1 = disc()
    flat1 = np.where(np.isfinite(good1), 1500.0, np.nan)
    stack0, stack1 = np.stack([good0, good0, good0]), np.stack([flat1, good1, flat1])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        parse_maps(stack0, stack1, **KW)
    (msg,) = [str(w.message) for w in record if "gradient" in str(w.message)]
    assert "(galaxy 0: 0; galaxy 2: 0)" in msg
    (named,) = [m for m in caught(stack0, stack1, names=["a", "b", "c"]) if "gradient" in m]
    assert "(a: 0; c: 0)" in named
    with pytest.raises(ValueError, match="names must be a sequence of one name per galaxy"):
        parse_maps(stack0, stack1, names=["a", "b"], **KW)


def test_the_family_can_be_filtered_and_raised():
    assert issubclass(BoundWarning, AstrokinWarning)
    mom0, mom1 = disc()
    flat = np.where(np.isfinite(mom1), 1500.0, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataQualityWarning)
        with pytest.raises(DataQualityWarning, match="No velocity gradient"):
            parse_maps(mom0, flat, **KW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", AstrokinWarning)
        parse_maps(mom0, flat, **KW)  # silenced, and nothing else warns
