"""The torch renderer: batching, dtypes, gradients, beam conventions."""

import astropy.units as u
import numpy as np
import pytest
import torch

from astrokin.models import ExponentialArctanDisk, GaussianRingDisk
from astrokin.rendering import DiskRenderer

KMS = u.km / u.s


def batch(model_class, n, seed=0, dtype=torch.float64, **overrides):
    """Random but physical parameters for n galaxies."""
    g = torch.Generator().manual_seed(seed)

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=dtype)

    p = {name: torch.full((n,), float(getattr(model_class, name).default), dtype=dtype)
         for name in model_class.param_names}
    p.update(inclination=uniform(15, 85), pa=uniform(0, 360), x_0=uniform(-2, 2),
             y_0=uniform(-2, 2), v_sys=uniform(-50, 50), z_scale=uniform(0.2, 1.0))
    if model_class is ExponentialArctanDisk:
        p.update(r_scale=uniform(2, 6), r_turn=uniform(0.5, 5), v_max=uniform(80, 400))
    p.update({k: torch.as_tensor(v, dtype=dtype).expand(n).clone() for k, v in overrides.items()})
    return p


def test_batched_maps_match_one_at_a_time_any_shape():
    shape = (24, 40)  # non-square on purpose
    r = DiskRenderer(ExponentialArctanDisk, shape, dtype=torch.float64)
    p = batch(ExponentialArctanDisk, 5)
    ps = torch.tensor([0.5, 1.0, 1.5, 0.8, 1.2], dtype=torch.float64)
    beam = torch.tensor([[2.0, 1.5, 20.0]], dtype=torch.float64).expand(5, 3) * ps[:, None]
    beam[:, 2] = 20.0
    m0, m1 = r(p, ps, beam)
    assert m0.shape == (5, 24, 40) and m1.shape == (5, 24, 40)
    for i in range(5):
        one = {k: v[i:i + 1] for k, v in p.items()}
        a0, a1 = r(one, ps[i:i + 1], beam[i:i + 1])
        torch.testing.assert_close(a0[0], m0[i], rtol=0, atol=1e-12)
        torch.testing.assert_close(a1[0], m1[i], rtol=0, atol=1e-4)  # km/s, faint pixels


def test_float32_matches_float64():
    p64 = batch(ExponentialArctanDisk, 4)
    p32 = {k: v.float() for k, v in p64.items()}
    beam = torch.tensor([[2.5, 2.5, 0.0]]).expand(4, 3)
    m0d, m1d = DiskRenderer(ExponentialArctanDisk, (32, 32), dtype=torch.float64)(
        p64, torch.ones(4, dtype=torch.float64), beam.double())
    m0f, m1f = DiskRenderer(ExponentialArctanDisk, (32, 32), dtype=torch.float32)(
        p32, torch.ones(4), beam)
    assert m0f.dtype == torch.float32
    peak = m0d.amax()
    assert (m0f.double() - m0d).abs().max() < 1e-5 * peak
    bright = m0d > 0.01 * m0d.amax(dim=(1, 2), keepdim=True)
    assert (m1f.double() - m1d)[bright].abs().max() < 0.05  # km/s


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():  # pragma: no cover - runs where a GPU is present
    p = batch(ExponentialArctanDisk, 3)
    cpu = DiskRenderer(ExponentialArctanDisk, (32, 32), dtype=torch.float64)(
        p, torch.ones(3, dtype=torch.float64))
    gpu = DiskRenderer(ExponentialArctanDisk, (32, 32), dtype=torch.float64, device="cuda")(
        {k: v.cuda() for k, v in p.items()}, torch.ones(3, dtype=torch.float64).cuda())
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("model_class", [ExponentialArctanDisk, GaussianRingDisk])
def test_gradcheck_every_parameter_float64(model_class):
    names = [n for n in model_class.param_names]
    p = batch(model_class, 2, seed=3)
    if model_class is GaussianRingDisk:
        p.update(r_ring=torch.tensor([4.0, 3.0], dtype=torch.float64),
                 ring_width=torch.tensor([1.5, 2.0], dtype=torch.float64),
                 r_turn=torch.tensor([1.5, 2.5], dtype=torch.float64),
                 beta=torch.tensor([0.2, -0.1], dtype=torch.float64),
                 gamma=torch.tensor([2.0, 3.0], dtype=torch.float64))
    r = DiskRenderer(model_class, (12, 12), dtype=torch.float64, alias_order=0)
    ps = torch.ones(2, dtype=torch.float64)
    beam = torch.tensor([[2.5, 2.0, 30.0]], dtype=torch.float64).expand(2, 3)
    # Scale velocities so both outputs are O(1) and gradcheck's tolerances mean the same.
    stacked = torch.stack([p[n] for n in names]).requires_grad_(True)

    def f(x):
        m0, m1 = r(dict(zip(names, x, strict=True)), ps, beam)
        return m0, m1 / 100.0

    assert torch.autograd.gradcheck(f, (stacked,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradients_finite_for_every_parameter_at_extremes():
    # Edge-on, face-on, thin and thick, tiny turnover, no beam and a beam: every
    # parameter must get a finite gradient (a NaN would poison a training step).
    n = 6
    p = batch(ExponentialArctanDisk, n, dtype=torch.float32,
              inclination=[0.0, 10.0, 45.0, 89.9, 90.0, 90.0],
              z_scale=[0.0, 0.0, 0.5, 0.0, 0.0, 1.0],
              r_turn=[0.05, 0.3, 2.0, 5.0, 0.1, 3.0])
    for v in p.values():
        v.requires_grad_(True)
    for beam in (None, torch.tensor([[2.0, 2.0, 0.0]]).expand(n, 3)):
        r = DiskRenderer(ExponentialArctanDisk, (32, 32))
        m0, m1, m2 = r(p, torch.ones(n), beam, moment2=True)
        loss = (m0**2).mean() + ((m1 / 300) ** 2).mean() + ((m2 / 30) ** 2).mean()
        grads = torch.autograd.grad(loss, list(p.values()))
        for name, gr in zip(p, grads, strict=True):
            assert torch.isfinite(gr).all(), name
        assert torch.isfinite(m0).all() and torch.isfinite(m1).all()
        assert torch.isfinite(m2).all()


def test_no_beam_means_no_convolution_and_beam_conserves_flux():
    p = batch(ExponentialArctanDisk, 1, x_0=0.0, y_0=0.0, r_scale=3.0)
    r = DiskRenderer(ExponentialArctanDisk, (64, 64), dtype=torch.float64)
    sharp, _ = r(p, torch.ones(1, dtype=torch.float64))
    smooth, _ = r(p, torch.ones(1, dtype=torch.float64),
                  torch.tensor([[4.0, 3.0, 70.0]], dtype=torch.float64))
    assert smooth.max() < 0.8 * sharp.max()  # a 4"x3" beam on a 3" disc lowers the peak
    assert smooth.sum().item() == pytest.approx(sharp.sum().item(), rel=1e-3)


@pytest.mark.parametrize("bpa", [0.0, 30.0, 100.0, 145.0])
def test_beam_position_angle_runs_north_through_east(bpa):
    # A disc much smaller than the beam images the beam itself: the mom0 map's
    # long axis must point at bpa measured from North (+row) through East (-column).
    d = ExponentialArctanDisk(inclination=10 * u.deg, r_scale=0.05 * u.arcsec)
    mom0, _ = d.render((65, 65), 1 * u.arcsec, beam=(8 * u.arcsec, 3 * u.arcsec, bpa * u.deg))
    img = mom0.value
    y, x = np.mgrid[0:65, 0:65] - 32.0
    cxx, cyy, cxy = [(img * a).sum() / img.sum() for a in (x * x, y * y, x * y)]
    evals, evecs = np.linalg.eigh([[cxx, cxy], [cxy, cyy]])
    ex, ey = evecs[:, 1]  # long axis
    measured = np.rad2deg(np.arctan2(-ex, ey)) % 180.0
    # (An axis: 179.99 and 0 are the same direction.)
    assert (measured - bpa + 90.0) % 180.0 - 90.0 == pytest.approx(0.0, abs=0.2)
    fwhm = np.sqrt(8 * np.log(2) * (evals - 1 / 12))  # less the pixel box
    np.testing.assert_allclose(fwhm, [3.0, 8.0], rtol=0.02)


@pytest.mark.parametrize("weighted", [False, True])
def test_a_batch_of_small_and_large_beams_renders_each_galaxy_as_alone(weighted):
    """Order 0 for beams of 2 px or more, order 1 below, whatever the batch holds."""
    n = 5
    params = {k: torch.full((n,), float(getattr(ExponentialArctanDisk, k).default),
                            dtype=torch.float64) for k in ExponentialArctanDisk.param_names}
    params["inclination"] = torch.linspace(25.0, 80.0, n, dtype=torch.float64)
    params["pa"] = torch.linspace(10.0, 300.0, n, dtype=torch.float64)
    params["r_turn"] = torch.linspace(0.5, 4.0, n, dtype=torch.float64)
    ps = torch.ones(n, dtype=torch.float64)
    beam = torch.tensor([[3.0, 2.5, 10.0], [2.0, 1.2, 40.0], [4.0, 3.0, 0.0],
                         [1.5, 1.5, 0.0], [2.2, 2.0, 90.0]], dtype=torch.float64)
    weights = 0.5 + torch.rand(n, 32, 32, dtype=torch.float64) if weighted else None
    r = DiskRenderer(ExponentialArctanDisk, (32, 32), dtype=torch.float64)
    together = r(params, ps, beam, weights=weights, moment2=not weighted)
    for i in range(n):
        order = 0 if beam[i, 1] >= 2.0 else 1
        alone = DiskRenderer(ExponentialArctanDisk, (32, 32), dtype=torch.float64,
                             alias_order=order)(
            {k: v[i:i + 1] for k, v in params.items()}, ps[i:i + 1], beam[i:i + 1],
            weights=None if weights is None else weights[i:i + 1], moment2=not weighted)
        for a, b in zip(together, alone, strict=True):
            torch.testing.assert_close(a[i:i + 1], b, rtol=1e-8, atol=1e-8)
    # gradients flow to every galaxy through the two groups
    pg = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    m0, m1 = r(pg, ps, beam)[:2]
    (m0.sum() + m1.sum()).backward()
    assert torch.all(pg["inclination"].grad != 0)


def test_a_batch_rendered_in_parts_equals_one_pass(monkeypatch):
    """Batches over RENDER_CELLS are rendered in parts: same maps, same gradients."""
    from astrokin.rendering import renderer as module

    n = 7
    p = batch(ExponentialArctanDisk, n, seed=4)
    ps = torch.linspace(0.5, 1.5, n, dtype=torch.float64)
    beam = torch.tensor([[2.5, 2.0, 30.0]], dtype=torch.float64).expand(n, 3)
    weights = 0.5 + torch.rand(n, 20, 28, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(5))
    r = DiskRenderer(ExponentialArctanDisk, (20, 28), dtype=torch.float64)

    def maps_and_gradient():
        pg = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        out = r(pg, ps, beam, weights=weights, moment2=True)
        sum(m.sum() for m in out).backward()
        return [m.detach() for m in out], pg["inclination"].grad

    whole, grad = maps_and_gradient()
    cells = r.fft_shape[0] * (r.fft_shape[1] // 2 + 1)
    monkeypatch.setattr(module, "RENDER_CELLS", 3 * cells)  # parts of 3, 3 and 1
    parts, grad_parts = maps_and_gradient()
    # (to rounding: a matrix product's sums depend a little on its batch size;
    # the velocity maps divide by mom0, which amplifies it in the faintest pixels)
    for a, b, rtol in zip(whole, parts, (1e-9, 1e-7, 1e-7), strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-9)
    torch.testing.assert_close(grad, grad_parts, rtol=1e-8, atol=1e-9)


def test_alias_order_auto_uses_beam_size_and_bad_options_fail():
    r = DiskRenderer(ExponentialArctanDisk, (16, 16))
    ps = torch.ones(2)
    assert r._order(None, ps) == 1
    assert r._order(torch.tensor([[2.5, 2.0, 0.0], [3.0, 3.0, 0.0]]), ps) == 0
    assert r._order(torch.tensor([[2.5, 1.0, 0.0], [3.0, 3.0, 0.0]]), ps) == 1
    with pytest.raises(ValueError, match="alias_order"):
        DiskRenderer(ExponentialArctanDisk, (16, 16), alias_order=-1)
    with pytest.raises(ValueError, match="shape must be"):
        DiskRenderer(ExponentialArctanDisk, (16,))
    with pytest.raises(TypeError, match="dtype"):
        DiskRenderer(ExponentialArctanDisk, (16, 16), dtype=torch.int32)
    with pytest.raises(KeyError, match="Missing parameters"):
        r({"inclination": torch.ones(2)}, ps)
