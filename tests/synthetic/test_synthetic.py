"""Synthetic galaxies: priors, beams, noise and masking, reproducibility."""

import astropy.units as u
import numpy as np
import pytest

from astrokin.models import ExponentialArctanDisk, GaussianRingDisk
from astrokin.synthetic import BeamPrior, SyntheticGenerator, draw_parameters, make_galaxies

KMS = u.km / u.s


def test_default_priors_follow_bounds_and_map_fractions():
    t = draw_parameters(ExponentialArctanDisk(), 4000, shape=(64, 64),
                        pixel_scale=0.5 * u.arcsec, seed=0)
    half = 0.5 * 63 * 0.5  # arcsec
    inc = t["inclination"].to_value(u.deg)
    assert 10 <= inc.min() < 11 and 89 < inc.max() <= 90
    assert 0 <= t["pa"].min().value < 1 and 359 < t["pa"].max().value <= 360
    rs = t["r_scale"].to_value(u.arcsec) / half
    rt = t["r_turn"].to_value(u.arcsec) / half
    assert 0.1 <= rs.min() < 0.11 and 0.34 < rs.max() <= 0.35  # paper Table 2
    assert 0.01 <= rt.min() < 0.02 and 0.79 < rt.max() <= 0.8
    assert np.abs(t["x_0"].to_value(u.arcsec)).max() <= 0.15 * half
    # Fixed parameters keep the template's values.
    assert np.all(t["z_scale"] == 0 * u.arcsec) and np.all(t["amplitude"] == 1)


def test_priors_ranges_callables_and_ties():
    model = ExponentialArctanDisk(tied={"r_turn": lambda m: 0.5 * m.r_scale})

    def vmax(rng, n):
        return np.full(n, 123.0) * KMS

    t = draw_parameters(model, 50, seed=1, priors={"inclination": (30, 31) * u.deg,
                                                   "v_max": vmax})
    assert np.all((t["inclination"] >= 30 * u.deg) & (t["inclination"] <= 31 * u.deg))
    assert np.all(t["v_max"] == 123 * KMS)
    # A prior may depend on parameters drawn before it: v sin i uniform in 50-500.
    t = draw_parameters(model, 200, seed=2, priors={
        "v_max": lambda rng, n, drawn: rng.uniform(50, 500, n)
        / np.sin(np.deg2rad(drawn["inclination"]))})
    vsini = t["v_max"] * np.sin(t["inclination"])
    assert vsini.min() >= 50 * KMS and vsini.max() <= 500 * KMS
    np.testing.assert_allclose(t["r_turn"].value, 0.5 * t["r_scale"].value)
    with pytest.raises(ValueError, match="lacks"):
        draw_parameters(model, 3, priors={"r_ring": (1, 2)})
    with pytest.raises(u.UnitsError, match="dimensionless"):
        draw_parameters(GaussianRingDisk(), 3, priors={"beta": (0, 1) * u.km})


def test_rendered_maps_are_the_models_of_their_parameters():
    gals = make_galaxies(ExponentialArctanDisk(), 3, shape=(40, 40), pixel_scale=0.5 * u.arcsec,
                         beam=BeamPrior(major=(2, 3) * u.pix, axis_ratio=(0.5, 1)), seed=3,
                         alias_order=1)
    for i in range(3):
        mom0, mom1 = gals.model(i).render((40, 40), 0.5 * u.arcsec, beam=gals.beam(i),
                                          alias_order=1)
        # float32 (synthetic) against float64 (render): float32 round-off, ~2e-5 of the peak.
        np.testing.assert_allclose(gals.mom0[i], mom0.value, rtol=0, atol=1e-4 * mom0.value.max())
        bright = mom0.value > 1e-3 * mom0.value.max()
        np.testing.assert_allclose(gals.mom1[i][bright], mom1.value[bright], atol=0.1)
    b = gals.beams
    assert np.all((b[:, 0] >= 1.0) & (b[:, 0] <= 1.5))  # 2-3 px of 0.5"
    assert np.all(b[:, 1] <= b[:, 0]) and np.all(b[:, 1] >= 0.5 * b[:, 0])
    assert gals.info["galaxies_per_second"] > 0


def test_noise_and_masking_as_in_clipped_moment_maps():
    gals = make_galaxies(ExponentialArctanDisk(), 20, shape=(48, 48), noise=(10, 40),
                         mask_snr=3, seed=5)
    snr = gals.params["snr"]
    assert np.all((snr >= 10) & (snr <= 40))
    masked = np.isnan(gals.mom1)
    assert masked.any() and (~masked).any()
    assert np.all(gals.mom0[masked] == 0)
    # Unmasked pixels are above 3 sigma of the mom0 noise.
    peak_clean = make_galaxies(ExponentialArctanDisk(), 20, shape=(48, 48), seed=5).mom0.max(
        axis=(1, 2))
    rms = peak_clean / snr
    for i in range(20):
        assert np.all(gals.mom0[i][~masked[i]] >= 3 * rms[i] * 0.999)


def test_reproducible_with_a_seed_and_streams_fresh_galaxies():
    a = make_galaxies(ExponentialArctanDisk(), 5, shape=(32, 32), noise=20, seed=11)
    b = make_galaxies(ExponentialArctanDisk(), 5, shape=(32, 32), noise=20, seed=11)
    np.testing.assert_array_equal(a.mom0, b.mom0)
    np.testing.assert_array_equal(a.mom1, b.mom1)
    gen = SyntheticGenerator(ExponentialArctanDisk(), shape=(32, 32), seed=11)
    assert not np.array_equal(gen.draw(5).mom0, gen.draw(5).mom0)
