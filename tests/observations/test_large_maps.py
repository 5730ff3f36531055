"""Large maps: cut out and binned before anything is made at full size.

`astrokin.fitting.binning` turns maps with a side over ``MAX_MAP_SIDE`` into
the box around their emission, averaged in blocks; the fitting frame maps
the results back to the input's pixels. The tests lower ``MAX_MAP_SIDE`` so
that maps of a few hundred pixels take that path.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from astrokin.fitting import binning, preprocessing
from astrokin.fitting.binning import Reduction, block_mean, reduce_map, valid_box
from astrokin.fitting.preprocessing import parse_maps
from astrokin.models import ExponentialArctanDisk

TRUTH = dict(inclination=55.0 * u.deg, pa=120.0 * u.deg, x_0=-23.0 * u.arcsec,
             y_0=14.0 * u.arcsec, r_scale=9.0 * u.arcsec, r_turn=3.0 * u.arcsec,
             v_max=200.0 * u.km / u.s, v_sys=1500.0 * u.km / u.s)
SHAPE = (301, 263)  # sides that no binning divides
SCALE = 0.5 * u.arcsec
BEAM = 2.0 * u.arcsec


@pytest.fixture(scope="module")
def large_maps():
    mom0, mom1 = ExponentialArctanDisk(**TRUTH).render(SHAPE, SCALE, beam=BEAM)
    return mom0.value, mom1.to_value(u.km / u.s)


def _reference_block_mean(data, valid, b, weights=None):
    ny, nx = data.shape
    out = np.full((-(-ny // b), -(-nx // b)), np.nan)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = (slice(i * b, (i + 1) * b), slice(j * b, (j + 1) * b))
            ok = valid[block]
            if ok.sum() < 0.5 * ok.size:
                continue
            v = data[block][ok]
            w = None if weights is None else np.clip(weights[block][ok], 0, None)
            out[i, j] = v.mean() if w is None or w.sum() == 0 else np.sum(w * v) / w.sum()
    return out


@pytest.mark.parametrize("b", [1, 3, 7])
def test_block_means_equal_a_loop_over_blocks(b, monkeypatch):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(53, 40))
    weights = rng.uniform(-0.2, 1.0, size=data.shape)
    valid = rng.uniform(size=data.shape) > 0.3
    monkeypatch.setattr(binning, "STRIP_PIXELS", 200)  # many strips
    np.testing.assert_allclose(block_mean(data, b, keep=valid),
                               _reference_block_mean(data, valid, b), rtol=1e-12)
    np.testing.assert_allclose(block_mean(data, b, keep=valid, weights=weights),
                               _reference_block_mean(data, valid, b, weights), rtol=1e-12)
    # NaN is no data, as a False in keep is.
    holes = np.where(valid, data, np.nan)
    np.testing.assert_allclose(block_mean(holes, b), _reference_block_mean(data, valid, b),
                               rtol=1e-12)


def test_valid_box_keeps_the_main_emission_and_a_margin():
    valid = np.zeros((3000, 2000), dtype=bool)
    valid[1200:1600, 500:900] = True
    valid[2900, 1900] = True  # a stray pixel
    r0, r1, c0, c1 = valid_box(valid, beam_pixels=10.0)
    # The emission plus 15% of its size and a beam on each side, to within the
    # coarse grid's blocks (6 pixels for a 3000-pixel side).
    expected = (1200 - 70, 1600 + 70, 500 - 70, 900 + 70)
    assert r0 <= expected[0] and r1 >= expected[1] and c0 <= expected[2] and c1 >= expected[3]
    np.testing.assert_allclose((r0, r1, c0, c1), expected, atol=6 * 1.3 + 1)
    # Exactly, when the blocks are single pixels.
    assert valid_box(valid, beam_pixels=10.0, factor=1) == expected


def test_the_reduction_maps_pixels_back_to_the_input():
    r = Reduction(crop=(7, 11), binning=5, input_shape=(40, 33), box=(33, 22))
    # The centre of a reduced pixel is the mean of its input pixels' positions.
    rows, cols = np.unravel_index(r.input_indices([0], (7, 5)), r.input_shape)
    x, y = r.to_input_pixels(0.0, 0.0)
    assert (float(x), float(y)) == (cols.mean(), rows.mean()) == (13.0, 9.0)
    # Pixels beyond the input map are left out of the last block.
    rows, cols = np.unravel_index(r.input_indices([34], (7, 5)), r.input_shape)
    assert rows.min() == 37 and rows.max() == 39 and cols.min() == 31 and cols.max() == 32
    assert r.input_slices((1, 1), (6, 4)) == (slice(12, 40), slice(16, 33))


def test_a_map_larger_than_the_limit_is_binned_without_a_full_size_float_copy(monkeypatch):
    """Reading a 4000 x 4000 float32 map allocates less than half a float64 copy of it.

    (What is left is bounded whatever the map's size: the masks of valid
    pixels, one strip at a time, and the cleaning of the binned map.)
    """
    from astrokin.fitting import cleaning

    y, x = np.mgrid[:4000, :4000].astype(np.float32)
    r = np.hypot(x - 2100, y - 1900)
    mom0 = np.where(r < 1500, np.exp(-r / 400), np.nan).astype(np.float32)
    mom1 = (1500 + 200 * (x - 2100) / (r + 50)).astype(np.float32)
    del x, y, r
    monkeypatch.setattr(binning, "STRIP_PIXELS", 262_144)
    monkeypatch.setattr(cleaning, "WINDOW_BLOCK", 65_536)
    tracemalloc.start()
    try:
        obs = parse_maps(mom0, mom1, pixel_scale=0.1 * u.arcsec, beam=0.5 * u.arcsec)[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_float64_copy = mom0.size * 8
    assert peak < 0.4 * one_float64_copy, peak / 2**20
    # The disc and its margin span 3855 pixels: 8 to a block, 482 a side.
    assert obs.reduction.binning == 8 and max(obs.shape) <= binning.MAX_MAP_SIDE
    assert obs.pixel_scale == pytest.approx(0.8)


@pytest.fixture(scope="module")
def bundled():
    from astrokin.fitting import NeuralKinematicFitter

    return NeuralKinematicFitter.pretrained()


@pytest.mark.parametrize("flip", [False, True])
def test_a_binned_map_is_fitted_in_the_input_maps_frame(large_maps, bundled, flip,
                                                        monkeypatch):
    """Binning a noiseless render is exact: the fit finds the truth, in input pixels."""
    mom0, mom1 = large_maps
    ps = SCALE.to_value(u.deg)
    header = WCS(naxis=2)
    header.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    header.wcs.crval = [150.0, 20.0]
    header.wcs.crpix = [100.0, 120.0]
    header.wcs.cdelt = [-ps, ps]
    if flip:
        # East along +column: the same sky, stored mirrored.
        mom0, mom1 = mom0[:, ::-1], mom1[:, ::-1]
        header.wcs.cdelt = [ps, ps]
    hdr = header.to_header()
    hdu0, hdu1 = fits.ImageHDU(mom0, hdr), fits.ImageHDU(mom1, hdr)
    hdu1.header["BUNIT"] = "km/s"
    monkeypatch.setattr(preprocessing, "MAX_MAP_SIDE", 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = bundled(ExponentialArctanDisk(), hdu0, hdu1, beam=BEAM)
    info = bundled.fit_info
    assert info["binning"] == [5]
    table = info["table"]
    for name in ("inclination", "pa"):
        assert getattr(fitted, name).value == pytest.approx(TRUTH[name].value, abs=0.2), name
    # The centre, in the input map's pixels (0-based).
    ny, nx = SHAPE
    x_true = (nx - 1) / 2 + TRUTH["x_0"].to_value(u.arcsec) / SCALE.value
    y_true = (ny - 1) / 2 + TRUTH["y_0"].to_value(u.arcsec) / SCALE.value
    if flip:
        x_true = nx - 1 - x_true
    assert table["x_center_pix"][0] == pytest.approx(x_true, abs=0.1)
    assert table["y_center_pix"][0] == pytest.approx(y_true, abs=0.1)
    assert table["pixel_scale"][0].to_value(u.arcsec) == pytest.approx(SCALE.value)
    rows, cols = info["cutout"][0]
    assert rows.start <= y_true < rows.stop and cols.start <= x_true < cols.stop
    assert rows.stop <= ny and cols.stop <= nx


def test_rejected_pixels_of_a_binned_map_are_named_in_the_input_map(large_maps, monkeypatch):
    mom0, mom1 = large_maps
    mom1 = mom1.copy()
    mom1[150, 100] += 20000.0  # one wild pixel
    monkeypatch.setattr(preprocessing, "MAX_MAP_SIDE", 64)
    exclude = np.zeros(SHAPE, dtype=bool)
    exclude[10:20, 30:37] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = parse_maps(mom0, mom1, pixel_scale=SCALE, beam=BEAM, exclude=exclude)[0]
    assert obs.reduction.binning == 5
    spurious = np.concatenate([v for k, v in obs.rejected.items() if k != "excluded"])
    assert np.ravel_multi_index((150, 100), SHAPE) in spurious
    # A mask is applied at full resolution: exactly its pixels are listed.
    np.testing.assert_array_equal(obs.rejected["excluded"], np.flatnonzero(exclude))


def test_maps_under_the_limit_are_not_reduced(large_maps):
    mom0, mom1 = large_maps
    obs = parse_maps(mom0, mom1, pixel_scale=SCALE, beam=BEAM)[0]
    assert obs.reduction.binning == 1 and obs.reduction.input_shape == SHAPE


def test_reduce_map_never_modifies_its_inputs(large_maps):
    mom0, mom1 = (m.copy() for m in large_maps)
    before = mom0.copy(), mom1.copy()
    reduce_map(mom0, mom1, beam_pixels=4.0, max_side=50)
    np.testing.assert_array_equal(mom0, before[0])
    np.testing.assert_array_equal(mom1, before[1])
