"""Disc models: parameters and units, profiles, conventions, astropy behaviour."""

import astropy.units as u
import numpy as np
import pytest
from astropy.modeling import Parameter

from astrokin.models import (
    ExponentialArctanDisk,
    GaussianRingDisk,
    KinematicDiskModel,
    TiltedRingDisk,
)
from astrokin.rendering import render_reference

KMS = u.km / u.s


def disk(**kw):
    base = dict(inclination=60 * u.deg, pa=0 * u.deg, r_scale=5 * u.arcsec,
                r_turn=2 * u.arcsec, v_max=200 * KMS, v_sys=1000 * KMS)
    base.update(kw)
    return ExponentialArctanDisk(**base)


def test_parameters_carry_units_and_paper_bounds():
    d = ExponentialArctanDisk()
    assert d.param_names == ("amplitude", "inclination", "pa", "x_0", "y_0", "v_sys", "z_scale",
                             "r_scale", "r_turn", "v_max", "v_disp")
    assert d.dispersion_parameters == ("v_disp",) and d.v_disp.unit == KMS
    assert d.inclination.unit == u.deg and d.pa.unit == u.deg
    assert d.r_scale.unit == u.arcsec and d.x_0.unit == u.arcsec
    assert d.v_max.unit == KMS and d.v_sys.unit == KMS
    assert d.inclination.bounds == (10.0, 90.0)
    assert d.pa.bounds == (0.0, 360.0)
    assert d.v_max.bounds == (50.0, 500.0)
    assert d.fixed["z_scale"] and d.fixed["amplitude"] and not d.fixed["inclination"]
    assert d.outputs == ("intensity", "velocity") and d.n_inputs == 2


def test_fixed_tied_and_bounds_behave_as_in_astropy():
    d = ExponentialArctanDisk(fixed={"pa": True},
                              tied={"r_turn": lambda m: 0.5 * m.r_scale},
                              bounds={"r_scale": (1, 20)})
    assert d.fixed["pa"] and d.r_scale.bounds == (1, 20)
    assert d.tied["r_turn"](d).value == pytest.approx(0.5 * d.r_scale.value)
    d.inclination.fixed = True
    assert d.fixed["inclination"]


def test_rotation_curve_and_intensity_profile_are_quantities():
    d = disk(r_turn=2 * u.arcsec, v_max=200 * KMS, amplitude=3 * u.Jy / u.beam * KMS)
    v = d.rotation_curve([0, 2, 1e9] * u.arcsec)
    assert v.unit == KMS
    np.testing.assert_allclose(v.value, [0, 100, 200], atol=1e-6)
    # Radii in other angular units are converted.
    assert d.rotation_curve(2 / 60 * u.arcmin).value == pytest.approx(100)
    i = d.intensity_profile([0, 5] * u.arcsec)
    assert i.unit == u.Jy / u.beam * KMS
    np.testing.assert_allclose(i.value, [3, 3 / np.e])
    with pytest.raises(u.UnitsError, match="r must be in units of arcsec"):
        d.rotation_curve(3 * u.kg)
    # lengths need a distance: 1 kpc at 206.265 Mpc is 1 arcsec
    with pytest.raises(u.UnitsError, match="need a distance"):
        d.rotation_curve(1 * u.kpc)
    d.distance = 206.264806 * u.Mpc
    assert d.rotation_curve(2 * u.kpc).value == pytest.approx(100, rel=1e-6)
    assert d.intensity_profile(5 * u.kpc).value == pytest.approx(3 / np.e, rel=1e-6)


def test_model_set_profiles_have_one_row_per_model():
    values = {}
    for name in ExponentialArctanDisk.param_names:
        par = getattr(ExponentialArctanDisk, name)
        values[name] = [par.default] * 3 * (par.unit or 1)
    values.update(v_max=[100, 200, 300] * KMS, r_turn=[1, 1, 1] * u.arcsec)
    d = ExponentialArctanDisk(**values, n_models=3)
    assert len(d) == 3
    v = d.rotation_curve([1, 1e9] * u.arcsec)
    assert v.shape == (3, 2)
    np.testing.assert_allclose(v[:, 1].value, [100, 200, 300], rtol=1e-6)
    mom0, mom1 = d.render((16, 16), 1 * u.arcsec, beam=2 * u.arcsec)
    assert mom0.shape == (3, 16, 16) and mom1.shape == (3, 16, 16)


def test_evaluate_accepts_quantities_and_plain_arcsec():
    d = disk(pa=90 * u.deg)
    iq, vq = d(3 * u.arcsec, 1 * u.arcsec)
    ip, vp = d(3.0, 1.0)
    assert vq.unit == KMS
    assert iq.value == pytest.approx(ip) and vq.value == pytest.approx(vp)
    # Offsets in arcmin are converted to arcsec.
    _, va = d(3 / 60 * u.arcmin, 1 / 60 * u.arcmin)
    assert va.to_value(KMS) == pytest.approx(vp)


@pytest.mark.parametrize("pa", [0.0, 37.0, 90.0, 200.0, 333.0])
def test_receding_side_lies_along_pa_north_through_east(pa):
    d = disk(pa=pa * u.deg, inclination=50 * u.deg)
    t = np.deg2rad(pa)
    # Receding major axis: North = +y, East = -x; so (-sin PA, cos PA).
    ex, ey = -np.sin(t), np.cos(t)
    _, v_rec = d(4 * ex, 4 * ey)
    _, v_app = d(-4 * ex, -4 * ey)
    expected = d.rotation_curve(4).value * np.sin(np.deg2rad(50))
    assert v_rec - 1000 == pytest.approx(expected, rel=1e-9)
    assert v_app - 1000 == pytest.approx(-expected, rel=1e-9)
    # On the minor axis the line-of-sight velocity is the systemic velocity.
    _, v_minor = d(5 * ey, -5 * ex)
    assert v_minor == pytest.approx(1000, abs=1e-9)


def test_receding_side_in_rendered_map_follows_array_orientation():
    # PA 90: receding half to the East, which is -column in a plain array.
    mom0, mom1 = disk(pa=90 * u.deg).render((33, 33), 1 * u.arcsec, beam=2 * u.arcsec)
    assert mom1[16, 8] > 1050 * KMS and mom1[16, 24] < 950 * KMS
    # PA 0: receding half to the North, +row.
    _, mom1 = disk(pa=0 * u.deg).render((33, 33), 1 * u.arcsec, beam=2 * u.arcsec)
    assert mom1[24, 16] > 1050 * KMS and mom1[8, 16] < 950 * KMS
    # Minor axis (the row through the centre for PA 0) sits at v_sys even with a beam
    # (to FFT round-off, which reaches ~0.003 km/s where the disc is 1e-3 of its peak).
    np.testing.assert_allclose(mom1[16].to_value(KMS), 1000, atol=1e-2)


def test_face_on_disc_has_no_velocity_gradient():
    d = disk(inclination=0 * u.deg, pa=45 * u.deg)
    _, mom1 = d.render((32, 32), 1 * u.arcsec, beam=(3 * u.arcsec, 2 * u.arcsec, 10 * u.deg))
    np.testing.assert_allclose(mom1.to_value(KMS), 1000, atol=1e-6)


@pytest.mark.parametrize("inc", [30.0, 60.0, 75.0])
def test_mom0_axis_ratio_follows_inclination(inc):
    # A thin exponential disc seen at inclination i is its face-on image squeezed by
    # cos i along the minor axis; second moments of the map measure the squeeze. The
    # pixel average adds 1/12 px^2 to both variances, removed here.
    d = disk(inclination=inc * u.deg, pa=0 * u.deg, r_scale=6 * u.arcsec)
    mom0, _ = d.render((129, 129), 1 * u.arcsec)
    img = mom0.value
    y, x = np.mgrid[0:129, 0:129] - 64.0
    var_x = (img * x**2).sum() / img.sum() - 1 / 12
    var_y = (img * y**2).sum() / img.sum() - 1 / 12
    # PA 0: major axis along y (North), minor along x.
    assert np.sqrt(var_x / var_y) == pytest.approx(np.cos(np.deg2rad(inc)), rel=3e-3)


@pytest.mark.parametrize(
    "model",
    [
        disk(pa=37 * u.deg, inclination=55 * u.deg),
        disk(pa=250 * u.deg, inclination=80 * u.deg, r_turn=0.7 * u.arcsec,
             z_scale=0.8 * u.arcsec, x_0=1.3 * u.arcsec, y_0=-0.6 * u.arcsec),
        GaussianRingDisk(inclination=50 * u.deg, pa=120 * u.deg, r_ring=6 * u.arcsec,
                         ring_width=2 * u.arcsec, beta=0.4, gamma=5.0),
        TiltedRingDisk(n_rings=5, r_outer=10 * u.arcsec, inclination=65 * u.deg,
                       pa=300 * u.deg, x_0=0.7 * u.arcsec,
                       **{f"v_{k}": v * KMS for k, v in enumerate([120, 190, 210, 200, 185], 1)},
                       **{f"sb_{k}": s for k, s in enumerate([2.0, 3.0, 1.5, 0.8, 0.3], 1)}),
    ],
    ids=["thin", "thick-offset", "ring", "tilted-rings"],
)
@pytest.mark.parametrize("beam", [None, (3 * u.arcsec, 2 * u.arcsec, 30 * u.deg)],
                         ids=["nobeam", "beam"])
def test_numpy_evaluation_agrees_with_torch_renderer(model, beam):
    # render() is the Fourier-space torch renderer; render_reference averages the
    # model's own numpy line-of-sight quadrature over 12x12 sub-pixels and convolves
    # with the beam on that fine grid. benchmarks/renderer_accuracy.py measures the
    # difference at 1e-4..2e-3 of the peak and < 1 km/s, so these bounds have margin
    # while still catching any error of geometry, sign or a pixel's shift.
    shape = (24, 28)
    mom0, mom1 = model.render(shape, 1 * u.arcsec, beam=beam)
    r0, r1 = render_reference(model, shape, 1 * u.arcsec, beam=beam, oversample=12)
    peak = r0.max()
    assert np.abs(mom0.value - r0).max() < 3e-3 * peak
    bright = r0 > 0.01 * peak
    assert np.abs(mom1.value - r1)[bright].max() < 1.5


def test_render_units_and_nan_where_no_emission():
    d = disk(r_scale=0.8 * u.arcsec, amplitude=2 * u.Jy / u.beam * KMS)
    mom0, mom1 = d.render((41, 41), 0.5 * u.arcsec)
    assert mom0.unit == u.Jy / u.beam * KMS and mom1.unit == KMS
    assert np.isnan(mom1[0, 0]) and np.isfinite(mom1[20, 20])
    # pixel_scale as angle per pixel is accepted too, and gives the same maps.
    mom0b, _ = d.render((41, 41), 0.5 * u.arcsec / u.pix)
    np.testing.assert_array_equal(mom0.value, mom0b.value)


@pytest.mark.parametrize(
    ("pixel_scale", "error", "match"),
    [(1.0, TypeError, "angle Quantity"), (1 * u.km, u.UnitsError, "angle per pixel"),
     (-1 * u.arcsec, ValueError, "finite and positive")],
)
def test_render_refuses_bad_pixel_scale(pixel_scale, error, match):
    with pytest.raises(error, match=match):
        disk().render((8, 8), pixel_scale)


def test_gaussian_ring_has_a_hole_and_a_courteau_curve():
    ring = GaussianRingDisk(r_ring=10 * u.arcsec, ring_width=2 * u.arcsec, v_c=150 * KMS,
                            r_turn=3 * u.arcsec, beta=0.0, gamma=30.0)
    prof = ring.intensity_profile([0, 10] * u.arcsec).value
    assert prof[0] < 1e-5 and prof[1] == pytest.approx(1.0)
    # gamma large, beta 0: a sharp knee, flat at v_c beyond r_turn, linear inside.
    v = ring.rotation_curve([1.5, 6, 30] * u.arcsec).to_value(KMS)
    np.testing.assert_allclose(v, [75, 150, 150], rtol=2e-3)
    # beta > 0: overshoots v_c, then declines towards it.
    ring.beta = 0.5
    v = ring.rotation_curve([3, 10, 1e5] * u.arcsec).to_value(KMS)
    assert v[0] > v[1] > 150 and v[2] == pytest.approx(150, rel=1e-3)


class _PlummerFlat(KinematicDiskModel):
    """A model written once, the way users write their own."""

    r_core = Parameter(default=3.0, unit=u.arcsec)
    v_flat = Parameter(default=180.0, unit=u.km / u.s)

    @staticmethod
    def surface_brightness(xp, r, r_core):
        return (1 + (r / r_core) ** 2) ** -2.5

    @staticmethod
    def rotation_velocity(xp, r, v_flat, r_core):
        return v_flat * r / xp.sqrt(r**2 + r_core**2)


def test_user_defined_model_serves_numpy_torch_and_profiles():
    m = _PlummerFlat(inclination=70 * u.deg, pa=300 * u.deg)
    assert m.intensity_parameters == ("r_core",)
    assert m.velocity_parameters == ("v_flat", "r_core")
    assert m.rotation_curve(3 * u.arcsec).value == pytest.approx(180 / np.sqrt(2))
    mom0, mom1 = m.render((20, 20), 1 * u.arcsec, beam=2 * u.arcsec)
    r0, r1 = render_reference(m, (20, 20), 1 * u.arcsec, beam=2 * u.arcsec, oversample=8)
    assert np.abs(mom0.value - r0).max() < 3e-3 * r0.max()
    assert np.nanmax(np.abs(mom1.value - r1)[r0 > 0.01 * r0.max()]) < 1.5


def test_profile_naming_a_non_parameter_fails_clearly():
    class Broken(KinematicDiskModel):
        r_s = Parameter(default=1.0, unit=u.arcsec)

        @staticmethod
        def surface_brightness(xp, r, r_scale):
            return xp.exp(-r / r_scale)

        @staticmethod
        def rotation_velocity(xp, r, r_s):
            return r / r_s

    with pytest.raises(TypeError, match=r"takes \['r_scale'\], which are not parameters"):
        Broken()
