"""Batched Levenberg-Marquardt on real renders: where it stops, and what that costs.

A noisy rendered disc with its noise maps given (whitened residuals), fitted
with the renderer's own derivatives.
"""

import numpy as np
import pytest
from astropy import units as u

torch = pytest.importorskip("torch")

from astrokin.fitting.least_squares import levenberg_marquardt  # noqa: E402
from astrokin.fitting.map_problems import MapResiduals, prepare_problems  # noqa: E402
from astrokin.fitting.preprocessing import prepare_maps  # noqa: E402
from astrokin.models import ExponentialArctanDisk  # noqa: E402
from astrokin.rendering import DiskRenderer  # noqa: E402

FREE = ["inclination", "pa", "x_0", "y_0", "v_sys", "r_scale", "v_max"]
TRUTH = [55.0, 40.0, 0.3, -0.2, 10.0, 5.0, 200.0]


class Counted:
    """The residuals of a `MapResiduals`, counting its renders and Jacobians."""

    def __init__(self, residual):
        self.residual = residual
        self.renders = self.jacobians = 0

    def __call__(self, theta, rows, problem):
        self.renders += len(rows)
        return self.residual(theta, rows, problem)

    def linearization(self, theta, rows, problem):
        self.jacobians += len(rows)
        return self.residual.linearization(theta, rows, problem)


@pytest.fixture(scope="module")
def noisy_disc():
    cls = ExponentialArctanDisk
    disc = cls(**{nm: v * cls.canonical_unit(nm) for nm, v in zip(FREE, TRUTH, strict=True)},
               r_turn=2 * u.arcsec)
    mom0, mom1 = disc.render((48, 48), 1 * u.arcsec, beam=3 * u.arcsec)
    rng = np.random.default_rng(7)
    s0, s1 = 0.02 * float(mom0.value.max()), 5.0
    m0 = mom0.value + s0 * rng.standard_normal(mom0.shape)
    m1 = mom1.value + s1 * rng.standard_normal(mom1.shape)
    obs, _, _ = prepare_maps(m0, m1 * u.km / u.s, pixel_scale=1 * u.arcsec,
                             beam=3 * u.arcsec, cutout=False)
    (problem,) = prepare_problems(obs, noise_maps=[(np.full(m0.shape, s0),
                                                    np.full(m1.shape, s1))])
    fixed = {nm: float(getattr(cls, nm).default) for nm in cls.param_names}
    fixed["r_turn"] = 2.0
    residual = MapResiduals(DiskRenderer(cls, problem.shape, dtype=torch.float64),
                            cls.param_names, FREE, fixed, {})
    return residual, problem


def _fit(residual, problem, theta, **kw):
    p = theta.shape[1]
    options = dict(lower=torch.tensor([[5.0, -np.inf, -10, -10, -500, 0.5, 20.0]]),
                   upper=torch.tensor([[89.0, np.inf, 10, 10, 500, 30.0, 1000.0]]),
                   periodic=torch.tensor([0.0, 360.0, 0, 0, 0, 0, 0]),
                   scales=torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 1.0]]))
    options = {k: v.to(torch.float64) for k, v in options.items()}
    options["lower"], options["upper"], options["scales"] = (
        options[k].expand(len(theta), p) for k in ("lower", "upper", "scales"))
    return levenberg_marquardt(residual, theta, problem, **options, **kw)


def _errors(fit):
    """``(M, P)`` 1-sigma errors from the Jacobian at the optimum (white noise)."""
    a = fit.jacobian.transpose(1, 2) @ fit.jacobian
    return torch.sqrt(torch.diagonal(torch.linalg.inv(a), dim1=1, dim2=2)).numpy()


def test_a_fit_continued_from_its_optimum_stops_at_once(noisy_disc):
    residual, problem = noisy_disc
    start = torch.tensor([[62.0, 35.0, 0.0, 0.0, 0.0, 6.0, 180.0]], dtype=torch.float64)
    first = _fit(residual, problem, start)
    assert bool(first.converged[0])
    # The noise is known: the optimum is within a few errors of the truth.
    assert np.all(np.abs(first.theta[0].numpy() - TRUTH) <= 4.0 * _errors(first)[0])
    counted = Counted(residual)
    more = _fit(counted, problem, first.theta, start=first)
    # What is left to gain is far below the errors: a step or two, and the
    # optimum moves by a small fraction of an error bar.
    assert bool(more.converged[0]) and int(more.iterations[0]) <= 2
    assert counted.renders <= 3 and counted.jacobians <= 1
    gap = np.abs((more.theta - first.theta).numpy()) / _errors(first)
    assert gap.max() < 0.05, gap
    assert float(more.cost[0]) <= float(first.cost[0])
    # There, with the Jacobian rendered at it, the Gauss-Newton model promises
    # less than the tolerance: the fit stops before a trial render.
    counted = Counted(residual)
    again = _fit(counted, problem, more.theta, start=more)
    assert bool(again.converged[0]) and int(again.iterations[0]) == 0
    assert counted.renders == 0 and counted.jacobians == 0
    assert torch.equal(again.theta, more.theta)


def test_a_jacobian_from_elsewhere_is_rendered_at_the_optimum_even_without_a_step(noisy_disc):
    # A fit continued from its optimum with another model's Jacobian (a
    # polish with the aliased orders starts from the coarse renders') stops
    # before a trial step, and must still end with its own Jacobian there.
    from dataclasses import replace

    residual, problem = noisy_disc
    start = torch.tensor([[62.0, 35.0, 0.0, 0.0, 0.0, 6.0, 180.0]], dtype=torch.float64)
    first = _fit(residual, problem, start)
    near = _fit(residual, problem, first.theta, start=first)  # (now it stops at once)
    own = near.jacobian.clone()
    assert bool(near.fresh[0])
    foreign = replace(near, jacobian=own * 1.01, fresh=torch.zeros(1, dtype=torch.bool))
    counted = Counted(residual)
    again = _fit(counted, problem, near.theta, start=foreign)
    assert int(again.iterations[0]) == 0 and counted.renders == 0
    assert counted.jacobians == 1 and bool(again.fresh[0])
    assert torch.allclose(again.jacobian, own, rtol=1e-12, atol=0.0)
    # Marked as its own, the same Jacobian is kept (no render at all).
    counted = Counted(residual)
    kept = _fit(counted, problem, near.theta, start=replace(foreign, jacobian=own * 1.01,
                                                             fresh=torch.ones(1, dtype=torch.bool)))
    assert counted.jacobians == 0 and torch.equal(kept.jacobian, own * 1.01)


def test_rejected_steps_far_from_the_optimum_do_not_stop_the_fit(noisy_disc):
    # Far starts take rejected steps while the damping adapts; the promise of
    # the undamped model keeps them going to the optimum of a near start.
    residual, problem = noisy_disc
    starts = torch.tensor([[62.0, 35.0, 0.0, 0.0, 0.0, 6.0, 180.0],
                           [30.0, 75.0, 2.0, -2.0, 40.0, 2.0, 400.0],
                           [45.0, 60.0, 1.0, -1.0, 25.0, 3.5, 260.0]], dtype=torch.float64)
    stacked = problem.rows(torch.zeros(3, dtype=torch.long))
    counted = Counted(residual)
    fits = _fit(counted, stacked, starts)
    assert counted.renders > 3 * int(fits.iterations.min())  # steps were rejected
    assert bool(fits.converged.all())
    gap = np.abs((fits.theta[1:] - fits.theta[0]).numpy()) / _errors(fits)[0]
    assert gap.max() < 0.05, gap  # within a twentieth of an error bar
