"""A blind fit of many galaxies is streamed: the same results as one block."""

import warnings

import numpy as np
import pytest
from astropy import units as u

from astrokin.fitting import fitter as fitter_module
from astrokin.models import ExponentialArctanDisk
from astrokin.synthetic import BeamPrior, make_galaxies

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def galaxies():
    return make_galaxies(ExponentialArctanDisk(), 11, shape=(40, 40), seed=7,
                         beam=BeamPrior(major=(2, 3) * u.pix, axis_ratio=(0.7, 1.0)),
                         mask_snr=2)


@pytest.fixture(scope="module")
def bundled():
    from astrokin.fitting import NeuralKinematicFitter

    return NeuralKinematicFitter.pretrained


def _fit(make, galaxies, monkeypatch, block, **options):
    monkeypatch.setattr(fitter_module, "STREAM_BLOCK", block)
    fitter = make(mc_samples=64, seed=5, **options)
    beams = [galaxies.beam(i) for i in range(len(galaxies))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = fitter(ExponentialArctanDisk(), galaxies.mom0, galaxies.mom1,
                        pixel_scale=galaxies.pixel_scale, beam=beams,
                        names=[f"g{i}" for i in range(len(galaxies))])
    return fitted, fitter.fit_info


@pytest.mark.parametrize("refine", [False, True])
def test_a_streamed_fit_equals_one_block(galaxies, bundled, monkeypatch, refine):
    one, info1 = _fit(bundled, galaxies, monkeypatch, 1000, refine=refine, keep_samples=True)
    blocks, info4 = _fit(bundled, galaxies, monkeypatch, 4, refine=refine, keep_samples=True)
    assert (info1["n_blocks"], info4["n_blocks"]) == (1, 3)
    # Equal to the rounding of float32 matrix products of different batch sizes.
    t1, t4 = info1["table"], info4["table"]
    assert t1.colnames == t4.colnames and len(t4) == len(galaxies)
    for name in t1.colnames:
        a, b = t1[name], t4[name]
        if getattr(a, "dtype", np.dtype(object)).kind in "fc":
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5,
                                       err_msg=name)
        else:
            assert list(a) == list(b), name
    for name in ("inclination", "pa", "amplitude", "v_max"):
        np.testing.assert_allclose(getattr(blocks, name).value, getattr(one, name).value,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(u.Quantity(info4["samples"][name]).value,
                                   u.Quantity(info1["samples"][name]).value,
                                   rtol=1e-5, atol=1e-5)
    assert [len(r) for r in info4["rejected"]] == [len(r) for r in info1["rejected"]]
    assert info4["cutout"] == info1["cutout"]


def test_a_streamed_fit_keeps_no_maps_of_earlier_blocks(galaxies, bundled, monkeypatch):
    """The results keep each galaxy's record, not its maps."""
    from astrokin.fitting.preprocessing import parse_maps

    obs = parse_maps(galaxies.mom0[:1], galaxies.mom1[:1], pixel_scale=galaxies.pixel_scale)[0]
    light = obs.without_maps()
    assert light.shape == obs.shape and light.mom0.nbytes == light.mom0.size * 8
    assert light.mom0.base is not None and light.mom0.strides == (0, 0)  # one value, viewed
    assert light.reduction == obs.reduction and light.offset == obs.offset
    assert light.rejected is obs.rejected and light.mom2 is None
