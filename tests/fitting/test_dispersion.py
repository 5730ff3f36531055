"""Fitting the velocity dispersion to a mom2 map, and a cube straight into the fitter."""

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from astrokin.cubes import cube_moments, moment_maps
from astrokin.fitting import NeuralKinematicFitter
from astrokin.models import ExponentialArctanDisk, TiltedRingDisk

KMS = u.km / u.s
GEOMETRY = dict(inclination=55 * u.deg, pa=130 * u.deg, r_scale=6 * u.arcsec,
                r_turn=2 * u.arcsec, v_max=210 * KMS, v_sys=1500 * KMS)
OBS = dict(pixel_scale=1 * u.arcsec, beam=4 * u.arcsec)


@pytest.fixture(scope="module")
def fitter():
    return NeuralKinematicFitter.pretrained(mc_samples=100, seed=0)


def _maps(v_disp=18.0, noise=2.0, seed=0):
    truth = ExponentialArctanDisk(**GEOMETRY, v_disp=v_disp * KMS)
    mom0, mom1, mom2 = truth.render((64, 64), 1 * u.arcsec, beam=4 * u.arcsec, moment2=True)
    rng = np.random.default_rng(seed)
    return mom0, mom1, mom2 + rng.normal(0.0, noise, mom2.shape) * KMS


def test_dispersion_is_recovered_from_mom2_with_an_honest_error(fitter):
    mom0, mom1, mom2 = _maps()
    fitted = fitter(ExponentialArctanDisk(), mom0, mom1, mom2=mom2, **OBS)
    table = fitter.fit_info["table"]
    sigma, err = fitted.v_disp.value, fitted.stds["v_disp"]
    # The beam smears 210 km/s of rotation into lines up to ~60 km/s wide at
    # the centre; the 18 km/s beneath is recovered to a fraction of a km/s.
    assert abs(sigma - 18.0) < 1.0 and 0.05 < err < 2.0 and abs(sigma - 18.0) < 4 * err
    assert "v_disp" in fitter.fit_info["free_parameters"]
    assert table["rms_mom2"][0] == pytest.approx(2.0, rel=0.2)  # the noise added
    assert table["n_mom2"][0] > 500 and np.isnan(table["chi2_mom2"][0])
    samples = fitter.fit_info["samples"]["v_disp"].value
    assert np.std(samples) == pytest.approx(err, rel=0.3)


def test_given_noise_map_gives_chi2_near_one(fitter):
    mom0, mom1, mom2 = _maps(v_disp=30.0, noise=3.0, seed=1)
    fitter(ExponentialArctanDisk(), mom0, mom1, mom2=mom2, mom2_err=np.full(mom2.shape, 3.0),
           **OBS)
    table = fitter.fit_info["table"]
    assert table["chi2_mom2"][0] == pytest.approx(1.0, abs=0.15)
    assert table["v_disp"][0].to_value(KMS) == pytest.approx(30.0, abs=1.0)


def test_without_mom2_the_dispersion_is_left_alone_and_reported_fixed(fitter, recwarn):
    mom0, mom1, _ = _maps()
    model = ExponentialArctanDisk(v_disp=25 * KMS)
    fitted = fitter(model, mom0, mom1, **OBS)
    assert fitted.v_disp.value == 25.0 and fitted.fixed["v_disp"]
    assert "v_disp" not in fitter.fit_info["free_parameters"]
    assert fitter.fit_info["table"]["v_disp_std"][0] == 0
    assert not model.fixed["v_disp"]  # the model given is not modified
    assert not [w for w in recwarn if "edge of the network" in str(w.message)]
    # The geometry is that of the fit with mom2: mom2 does not move it.
    m0, m1, m2 = _maps()
    with_mom2 = fitter(ExponentialArctanDisk(), m0, m1, mom2=m2, **OBS)
    assert with_mom2.inclination.value == pytest.approx(fitted.inclination.value, abs=1e-6)


def test_a_fixed_dispersion_is_kept_and_a_model_without_one_warns(fitter):
    mom0, mom1, mom2 = _maps()
    model = ExponentialArctanDisk(v_disp=12 * KMS, fixed={"v_disp": True})
    with pytest.warns(UserWarning, match="no free dispersion parameter"):
        fitted = fitter(model, mom0, mom1, mom2=mom2, **OBS)
    assert fitted.v_disp.value == 12.0


def test_ring_by_ring_dispersion_follows_a_declining_profile(fitter):
    radii = np.arange(1, 11) * 3.0
    sigma = 10.0 + 30.0 * np.exp(-radii / 6.0)
    nodes = {f"v_{k}": v * KMS for k, v in enumerate(
        2 / np.pi * 210 * np.arctan(radii / 2.0), 1)}
    nodes.update({f"sb_{k}": s for k, s in enumerate(np.exp(-radii / 6.0), 1)})
    nodes.update({f"v_disp_{k}": s * KMS for k, s in enumerate(sigma, 1)})
    truth = TiltedRingDisk(r_outer=30 * u.arcsec, inclination=55 * u.deg, pa=130 * u.deg,
                           v_sys=1500 * KMS, **nodes)
    mom0, mom1, mom2 = truth.render((64, 64), 1 * u.arcsec, beam=3 * u.arcsec, moment2=True)
    rng = np.random.default_rng(2)
    fitted = fitter(TiltedRingDisk(), mom0, mom1,
                    mom2=mom2 + rng.normal(0, 1.0, mom2.shape) * KMS, pixel_scale=1 * u.arcsec,
                    beam=3 * u.arcsec)
    rings = fitter.fit_info["rings"]
    r = rings["radius"].to_value(u.arcsec)
    inner = r < 18.0  # where the disc is bright
    true = 10.0 + 30.0 * np.exp(-r / 6.0)
    err = rings["v_disp"].to_value(KMS) - true
    assert np.all(np.abs(err[inner]) < 4.0) and np.median(np.abs(err[inner])) < 2.0
    assert np.all(rings["v_disp_std"][inner].to_value(KMS) > 0)
    assert fitted.dispersion_curve(3 * u.arcsec, band=False).to_value(KMS) > 25.0
    # The MC band at the rings: as wide as the errors are.
    band = fitted.dispersion_curve(r[inner] * u.arcsec)
    assert np.allclose(band["v_disp_std"], rings["v_disp_std"][inner], rtol=0.35)
    assert np.median(np.abs(band["v_disp"].to_value(KMS) - true[inner])
                     / band["v_disp_std"].to_value(KMS)) < 2.0


def test_bad_mom2_inputs_name_the_argument(fitter):
    mom0, mom1, mom2 = _maps()
    with pytest.raises(ValueError, match="mom2_err= is the noise of a mom2 map"):
        fitter(ExponentialArctanDisk(), mom0, mom1, mom2_err=mom2, **OBS)
    with pytest.raises(ValueError, match="mom2 has negative values"):
        fitter(ExponentialArctanDisk(), mom0, mom1, mom2=-mom2, **OBS)
    with pytest.raises(u.UnitsError, match="mom2 must be in velocity units"):
        fitter(ExponentialArctanDisk(), mom0, mom1, mom2=mom2.value * u.Jy, **OBS)
    with pytest.raises(ValueError, match=r"mom2 has shape \(10, 10\)"):
        fitter(ExponentialArctanDisk(), mom0, mom1, mom2=np.ones((10, 10)), **OBS)
    with pytest.raises(ValueError, match="cube_options= is for a cube"):
        fitter(ExponentialArctanDisk(), mom0, mom1, cube_options={"clip": 3}, **OBS)
    with pytest.raises(TypeError, match="one map without mom1"):
        fitter(ExponentialArctanDisk(), mom0.value)


def _cube_hdu(seed=3):
    """A cube of a disc at 53 deg, arctan rotation, 20 km/s lines, a 2" beam, noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    v = np.arange(1200.0, 1801.0, 5.0)
    y, x = np.mgrid[:48, :48] - 23.5
    cos_i = 0.6
    radius = np.hypot(x, y / cos_i)  # major axis along x: PA 270 (receding to the West)
    cos_phi = np.where(radius > 0, x / np.maximum(radius, 1e-9), 0.0)
    vlos = 1500 + 200 * (2 / np.pi) * np.arctan(radius / 2.0) * 0.8 * cos_phi
    line = np.exp(-0.5 * ((v[:, None, None] - vlos) / 20.0) ** 2)
    cube = np.exp(-radius / 7) * line
    cube = ndimage.gaussian_filter(cube, sigma=(0, 2 / 2.3548, 2 / 2.3548))
    cube /= cube.max()
    hdu = fits.PrimaryHDU((cube + rng.normal(0, 0.01, cube.shape)).astype(np.float32))
    for k, (t, val, d, n) in enumerate([("RA---SIN", 180.0, -1 / 3600, 24.5),
                                        ("DEC--SIN", 10.0, 1 / 3600, 24.5),
                                        ("VRAD", 1200.0, 5.0, 1.0)], start=1):
        hdu.header.update({f"CTYPE{k}": t, f"CRVAL{k}": val, f"CDELT{k}": d, f"CRPIX{k}": n})
    hdu.header.update(CUNIT3="km/s", BUNIT="Jy/beam", BMAJ=2 / 3600, BMIN=2 / 3600, BPA=0)
    return hdu


def test_a_cube_in_one_call_gives_the_numbers_of_the_two_step_path(fitter, tmp_path):
    hdu = _cube_hdu()
    path = tmp_path / "cube.fits"
    hdu.writeto(path)
    before = hdu.data.copy()
    one = fitter(ExponentialArctanDisk(), str(path))
    t_one = fitter.fit_info["table"]
    m0, m1, m2, e0, e1, e2, lo, hi = moment_maps(hdu, moment2=True, errors=True, window=True)
    two = fitter(ExponentialArctanDisk(), m0, m1, mom2=m2, mom0_err=e0, mom1_err=e1,
                 mom2_err=e2, mom2_window=(lo, hi))
    t_two = fitter.fit_info["table"]
    for name in ("inclination", "pa", "v_max", "v_disp", "v_sys"):
        assert getattr(one, name).value == pytest.approx(getattr(two, name).value, rel=1e-6)
        assert t_one[f"{name}_std"][0].value == pytest.approx(t_two[f"{name}_std"][0].value,
                                                              rel=1e-6)
    assert np.array_equal(hdu.data, before)  # the cube given is not modified
    # The disc's 20 km/s lines, from a cube with 5 km/s channels and a 2" beam;
    # without the mask's ranges, the wings it cut make them look narrower.
    assert one.v_disp.value == pytest.approx(20.0, abs=1.0)
    uncut = fitter(ExponentialArctanDisk(), m0, m1, mom2=m2, mom0_err=e0, mom1_err=e1,
                   mom2_err=e2)
    assert uncut.v_disp.value < one.v_disp.value - 1.0
    assert one.inclination.value == pytest.approx(53.1, abs=3.0)
    assert one.pa.value == pytest.approx(270.0, abs=3.0)
    # The same from an HDU, an HDUList, and with moment_maps options.
    again = fitter(ExponentialArctanDisk(), fits.HDUList([hdu]))
    assert again.v_disp.value == pytest.approx(one.v_disp.value, rel=1e-6)
    clipped = fitter(ExponentialArctanDisk(), hdu, cube_options={"clip": 6.0})
    assert clipped.v_disp.value != one.v_disp.value


def test_a_specutils_spectrum_cube_is_accepted(fitter):
    from astropy.wcs import WCS
    from specutils import Spectrum

    hdu = _cube_hdu()
    wcs = WCS(hdu.header)
    spectrum = Spectrum(flux=hdu.data.astype(float) * u.Jy / u.beam, wcs=wcs,
                        meta={"header": hdu.header})
    fitted = fitter(ExponentialArctanDisk(), spectrum)
    direct = fitter(ExponentialArctanDisk(), hdu)
    assert fitted.v_disp.value == pytest.approx(direct.v_disp.value, rel=1e-6)


def test_cube_moments_refuses_options_it_sets():
    with pytest.raises(TypeError, match="may not set 'errors'"):
        cube_moments(_cube_hdu(), errors=False)


def test_truncated_width_is_the_moment_of_a_cut_gaussian():
    import torch

    from astrokin.fitting.map_problems import truncated_width

    v = np.linspace(-200, 200, 400001)
    for c, s, lo, hi in [(3.0, 20.0, -25.0, 40.0), (0.0, 10.0, -5.0, 30.0), (5.0, 8.0, -80, 90)]:
        line = np.exp(-0.5 * ((v - c) / s) ** 2) * ((v >= lo) & (v <= hi))
        mean = (line * v).sum() / line.sum()
        want = np.sqrt((line * (v - mean) ** 2).sum() / line.sum())
        got = truncated_width(*(torch.tensor(x, dtype=torch.float64) for x in (c, s, lo, hi)))
        assert float(got) == pytest.approx(want, rel=1e-4)
    # No cut: the width itself; a window that misses the line: left as it is.
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    one = torch.tensor(1.0, dtype=torch.float64)
    assert float(truncated_width(0 * one, 7 * one, -inf, inf)) == pytest.approx(7.0)
    assert float(truncated_width(0 * one, 7 * one, 100 * one, 200 * one)) == 7.0


def test_the_mask_window_needs_mom2_and_two_maps(fitter):
    mom0, mom1, mom2 = _maps()
    with pytest.raises(ValueError, match="mom2_window= is the velocity range of a mom2 map"):
        fitter(ExponentialArctanDisk(), mom0, mom1, mom2_window=(mom1, mom1), **OBS)
    with pytest.raises(TypeError, match=r"mom2_window must be a pair \(v_low, v_high\)"):
        fitter(ExponentialArctanDisk(), mom0, mom1, mom2=mom2, mom2_window=mom1, **OBS)


def test_a_spectral_cube_is_fitted_as_its_hdu(fitter):
    spectral_cube = pytest.importorskip("spectral_cube")
    hdu = _cube_hdu()
    cube = spectral_cube.SpectralCube.read(hdu)
    fitted = fitter(ExponentialArctanDisk(), cube)
    direct = fitter(ExponentialArctanDisk(), hdu)
    for name in ("inclination", "pa", "v_max", "v_disp"):
        assert getattr(fitted, name).value == pytest.approx(getattr(direct, name).value,
                                                            rel=1e-6)


def test_problems_of_two_map_sizes_fitted_in_threads_equal_one_after_another(fitter):
    # Maps of 64 and 48 px are two problems, whose dispersions are fitted side
    # by side in two threads with two torch threads, in turn with one.
    import torch

    truth = ExponentialArctanDisk(**GEOMETRY, v_disp=15 * KMS)
    big = _maps(v_disp=18.0, seed=1)
    small = [m[8:56, 8:56] for m in truth.render((64, 64), 1 * u.arcsec, beam=4 * u.arcsec,
                                                 moment2=True)]
    small[2] = small[2] + np.random.default_rng(2).normal(0.0, 2.0, small[2].shape) * KMS
    maps = [[big[k], small[k]] for k in range(3)]
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            fitter(ExponentialArctanDisk(), maps[0], maps[1], mom2=maps[2], **OBS)
            table = fitter.fit_info["table"]
            out.append((table["v_disp"].value.copy(), table["v_disp_std"].value.copy()))
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-9)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-6)
    assert abs(out[0][0][0] - 18.0) < 1.5 and abs(out[0][0][1] - 15.0) < 1.5
