"""Data-weighted beam smearing: the renderer's weights, and refinement with them."""

import astropy.units as u
import numpy as np
import pytest
import torch
from scipy import ndimage

from astrokin.fitting.map_problems import SMEARING_CLIP
from astrokin.models import ExponentialArctanDisk
from astrokin.rendering import DiskRenderer, render_reference

KMS = u.km / u.s
DISK = ExponentialArctanDisk(inclination=55 * u.deg, pa=70 * u.deg, r_scale=6 * u.arcsec,
                             r_turn=2 * u.arcsec, v_max=220 * KMS, v_sys=10 * KMS)
BEAM = (4.0 * u.arcsec, 3.0 * u.arcsec, 30 * u.deg)
SHAPE = (48, 48)


def clumps(seed=0):
    """A smooth random positive field on the map's pixels, and its callable on the sky."""
    g = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(SHAPE), 2.5)
    w = np.exp(0.6 * g / g.std())
    ny, nx = SHAPE

    def field(x, y):
        return ndimage.map_coordinates(w, [y + (ny - 1) / 2, x + (nx - 1) / 2], order=1,
                                       mode="nearest")

    return w, field


def _render(weights=None, weighted_mom0=False):
    renderer = DiskRenderer(ExponentialArctanDisk, SHAPE, dtype=torch.float64)
    values = DISK.canonical_values()
    params = {k: torch.tensor([float(v)], dtype=torch.float64) for k, v in values.items()}
    beam = torch.tensor([[4.0, 3.0, 30.0]], dtype=torch.float64)
    w = None if weights is None else torch.as_tensor(weights)[None]
    m0, m1 = renderer(params, torch.ones(1, dtype=torch.float64), beam, weights=w,
                      weighted_mom0=weighted_mom0)
    return m0[0].numpy(), m1[0].numpy()


def test_weights_weight_the_velocity_map_as_a_clumpy_disc_s_own_intensity():
    w, field = clumps()
    ref0, ref1 = render_reference(DISK, SHAPE, 1 * u.arcsec, beam=BEAM, oversample=8,
                                  texture=field)
    own0, own1 = render_reference(DISK, SHAPE, 1 * u.arcsec, beam=BEAM, oversample=8)
    m0, m1 = _render(w)
    keep = ref0 > 0.05 * ref0.max()
    # The clumps move the velocities by several km/s; the weighted render follows them.
    assert np.sqrt(np.mean((own1 - ref1)[keep] ** 2)) > 2.0
    assert np.median(np.abs(m1 - ref1)[keep]) < 0.3
    # mom0 stays the model's own; weighted_mom0 gives the weighted intensity.
    np.testing.assert_allclose(m0, _render()[0], rtol=1e-12, atol=1e-12)
    wm0, _ = _render(w, weighted_mom0=True)
    # (To a few % at the central cusp, where the weights are constant over a
    # pixel in the renderer and interpolated within it in the reference.)
    assert np.median(np.abs(wm0 - ref0)[keep]) < 0.003 * ref0.max()
    assert np.abs(wm0 - ref0)[keep].max() < 0.04 * ref0.max()
    # Weights of 1 (those outside the map too) give the unweighted map, by
    # the other route through the beam: the same to round-off.
    _, flat1 = _render(np.ones(SHAPE))
    assert np.abs(flat1 - _render()[1])[keep].max() < 1e-4


def test_refinement_with_data_weights_fits_a_clumpy_velocity_map():
    from astrokin.fitting import NeuralKinematicFitter

    w, field = clumps(seed=4)
    m0, m1 = render_reference(DISK, SHAPE, 1 * u.arcsec, beam=BEAM, oversample=4,
                              texture=field)
    rng = np.random.default_rng(1)
    m0 = m0 / m0.max() + rng.normal(0, 0.005, SHAPE)
    m1 = np.where(m0 > 0.03, m1 + rng.normal(0, 1.0, SHAPE), np.nan)
    out = {}
    for weighted in (False, True):
        fitter = NeuralKinematicFitter.pretrained(mc_samples=50, seed=0, progress=False,
                                                  data_weighted=weighted)
        fitted = fitter(ExponentialArctanDisk(), m0, m1, pixel_scale=1 * u.arcsec, beam=BEAM)
        out[weighted] = fitted, fitter.fit_info["table"][0]
    # The axisymmetric model leaves the clumps' pull on the velocities (7 km/s
    # RMS against 1 km/s of noise); the weighted one halves it. (Not to the
    # noise: the exponential profile does not fit the clumpy mom0 the weights
    # are made from.)
    assert out[False][1]["rms_mom1"] > 5.0
    assert out[True][1]["rms_mom1"] < 0.6 * out[False][1]["rms_mom1"]
    assert out[True][1]["n_iterations"] > out[False][1]["n_iterations"]  # polished
    assert out[True][0].pa.value == pytest.approx(70.0, abs=1.0)
    assert out[True][0].inclination.value == pytest.approx(55.0, abs=4.0)
    assert SMEARING_CLIP[0] < 1 < SMEARING_CLIP[1]
