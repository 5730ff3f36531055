"""The shortcuts the fitter's speed rests on give what the long way gives.

Each is checked against the computation it replaces, on real renders:
rescaled residuals against residuals rendered with the new noise (upper
limits included), the renderer's Jacobian of the residuals against finite
differences, the compact noise-correlation grid against the doubled one,
the covariance's Parseval sums against convolved Jacobians, and the
recurrence for the order-2 Hankel table against scipy's Bessel function.
"""

import numpy as np
import pytest
from astropy import units as u

torch = pytest.importorskip("torch")

from scipy import special  # noqa: E402

from astrokin.fitting.least_squares import jacobian  # noqa: E402
from astrokin.fitting.map_problems import MapResiduals, prepare_problems  # noqa: E402
from astrokin.fitting.noise import (  # noqa: E402
    correlate,
    correlation_kernels,
    parameter_covariance,
    residual_correlation,
)
from astrokin.fitting.preprocessing import prepare_maps  # noqa: E402
from astrokin.fitting.refinement import _rescaled  # noqa: E402
from astrokin.models import ExponentialArctanDisk  # noqa: E402
from astrokin.rendering import DiskRenderer  # noqa: E402
from astrokin.rendering.hankel import HankelTables  # noqa: E402


def _masked_disc():
    """A rendered disc whose maps a source-finder mask cut: mom0 = 0, no mom1 outside."""
    disc = ExponentialArctanDisk(inclination=55 * u.deg, pa=40 * u.deg, r_scale=5 * u.arcsec,
                                 r_turn=2 * u.arcsec, v_max=200 * u.km / u.s)
    mom0, mom1 = disc.render((48, 48), 1 * u.arcsec, beam=3 * u.arcsec)
    m0, m1 = mom0.value.copy(), mom1.value.copy()
    y, x = np.mgrid[:48, :48]
    outside = np.hypot(x - 23.5, y - 23.5) > 17
    m0[outside], m1[outside] = 0.0, np.nan
    return m0, m1 * u.km / u.s


def test_rescaled_residuals_are_those_rendered_with_the_rescaled_noise():
    m0, m1 = _masked_disc()
    obs, _, _ = prepare_maps(m0, m1, pixel_scale=1 * u.arcsec, beam=3 * u.arcsec,
                             cutout=False)
    (problem,) = prepare_problems(obs)
    assert bool(problem.limit0.any())  # upper limits are part of the check
    cls = ExponentialArctanDisk
    free = ["inclination", "pa", "v_max"]
    fixed = {nm: float(getattr(cls, nm).default) for nm in cls.param_names if nm not in free}
    fixed.update(r_scale=5.0, r_turn=2.0, x_0=0.3, y_0=-0.2)
    residual = MapResiduals(DiskRenderer(cls, problem.shape, dtype=torch.float64),
                            cls.param_names, free, fixed, {})
    theta = torch.tensor([[50.0, 45.0, 180.0]], dtype=torch.float64)
    rows = torch.arange(1)
    before = residual(theta, rows, problem)
    f0 = torch.tensor([3.7], dtype=torch.float64)
    f1 = torch.tensor([0.21], dtype=torch.float64)
    noisier = problem.with_noise(problem.sigma0 * f0[:, None, None],
                                 problem.sigma1 * f1[:, None, None])
    rendered = residual(theta, rows, noisier)
    np.testing.assert_allclose(_rescaled(before, f0, f1).numpy(), rendered.numpy(),
                               rtol=1e-12, atol=1e-12 * float(rendered.abs().max()))
    n = problem.shape[0] * problem.shape[1]
    limits = problem.limit0.flatten()
    # The upper limits that the model exceeds are scaled as well.
    assert bool((rendered[0, :n][limits] != 0).any())


@pytest.mark.parametrize("beam", [3.0, 1.5], ids=["beam 3 px", "beam 1.5 px (folded orders)"])
def test_renderer_jacobian_of_the_residuals_is_that_of_finite_differences(beam):
    """Through logarithms, a tie, the fitted mom0 scale and the upper limits."""
    m0, m1 = _masked_disc()
    obs, _, _ = prepare_maps(m0, m1, pixel_scale=1 * u.arcsec, beam=beam * u.arcsec,
                             cutout=False)
    (problem,) = prepare_problems(obs)
    problem = problem.rows(torch.zeros(3, dtype=torch.long))
    cls = ExponentialArctanDisk
    free = ["inclination", "pa", "x_0", "y_0", "v_sys", "r_scale", "v_max"]
    fixed = {nm: float(getattr(cls, nm).default) for nm in cls.param_names}
    residual = MapResiduals(DiskRenderer(cls, problem.shape, dtype=torch.float64),
                            cls.param_names, free, fixed, {"r_turn": lambda m: 0.4 * m.r_scale},
                            log=["r_scale", "v_max"])
    theta = torch.tensor([[50.0, 45.0, 0.3, -0.2, 5.0, np.log(4.5), np.log(180.0)],
                          [60.0, 35.0, -0.5, 0.4, -3.0, np.log(5.5), np.log(230.0)],
                          [45.0, 50.0, 1.0, 0.0, 0.0, np.log(3.0), np.log(150.0)]],
                         dtype=torch.float64)
    rows = torch.arange(3)
    scales = torch.ones_like(theta)
    exact, r = jacobian(residual, theta, rows, problem, scales)

    def plain(theta, rows, problem):  # the same residuals, without the renderer's derivatives
        return residual(theta, rows, problem)

    differences, r_fd = jacobian(plain, theta, rows, problem, scales)
    np.testing.assert_allclose(r.numpy(), r_fd.numpy(), rtol=0,
                               atol=1e-10 * float(r_fd.abs().max()))
    n = problem.shape[0] * problem.shape[1]
    assert bool((exact[:, :n][problem.limit0.flatten(1)] != 0).any())  # limits in play
    for k, name in enumerate(free):
        col, ref = exact[:, :, k], differences[:, :, k]
        # forward differences of step 1e-6 err by ~1e-6 of the column
        assert float((col - ref).abs().max()) < 2e-5 * float(ref.abs().max()), name


def test_parseval_covariance_is_that_of_the_convolved_jacobian():
    m0, m1 = _masked_disc()
    ny, nx = m0.shape
    gen = torch.Generator().manual_seed(2)
    jac = torch.randn(3, 2 * ny * nx, 4, dtype=torch.float64, generator=gen)
    beam = torch.tensor([[3.0, 2.0, 30.0], [4.0, 4.0, 0.0], [float("nan")] * 3],
                        dtype=torch.float64)
    ps = torch.ones(3, dtype=torch.float64)
    residuals = torch.randn(3, 2, ny, nx, dtype=torch.float64, generator=gen)
    fitted = torch.rand(3, 2, ny, nx, generator=gen) > 0.3
    jac = jac * fitted.flatten(1)[:, :, None]
    for kernels in (correlation_kernels((ny, nx), beam, ps),
                    residual_correlation(residuals, fitted, beam, ps)):
        cov, trace = parameter_covariance(jac, (ny, nx), kernels)
        cols = jac.transpose(1, 2).reshape(3, 4, 2, ny, nx)
        rj = torch.stack([correlate(cols[:, :, k], kernels if kernels.ndim == 3
                                    else kernels[:, k]) for k in range(2)], dim=2)
        meat = jac.transpose(1, 2) @ rj.reshape(3, 4, -1).transpose(1, 2)
        meat = 0.5 * (meat + meat.transpose(1, 2))
        h_inv = torch.linalg.inv(jac.transpose(1, 2) @ jac)
        expected = h_inv @ meat @ h_inv
        np.testing.assert_allclose(cov.numpy(), expected.numpy(), rtol=1e-9,
                                   atol=1e-12 * float(expected.abs().max()))
        np.testing.assert_allclose(trace.numpy(),
                                   torch.diagonal(h_inv @ meat, dim1=1, dim2=2).sum(1).numpy(),
                                   rtol=1e-9)


@pytest.mark.parametrize("shape", [(64, 64), (56, 72), (101, 37)])
def test_compact_correlation_grid_gives_the_doubled_grid_s_convolution(shape):
    ny, nx = shape
    beam = torch.tensor([[3.0, 2.0, 30.0], [4.0, 4.0, 0.0], [2.0, 1.5, 100.0],
                         [float("nan")] * 3], dtype=torch.float64)
    ps = torch.tensor([1.0, 1.0, 0.5, 1.0], dtype=torch.float64)
    maps = torch.randn(4, 3, ny, nx, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1))
    compact = correlation_kernels(shape, beam, ps)
    doubled = correlation_kernels(shape, beam, ps, size=(2 * ny, 2 * nx))
    # 10.6 sigma of the 4-pixel beam (1.7 px) pad each side: far less than doubling.
    assert compact.shape[-2] < 2 * ny and 2 * (compact.shape[-1] - 1) < 2 * nx
    a, b = correlate(maps, compact), correlate(maps, doubled)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-13 * float(b.abs().max()))


def test_a_beam_as_large_as_the_map_keeps_the_doubled_grid():
    beam = torch.tensor([[30.0, 20.0, 10.0]], dtype=torch.float64)
    k = correlation_kernels((40, 40), beam, torch.ones(1, dtype=torch.float64))
    assert tuple(k.shape) == (1, 80, 41)


def test_order_two_hankel_table_follows_scipy_s_bessel_function():
    tables = HankelTables(45.0, 0.72, 1.0 / 360.0)
    k = np.arange(tables.n_k) * tables.dk
    arg = 2.0 * np.pi * tables.radii[:, None] * k[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        j2_over_k2 = np.where(k[None, :] > 0, special.jv(2, arg) / k[None, :] ** 2,
                              0.5 * np.pi ** 2 * tables.radii[:, None] ** 2)
    # The weights times J_2 / k^2: recover the weights from the order-0 table.
    weights_r = tables.w0[:, 0] / (2.0 * np.pi)  # J_0(0) = 1
    expected = weights_r[:, None] * j2_over_k2
    np.testing.assert_allclose(tables.w2, expected, rtol=0,
                               atol=1e-13 * float(np.abs(expected).max()))
