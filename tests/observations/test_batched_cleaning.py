"""The spurious-pixel rejection on stacks of maps: each map's flags as alone."""

import numpy as np
import pytest
from astropy import units as u
from scipy import ndimage

from astrokin.fitting import cleaning
from astrokin.fitting.cleaning import find_spurious
from astrokin.fitting.preprocessing import parse_maps
from astrokin.models import ExponentialArctanDisk
from astrokin.synthetic import make_galaxies


@pytest.fixture(scope="module")
def dirty():
    """Noisy, masked discs with spikes, wild pixels and small islands added."""
    g = make_galaxies(ExponentialArctanDisk(), 24, shape=(48, 48), seed=3,
                      beam=2 * u.pix, mask_snr=1)
    m0 = np.array(g.mom0, dtype=float)
    m1 = np.array(g.mom1, dtype=float)
    rng = np.random.default_rng(5)
    for i in range(len(m1)):
        for _ in range(rng.integers(1, 5)):
            y, x = rng.integers(4, 44, 2)
            m1[i, y, x] += rng.choice([-1, 1]) * rng.uniform(60, 5000)
        if i % 3 == 0:
            m1[i, 1:3, 44:46] = 100.0
            m0[i, 1:3, 44:46] = 1.0
    return m0, m1, rng.uniform(1, 12, len(m1))


def _reference_local(v, ok):
    """Median and count of the valid 5x5 neighbours, by scipy's generic filter."""
    a = np.where(ok, v, np.nan)
    foot = np.ones((5, 5), bool)
    foot[2, 2] = False
    med = ndimage.generic_filter(a, np.nanmedian, footprint=foot, mode="constant",
                                 cval=np.nan)
    count = ndimage.generic_filter(np.isfinite(a).astype(float), np.sum, footprint=foot,
                                   mode="constant", cval=0.0)
    return med, count


def test_local_median_equals_scipy_generic_filter(dirty):
    _, m1, _ = dirty
    ok = np.isfinite(m1[:3])
    pixels, med, count, _ = cleaning._local_median(m1[:3], ok)
    for i in range(3):
        ref_med, ref_count = _reference_local(m1[i], ok[i])
        mine = pixels // (48 * 48) == i
        flat = pixels[mine] % (48 * 48)
        np.testing.assert_array_equal(count[mine], ref_count.ravel()[flat])
        some = count[mine] > 0
        np.testing.assert_allclose(med[mine][some], ref_med.ravel()[flat][some], rtol=1e-13)


def test_a_stack_gives_each_maps_flags_as_alone(dirty):
    m0, m1, areas = dirty
    valid = np.isfinite(m0) & np.isfinite(m1)
    stack = find_spurious(m1, valid, beam_area=areas)
    assert stack["velocity_limit"].sum() > 5 and stack["local_outliers"].sum() > 5
    assert stack["islands"].sum() >= 4 * 4  # some of the 8 added islands are below a beam
    for i in range(len(m1)):
        alone = find_spurious(m1[i], valid[i], beam_area=areas[i])
        for reason, flags in alone.items():
            np.testing.assert_array_equal(flags, stack[reason][i], err_msg=f"{reason}, map {i}")


def test_windows_gathered_in_small_blocks_give_the_same_flags(dirty, monkeypatch):
    m0, m1, areas = dirty
    whole = find_spurious(m1, beam_area=areas)
    monkeypatch.setattr(cleaning, "WINDOW_BLOCK", 1000)
    blocked = find_spurious(m1, beam_area=areas)
    for reason in whole:
        np.testing.assert_array_equal(whole[reason], blocked[reason])


def test_parse_maps_rejects_the_same_pixels_in_a_batch_and_alone(dirty, monkeypatch):
    m0, m1, _ = dirty
    kw = dict(pixel_scale=1 * u.arcsec, beam=2.5 * u.arcsec)
    batch = parse_maps(m0, m1, **kw)
    for i in (0, 7, 23):
        (alone,) = parse_maps(m0[i], m1[i], **kw)
        assert alone.rejected.keys() == batch[i].rejected.keys()
        for reason in alone.rejected:
            np.testing.assert_array_equal(alone.rejected[reason], batch[i].rejected[reason])
        np.testing.assert_array_equal(alone.mom1, batch[i].mom1)
    # stacks of at most a few maps, and one thread, change nothing
    import torch

    import astrokin.fitting.preprocessing as prep

    monkeypatch.setattr(prep, "CLEANING_BLOCK", 3 * 48 * 48)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        small = parse_maps(m0, m1, **kw)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(batch, small, strict=True):
        np.testing.assert_array_equal(a.mom1, b.mom1)


def test_bad_stack_shape_is_refused():
    with pytest.raises(ValueError, match="one map"):
        find_spurious(np.zeros((2, 3, 4, 5)))


def test_group_and_map_medians_equal_numpy_median(dirty):
    _, m1, _ = dirty
    ok = np.isfinite(m1)
    ok[5] = False  # a map without valid pixels
    ok[6] = False
    ok[6, 10, 10] = True  # ... and one with a single pixel
    ok[7] &= np.arange(48)[None, :] < 47  # odd and even counts
    medians = cleaning.map_medians(m1, ok)
    for i in range(len(m1)):
        expected = np.median(m1[i][ok[i]]) if ok[i].any() else np.nan
        np.testing.assert_array_equal(medians[i], expected, err_msg=f"map {i}")
    assert np.isnan(medians[5]) and medians[6] == m1[6, 10, 10]
