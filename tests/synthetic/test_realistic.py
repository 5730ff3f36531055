"""The realistic prior: ring discs of real families, textured, noisy and clipped."""

import astropy.units as u
import numpy as np
import pytest

from astrokin.fitting.parameters import CENTRE_FRACTION
from astrokin.synthetic import BRIGHTNESS_FAMILIES, ROTATION_FAMILIES, RealisticGenerator


@pytest.fixture(scope="module")
def galaxies():
    return RealisticGenerator(seed=3).draw(256)


def test_every_family_is_drawn_and_the_truth_has_the_ring_model_s_parameters(galaxies):
    info = galaxies.info
    assert set(info["brightness_family"]) == set(BRIGHTNESS_FAMILIES)
    assert set(info["rotation_family"]) == set(ROTATION_FAMILIES)
    assert set(info["texture"]) == {"none", "clumps", "arms", "clumps+arms"}
    assert 0.35 < np.mean(info["texture"] != "none") < 0.65  # texture_fraction 0.5
    assert type(galaxies.model(0)).__name__ == "TiltedRingDisk10"
    t = galaxies.params
    assert set(galaxies.model_class.param_names) <= set(t.colnames)
    # Every PA, inclinations 10-88 deg, centres within 15% of the half-width.
    assert t["inclination"].min() >= 10 * u.deg and t["inclination"].max() <= 88 * u.deg
    assert np.ptp(t["pa"].value) > 300
    assert np.abs(t["x_0"].value).max() <= CENTRE_FRACTION * 31.5


def test_discs_are_4_to_30_beams_across_and_fit_the_map(galaxies):
    diameter = 2 * galaxies.params["r_outer"].value
    beams = diameter / galaxies.beams[:, 0]
    assert beams.min() >= 4.0 - 1e-9
    # Large beams on a 64-pixel map: the disc is as large as the map holds.
    assert diameter.max() <= 1.6 * 31.5 + 1e-9
    assert np.all((galaxies.beams[:, 0] >= 2.0) & (galaxies.beams[:, 0] <= 6.0))


def test_families_shape_the_nodes(galaxies):
    t, info = galaxies.params, galaxies.info
    sb = np.stack([t[f"sb_{k}"] for k in range(1, 11)], axis=1)
    v = np.stack([t[f"v_{k}"].value for k in range(1, 11)], axis=1)
    hole = info["brightness_family"] == "hole"
    expo = info["brightness_family"] == "exponential"
    # A hole is (almost always) brighter away from the centre; an exponential only falls.
    assert np.mean(sb[hole].max(axis=1) > 1.0) > 0.8
    assert np.all(np.diff(sb[expo], axis=1) < 0) and np.all(sb[expo] < 1)
    assert np.all((sb >= 1e-3) & (sb <= 12.0))
    # Arctan curves rise; some Courteau curves decline; most bulge curves fall
    # somewhere after their peak.
    arctan = info["rotation_family"] == "arctan"
    assert np.all(np.diff(v[arctan], axis=1) > 0)
    courteau = info["rotation_family"] == "courteau"
    assert np.any(v[courteau, -1] < 0.95 * v[courteau].max(axis=1))
    bulge = info["rotation_family"] == "bulge"
    assert np.mean(np.any(np.diff(v[bulge], axis=1) < 0, axis=1)) > 0.5
    # The projected speeds are those drawn (50-400 km/s), within the bounds.
    vsini = v.max(axis=1) * np.sin(np.radians(t["inclination"].value))
    assert v.max() <= 1000.0 and np.median(vsini) > 100


def test_a_smooth_noiseless_galaxy_is_its_model_rendered():
    gen = RealisticGenerator(seed=0, noise_fraction=0.0, texture_fraction=0.0)
    gals = gen.draw(4)
    for i in range(4):
        b = gals.beam(i)
        mom0, mom1 = gals.model(i).render((64, 64), 1 * u.arcsec, beam=b, alias_order=0)
        m0 = mom0.value / mom0.value.max()
        keep = np.isfinite(gals.mom1[i])
        # Noiseless maps are clipped at 1e-3 of the peak, as the other generator's.
        assert np.allclose(gals.mom0[i][keep] / gals.mom0[i].max(), m0[keep], atol=1e-4)
        assert np.allclose(gals.mom1[i][keep], mom1.value[keep], atol=0.05)
        assert np.all(m0[~keep] < 1.01e-3)


def test_texture_changes_the_intensity_not_the_velocities():
    plain = RealisticGenerator(seed=5, noise_fraction=0.0, texture_fraction=0.0).draw(6)
    textured = RealisticGenerator(seed=5, noise_fraction=0.0, texture_fraction=1.0).draw(6)
    for i in range(6):
        both = np.isfinite(plain.mom1[i]) & np.isfinite(textured.mom1[i])
        ratio = textured.mom0[i][both] / plain.mom0[i][both]
        assert np.std(np.log(ratio)) > 0.05  # clumps or arms
        assert np.allclose(textured.mom1[i][both], plain.mom1[i][both])


def test_noise_is_added_and_clipped_at_the_mask_level():
    gals = RealisticGenerator(seed=2, noise_fraction=1.0, snr_range=(10, 10)).draw(8)
    assert np.all(gals.params["snr"] == 10)
    for i in range(8):
        m0, m1 = gals.mom0[i], gals.mom1[i]
        rms = gals.info["noise_rms"][i]
        # The noise is a tenth of the (noiseless) peak; what survives the clip is
        # above 3 times it, and the clipped pixels are blank.
        assert 9 * rms < m0.max() < 13 * rms
        assert m0[np.isfinite(m1)].min() >= 3 * rms * (1 - 1e-6)
        assert np.all(m0[~np.isfinite(m1)] == 0)
        assert np.isfinite(m1).sum() > 20


def test_reproducible_with_a_seed():
    a = RealisticGenerator(seed=11).draw(5)
    b = RealisticGenerator(seed=11).draw(5)
    np.testing.assert_array_equal(a.mom0, b.mom0)
    np.testing.assert_array_equal(a.params["v_3"], b.params["v_3"])
