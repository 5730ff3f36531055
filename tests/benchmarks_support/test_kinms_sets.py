"""Checks of benchmarks/kinms_sets.py: conventions against astrokin's renderer, masks, caching."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u

pytest.importorskip("kinms")
pytest.importorskip("scipy")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name):
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ks = _load("kinms_sets")


def _moment_pa(image):
    """Position angle (North through East, East = -column) and FWHMs from second moments."""
    y, x = np.mgrid[:image.shape[0], :image.shape[1]]
    w = image / image.sum()
    xc, yc = (w * x).sum(), (w * y).sum()
    cxx, cyy = (w * (x - xc) ** 2).sum(), (w * (y - yc) ** 2).sum()
    cxy = (w * (x - xc) * (y - yc)).sum()
    ev, evec = np.linalg.eigh([[cxx, cxy], [cxy, cyy]])
    v = evec[:, 1]
    pa = np.degrees(np.arctan2(-v[0], v[1])) % 180.0
    return pa, np.sqrt(ev[::-1] * 8 * np.log(2)), (xc, yc)


@pytest.mark.parametrize("bpa", [0.0, 30.0, 100.0, 160.0])
def test_beam_kernel_orientation(bpa):
    k = ks.gaussian_beam_kernel(6.0, 2.0, bpa)
    pa, fwhm, (xc, yc) = _moment_pa(k)
    assert abs(((pa - bpa) + 90) % 180 - 90) < 0.1
    np.testing.assert_allclose(fwhm, [6.0, 2.0], rtol=0.01)
    np.testing.assert_allclose((xc, yc), ((k.shape[1] - 1) / 2, (k.shape[0] - 1) / 2))


@pytest.mark.parametrize("bpa", [30.0, 100.0])
def test_beam_kernel_matches_astrokin_renderer(bpa):
    """The renderer's beamed map = its beamless map convolved with our kernel."""
    from scipy.signal import fftconvolve

    from astrokin.models import ExponentialArctanDisk

    disk = ExponentialArctanDisk(inclination=40 * u.deg, pa=(bpa + 50) * u.deg,
                                 r_scale=1.0 * u.arcsec, r_turn=1 * u.arcsec,
                                 v_max=100 * u.km / u.s)
    beamed = disk.render((64, 64), 1 * u.arcsec,
                         beam=(6 * u.arcsec, 2 * u.arcsec, bpa * u.deg))[0].value
    bare = disk.render((64, 64), 1 * u.arcsec, beam=None)[0].value
    ours = fftconvolve(bare, ks.gaussian_beam_kernel(6.0, 2.0, bpa), mode="same")
    assert np.abs(beamed / beamed.max() - ours / ours.max()).max() < 0.03
    # ... and differs clearly from the beam mirrored about North (PA -> -PA)
    mirrored = fftconvolve(bare, ks.gaussian_beam_kernel(6.0, 2.0, -bpa), mode="same")
    assert np.abs(beamed / beamed.max() - mirrored / mirrored.max()).max() > 0.1


def _astrokin_maps(kset, i):
    from astrokin.models import ExponentialArctanDisk

    t = {k: float(v[i]) for k, v in kset.truth.items()}
    disk = ExponentialArctanDisk(
        inclination=t["inclination"] * u.deg, pa=t["pa"] * u.deg, x_0=t["x_0"] * u.arcsec,
        y_0=t["y_0"] * u.arcsec, v_sys=t["v_sys"] * u.km / u.s, r_scale=t["r_scale"] * u.arcsec,
        r_turn=t["r_turn"] * u.arcsec, v_max=t["v_max"] * u.km / u.s)
    b = kset.beam[i]
    mom0, mom1 = disk.render(kset.mom0[i].shape, kset.pixel_scale[i] * u.arcsec,
                             beam=(b[0] * u.arcsec, b[1] * u.arcsec, b[2] * u.deg))
    return mom0.value, mom1.to_value(u.km / u.s)


def _compare(kset, i):
    m0, m1 = _astrokin_maps(kset, i)
    bright = kset.mom0[i] > 0.05 * kset.mom0[i].max()
    ok = bright & np.isfinite(kset.mom1[i]) & np.isfinite(m1)
    d = kset.mom1[i][ok] - m1[ok]
    return np.median(d), np.median(np.abs(d)), ok.sum()


def test_paper_galaxies_match_astrokin():
    kset = ks.generate("paper", 3, clouds=100_000, seed=3, verbose=False)
    assert kset.mom0[0].shape == (64, 64) and kset.mom0[0].dtype == np.float32
    np.testing.assert_array_equal(kset.truth["pa"], 0.0)
    np.testing.assert_array_equal(kset.truth["x_0"], 0.0)
    np.testing.assert_allclose(kset.truth["vsini"],
                               kset.truth["v_max"] * np.sin(np.radians(kset.truth["inclination"])))
    for i in range(3):
        med, mad, n = _compare(kset, i)
        assert n > 50
        assert abs(med) < 0.01 * kset.truth["vsini"][i] + 1.0
        assert mad < 0.02 * kset.truth["vsini"][i] + 2.0


def test_hard_galaxies_match_astrokin_without_noise():
    """PA, centre offsets, v_sys and elliptical beams land where astrokin puts them."""
    rng = np.random.default_rng(5)
    p = ks.draw_parameters("hard", 4, rng)
    p["snr"][:] = 1e4  # effectively noiseless; the mask then keeps nearly all emission
    # make the geometry unambiguous: moderate inclination, a resolved disc
    p["inclination"][:] = [50.0, 65.0, 40.0, 70.0]
    p["v_max"] = p["vsini"] / np.sin(np.radians(p["inclination"]))
    p["r_scale"] = 0.3 * 0.5 * p["nx"]
    p["r_turn"] = 0.1 * 0.5 * p["nx"]
    mom0, mom1 = [], []
    for i in range(4):
        m0, m1, _ = ks.make_galaxy("hard", p, i, clouds=100_000, seed=i + 1, rng=rng)
        mom0.append(m0)
        mom1.append(m1)
    kset = ks.KinMSSet("hard", mom0, mom1, {k: p[k] for k in ks.PARAMETERS}, p["pixel_scale"],
                       np.stack([p["bmaj"], p["bmin"], p["bpa"]], axis=1))
    assert {m.shape for m in mom0} == {(64, 64), (100, 100)}
    for i in range(4):
        med, mad, n = _compare(kset, i)
        assert n > 100
        assert abs(med) < 2.0, (i, med)
        assert mad < 0.03 * p["vsini"][i] + 3.0, (i, mad)


def test_smooth_and_clip_rejects_pure_noise():
    rng = np.random.default_rng(0)
    k = ks.gaussian_beam_kernel(3.0, 2.5, 30.0)
    noise = ks.convolve_channels(rng.standard_normal((120, 64, 64)), k)
    noise /= np.sqrt((k ** 2).sum())
    assert abs(noise.std() - 1.0) < 0.05
    mask, sigma = ks.smooth_and_clip_mask(noise, noise, k, core_channels=3, min_area=10.0)
    assert mask.sum() == 0
    assert 0 < sigma < 1


def test_noisy_hard_galaxy_has_masked_mom1(tmp_path):
    kset = ks.generate("hard", 2, clouds=50_000, seed=2, verbose=False)
    for m0, m1 in zip(kset.mom0, kset.mom1, strict=True):
        good = np.isfinite(m1)
        assert 0.02 < good.mean() < 0.95
        assert np.all(m0[~good] == 0) or np.all(np.isfinite(m0))
    path = ks.save_set(kset, tmp_path / "kinms_hard.npz")
    back = ks.load_set("hard", tmp_path)
    assert back.name == "hard" and len(back) == 2
    for a, b in zip(kset.mom1, back.mom1, strict=True):
        np.testing.assert_array_equal(a, b)
    for k in ks.PARAMETERS:
        np.testing.assert_array_equal(kset.truth[k], back.truth[k])
    np.testing.assert_array_equal(kset.beam, back.beam)
    assert back.meta["n"] == 2 and path.exists()
    assert sorted(back.groups()) == [(64, 64), (100, 100)]
    np.testing.assert_allclose(back.half_width, [32.0, 50.0])
