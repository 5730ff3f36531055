"""Shared fixtures of the fitting tests."""

import numpy as np
import pytest
from astropy import units as u

torch = pytest.importorskip("torch")


PIXEL_SCALE = 0.5 * u.arcsec
BEAM = 1.5 * u.arcsec

#: Galaxies with known parameters (arcsec, deg, km/s) on 64x64 maps of 0.5"
#: pixels (half-width 16"), inside the default ranges of the fitter.
TRUTHS = [
    dict(inclination=60.0, pa=30.0, r_scale=4.0, r_turn=1.5, v_max=220.0, v_sys=1000.0),
    dict(inclination=40.0, pa=200.0, r_scale=3.0, r_turn=3.0, v_max=150.0, v_sys=1010.0),
    dict(inclination=75.0, pa=300.0, r_scale=5.0, r_turn=2.0, v_max=300.0, v_sys=990.0),
]


def disk(**kw):
    from astrokin.models import ExponentialArctanDisk

    units = dict(inclination=u.deg, pa=u.deg, r_scale=u.arcsec, r_turn=u.arcsec,
                 v_max=u.km / u.s, v_sys=u.km / u.s, x_0=u.arcsec, y_0=u.arcsec)
    return ExponentialArctanDisk(**{k: v * units[k] for k, v in kw.items()})


def render(truth, shape=(64, 64)):
    mom0, mom1 = disk(**truth).render(shape, PIXEL_SCALE, beam=BEAM)
    return mom0.value, mom1


@pytest.fixture(scope="session")
def rendered_stack():
    maps = [render(t) for t in TRUTHS]
    return (np.array([m[0] for m in maps]),
            u.Quantity([m[1] for m in maps]))


@pytest.fixture(scope="session")
def trained_fitter(rendered_stack):
    """A fitter briefly trained on the three galaxies (for API tests, not accuracy)."""
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    # MC dropout alone: these are tests of the fitter's API and its MC conventions
    # (refinement's are in test_refinement.py).
    fitter = NeuralKinematicFitter(mode="blind", epochs=5, learning_rate=1e-3, mc_samples=200,
                                   refine=False,
                                   seed=3, progress=False)
    mom0, mom1 = rendered_stack
    fitter.train(ExponentialArctanDisk(), mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    return fitter
