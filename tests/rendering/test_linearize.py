"""`DiskRenderer.linearize`: the renderer's own derivatives against finite differences.

Every parameter of a thick exponential disc and of a ring disc, with beams
of 2 px and more (no folded orders), under 2 px (folded orders) and none:
the derivative maps agree with central differences of `forward` to the
differences' own truncation error, and the maps are `forward`'s. A float32
renderer's derivatives agree with float64's to its precision.
"""

import pytest

torch = pytest.importorskip("torch")

from astrokin.models import ExponentialArctanDisk  # noqa: E402
from astrokin.models.rings import ring_class  # noqa: E402
from astrokin.rendering import DiskRenderer  # noqa: E402

F64 = torch.float64


def _disc_batch():
    cls = ExponentialArctanDisk
    p = {n: torch.full((4,), float(getattr(cls, n).default), dtype=F64) for n in cls.param_names}
    p.update(inclination=torch.tensor([25.0, 50.0, 70.0, 88.0], dtype=F64),
             pa=torch.tensor([10.0, 100.0, 200.0, 300.0], dtype=F64),
             x_0=torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=F64),
             y_0=torch.tensor([-0.7, 0.4, 1.0, 0.0], dtype=F64),
             z_scale=torch.tensor([0.5, 0.0, 1.0, 0.3], dtype=F64),
             amplitude=torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=F64),
             v_sys=torch.tensor([0.0, 100.0, -50.0, 10.0], dtype=F64))
    return cls, p


def _ring_batch():
    cls = ring_class(4)
    p = {n: torch.full((4,), float(getattr(cls, n).default), dtype=F64) for n in cls.param_names}
    p.update(inclination=torch.tensor([25.0, 50.0, 70.0, 88.0], dtype=F64),
             pa=torch.tensor([30.0, 120.0, 250.0, 330.0], dtype=F64),
             r_outer=torch.tensor([8.0, 10.0, 12.0, 9.0], dtype=F64))
    for i in range(1, 5):
        p[f"sb_{i}"] = torch.full((4,), 1.0 / i, dtype=F64)
        p[f"v_{i}"] = torch.full((4,), 60.0 * i, dtype=F64)
    return cls, p


BEAMS = {
    "beams over 2 px": torch.tensor([[3.0, 2.2, 30.0], [2.5, 2.5, 0.0], [4.0, 3.0, 120.0],
                                     [3.0, 2.0, 80.0]], dtype=F64),
    "beams under 2 px for some": torch.tensor([[1.5, 1.1, 30.0], [2.5, 2.5, 0.0],
                                              [2.0, 1.5, 120.0], [3.0, 2.0, 80.0]], dtype=F64),
    "no beam": None,
}


@pytest.mark.parametrize("batch", [_disc_batch, _ring_batch], ids=["exponential", "rings"])
@pytest.mark.parametrize("beam", list(BEAMS), ids=list(BEAMS))
def test_derivatives_agree_with_central_differences(batch, beam):
    cls, p = batch()
    beam = BEAMS[beam]
    ps = torch.tensor([0.8, 1.0, 1.2, 1.0], dtype=F64)
    renderer = DiskRenderer(cls, (40, 48), dtype=F64)
    wrt = [n for n in cls.param_names if n not in cls.dispersion_parameters]
    mom0, mom1, d0, d1 = renderer.linearize(p, ps, beam, wrt=wrt)
    f0, f1 = renderer(p, ps, beam)
    bright = f0 > 1e-3 * f0.amax(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(mom0, f0, rtol=1e-12, atol=1e-13 * float(f0.abs().max()))
    assert float(((mom1 - f1).abs() * bright).max()) < 1e-8
    keep = f0 > 1e-4 * f0.amax(dim=(-2, -1), keepdim=True)
    errors = {}
    for k, name in enumerate(wrt):
        # (Steps of 1e-4 deg, or of 1e-4 of the parameters' sizes: truncation
        # ~1e-8, and rounding in the faintest pixels' mom1 no larger.)
        h = 1e-4 * (1.0 if name in ("inclination", "pa") else max(1.0, float(p[name].abs().max())))
        up0, up1 = renderer({**p, name: p[name] + h}, ps, beam)
        dn0, dn1 = renderer({**p, name: p[name] - h}, ps, beam)
        fd0, fd1 = (up0 - dn0) / (2 * h), ((up1 - dn1) / (2 * h)) * keep
        # (floors: the differences' rounding, for parameters a map does not depend on)
        scale0 = max(float(fd0.abs().max()), 1e-6 * float(f0.abs().max()))
        scale1 = max(float(fd1.abs().max()), 1e-2)
        errors[name] = (float((d0[:, k] - fd0).abs().max()) / scale0,
                        float(((d1[:, k] * keep) - fd1).abs().max()) / scale1)
    assert all(max(e) < 2e-5 for e in errors.values()), errors


def test_parameters_that_do_not_change_a_map_have_zero_derivatives():
    cls, p = _disc_batch()
    renderer = DiskRenderer(cls, (32, 32), dtype=F64)
    _, _, d0, d1 = renderer.linearize(p, torch.ones(4, dtype=F64), BEAMS["beams over 2 px"],
                                      wrt=["v_max", "v_sys", "v_disp", "amplitude"])
    assert float(d0[:, :3].abs().max()) == 0.0  # velocities leave mom0 as it is
    assert float(d1[:, 2:].abs().max()) == 0.0  # the dispersion and amplitude leave mom1
    assert bool((d1[:, 1] == 1.0).all())  # mom1 moves with v_sys one for one


def test_unknown_names_are_refused():
    cls, p = _disc_batch()
    renderer = DiskRenderer(cls, (16, 16), dtype=F64)
    with pytest.raises(ValueError, match="wrt names \\['v_flat'\\]"):
        renderer.linearize(p, torch.ones(4, dtype=F64), None, wrt=["inclination", "v_flat"])


@pytest.mark.parametrize("batch", [_disc_batch, _ring_batch], ids=["exponential", "rings"])
@pytest.mark.parametrize("beam", list(BEAMS), ids=list(BEAMS))
def test_float32_derivatives_agree_with_float64(batch, beam):
    # A float32 renderer's derivatives, the profiles' among them (their
    # central differences are taken in float64: in float32 they erred by up
    # to 5% of a column), within 1e-3 of each column's largest value where
    # mom0 is above 1% of its peak (measured: under 5e-4; mom1, a ratio of
    # faint maps, is less precise at the faintest edges).
    cls, p = batch()
    beam = BEAMS[beam]
    ps = torch.tensor([0.8, 1.0, 1.2, 1.0], dtype=F64)
    wrt = [n for n in cls.param_names if n not in cls.dispersion_parameters]
    m0, _, d0, d1 = DiskRenderer(cls, (40, 48), dtype=F64).linearize(p, ps, beam, wrt=wrt)
    _, _, e0, e1 = DiskRenderer(cls, (40, 48), dtype=torch.float32).linearize(p, ps, beam,
                                                                              wrt=wrt)
    assert e0.dtype == torch.float32
    bright = (m0 > 1e-2 * m0.amax(dim=(-2, -1), keepdim=True))[:, None]
    for exact, single in ((d0, e0), (d1 * bright, e1 * bright)):
        scale = exact.abs().amax(dim=(0, 2, 3)).clamp(min=1e-6 * float(exact.abs().max()))
        error = (single.double() - exact).abs().amax(dim=(0, 2, 3)) / scale
        assert float(error.max()) < 1e-3, dict(zip(wrt, error.tolist(), strict=True))
