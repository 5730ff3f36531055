"""Moment maps from cubes (astrokin.cubes), checked against KinMS cubes."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits

pytest.importorskip("kinms")
torch = pytest.importorskip("torch")

from astrokin.cubes import moment_maps  # noqa: E402
from tests.kinms_helpers import kinms_cube  # noqa: E402

KMS = u.km / u.s
V_SYS = 1500.0
TRUTH = dict(inclination=60.0, pa=220.0, r_scale=5.0, r_turn=2.0, v_max=200.0)
BEAM = (3.0, 3.0, 0.0)


@pytest.fixture(scope="module")
def cube():
    """A KinMS disc (1"/px, 3" beam, 10 km/s channels) with Gaussian noise."""
    c, v = kinms_cube(n=64, cell=1.0, beam=BEAM, dv=10.0, n_clouds=500_000, **TRUTH)
    c = c / c.max()
    noisy = c + np.random.default_rng(5).normal(0, 0.01, c.shape)
    return c, noisy, v + V_SYS


def _header(v, spectral="VRAD"):
    h = fits.Header()
    h["NAXIS"] = 3
    for k, (t, val, d, n, unit) in enumerate(
            [("RA---SIN", 180.0, -1 / 3600, 32.5, "deg"), ("DEC--SIN", 10.0, 1 / 3600, 32.5, "deg"),
             (spectral, v[0], v[1] - v[0], 1.0, "km/s")], start=1):
        h[f"CTYPE{k}"], h[f"CRVAL{k}"], h[f"CDELT{k}"], h[f"CRPIX{k}"], h[f"CUNIT{k}"] = \
            t, val, d, n, unit
    h["BUNIT"] = "Jy/beam"
    h["BMAJ"], h["BMIN"], h["BPA"] = BEAM[0] / 3600, BEAM[1] / 3600, BEAM[2]
    return h


def test_moments_match_the_noiseless_cube(cube, tmp_path):
    clean, noisy, v = cube
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(noisy[None], _header(v)).writeto(path)  # with a Stokes-like extra axis
    before = path.read_bytes()
    mom0, mom1 = moment_maps(path)
    assert path.read_bytes() == before
    assert mom1.header["BUNIT"] == "km/s" and u.Unit(mom0.header["BUNIT"]) == u.Jy / u.beam * KMS
    assert mom0.header["BMAJ"] * 3600 == pytest.approx(3.0)
    assert mom0.header["ASK_RMS"] == pytest.approx(0.01, rel=0.1)
    true0 = clean.sum(axis=0) * 10.0
    with np.errstate(all="ignore"):
        true1 = (clean * v[:, None, None]).sum(axis=0) / clean.sum(axis=0)
    bright = true0 > 0.2 * true0.max()
    assert np.isfinite(mom1.data[bright]).all()
    assert np.nanmedian(np.abs(mom1.data - true1)[bright]) < 3.0
    assert np.median(np.abs(mom0.data - true0)[bright] / true0[bright]) < 0.1
    # far from the disc there is only noise, and the mask keeps it out
    assert not np.isfinite(mom1.data[:5, :5]).any()


def test_frequency_axis_and_spectrum_input(cube):
    from specutils import Spectrum

    _, noisy, v = cube
    rest = 115.271202 * u.GHz
    freq = (v * KMS).to(u.GHz, u.doppler_radio(rest)).value
    h = _header(v)
    hf = _header(v, spectral="FREQ")
    hf["CRVAL3"], hf["CDELT3"], hf["CUNIT3"] = freq[0] * 1e9, (freq[1] - freq[0]) * 1e9, "Hz"
    ref0, ref1 = moment_maps(fits.PrimaryHDU(noisy, h))
    with pytest.raises(ValueError, match="needs a rest frequency"):
        moment_maps(fits.PrimaryHDU(noisy, hf))
    f0, f1 = moment_maps(fits.PrimaryHDU(noisy, hf), rest_value=rest)
    ok = np.isfinite(ref1.data)
    assert np.array_equal(ok, np.isfinite(f1.data))
    assert np.max(np.abs(f1.data[ok] - ref1.data[ok])) < 1e-6
    hf["RESTFRQ"] = rest.to_value(u.Hz)
    _, f1h = moment_maps(fits.PrimaryHDU(noisy, hf))
    assert np.max(np.abs(f1h.data[ok] - ref1.data[ok])) < 1e-6
    from astropy.wcs import WCS

    spec = Spectrum(flux=noisy * u.Jy / u.beam, wcs=WCS(h), meta={"header": h})
    s0, s1 = moment_maps(spec)
    assert np.array_equal(np.isfinite(s1.data), ok)
    assert np.max(np.abs(s1.data[ok] - ref1.data[ok])) < 1e-6


def test_cube_to_fit_recovers_the_disc(cube):
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    _, noisy, v = cube
    mom0, mom1 = moment_maps(fits.PrimaryHDU(noisy, _header(v)))
    fitter = NeuralKinematicFitter.pretrained(mc_samples=200, seed=0, progress=False)
    fitter(ExponentialArctanDisk(), mom0, mom1)
    t = fitter.fit_info["table"]
    assert abs((t["pa"][0].value - TRUTH["pa"] + 180) % 360 - 180) < 5
    assert abs(t["inclination"][0].value - TRUTH["inclination"]) < 8
    assert abs(t["v_sys"][0].value - V_SYS) < 10


def test_bad_cubes_get_clear_errors(cube, tmp_path):
    _, noisy, v = cube
    with pytest.raises(ValueError, match="two celestial axes and one spectral axis"):
        moment_maps(fits.PrimaryHDU(noisy[:, :, :, None] * np.ones(2)))
    with pytest.raises(FileNotFoundError):
        moment_maps(tmp_path / "nope.fits")
    with pytest.raises(TypeError, match="cube must be"):
        moment_maps(noisy)
    with pytest.raises(ValueError, match="No voxel"):
        moment_maps(fits.PrimaryHDU(noisy, _header(v)), clip=1e6)
    with pytest.raises(ValueError, match=r"mask has shape"):
        moment_maps(fits.PrimaryHDU(noisy, _header(v)), mask=np.ones((2, 2, 2), bool))
