"""The ring-by-ring disc: its classes, profiles, table, and its maps against KinMS."""

import copy
import pickle

import astropy.units as u
import numpy as np
import pytest

from astrokin.models import TiltedRingDisk
from astrokin.models.rings import catmull_rom, ring_class

from ..kinms_helpers import kinms_moments

KMS = u.km / u.s
V = [140.0, 200.0, 215.0, 205.0, 190.0, 180.0]
SB = [2.5, 4.0, 2.0, 1.0, 0.5, 0.2]  # a central depression, a ring at 2 rings' radius


def rings(**kwargs):
    values = {f"v_{k}": v * KMS for k, v in enumerate(V, 1)}
    values.update({f"sb_{k}": s for k, s in enumerate(SB, 1)})
    values.update(kwargs)
    return TiltedRingDisk(n_rings=len(V), **values)


def test_n_rings_makes_one_named_subclass_per_number():
    a, b = TiltedRingDisk(n_rings=6), TiltedRingDisk(n_rings=6)
    assert type(a) is type(b) is ring_class(6)
    assert isinstance(a, TiltedRingDisk) and type(a).__name__ == "TiltedRingDisk6"
    assert type(TiltedRingDisk()).n_rings == 10
    names = type(a).param_names
    assert names[-18:] == tuple(f"v_{k}" for k in range(1, 7)) + tuple(
        f"sb_{k}" for k in range(1, 7)) + tuple(f"v_disp_{k}" for k in range(1, 7))
    assert type(a).dispersion_parameters == names[-6:] == tuple(a.dispersion_names())
    assert a.v_3.unit == KMS and a.sb_3.unit is None and a.fixed["r_outer"]
    # By name in its module: what pickle and network files use.
    from astrokin.models import rings as module

    assert module.TiltedRingDisk13 is ring_class(13)
    with pytest.raises(ValueError, match="n_rings must be an integer from 1 to 64"):
        TiltedRingDisk(n_rings=0)
    with pytest.raises(ValueError, match="n_rings"):
        TiltedRingDisk(n_rings=2.5)


def test_pickle_and_copy_keep_the_ring_class_and_values():
    disk = rings(r_outer=12 * u.arcsec, inclination=62 * u.deg)
    for other in (pickle.loads(pickle.dumps(disk)), copy.deepcopy(disk), disk.copy()):
        assert type(other) is type(disk)
        assert other.v_4.quantity == 205 * KMS and other.r_outer.quantity == 12 * u.arcsec


def test_profiles_pass_through_the_nodes_and_follow_the_conventions():
    disk = rings(r_outer=12 * u.arcsec)
    radii = disk.ring_radii
    assert radii.to_value(u.arcsec) == pytest.approx([2, 4, 6, 8, 10, 12])
    assert disk.rotation_curve(radii).to_value(KMS) == pytest.approx(V)
    assert disk.intensity_profile(radii).value == pytest.approx(SB)
    # Centre: no rotation, brightness 1; outside: flat curve, no emission.
    assert disk.rotation_curve(0 * u.arcsec).value == 0.0
    assert disk.intensity_profile(0 * u.arcsec).value == pytest.approx(1.0)
    assert disk.rotation_curve([13, 30] * u.arcsec).to_value(KMS) == pytest.approx([180, 180])
    assert disk.intensity_profile([14.0, 16.0] * u.arcsec).value == pytest.approx(
        0.2 * np.exp([-1.0, -2.0]))
    # Smooth between nodes: the curve stays between its neighbours' range.
    fine = disk.rotation_curve(np.linspace(2, 12, 201) * u.arcsec).to_value(KMS)
    assert fine.min() > 130 and fine.max() < 220
    assert np.all(disk.intensity_profile(np.linspace(0, 20, 401) * u.arcsec).value >= 0)


def test_catmull_rom_reproduces_a_straight_line():
    t = np.linspace(0.0, 5.0, 51)
    line = sum(catmull_rom(np, t - k) * (3.0 + 2.0 * k) for k in range(-2, 9))
    assert line == pytest.approx(3.0 + 2.0 * t)


def test_ring_table_gives_the_curve_with_projected_speeds_and_errors():
    disk = rings(r_outer=12 * u.arcsec, inclination=30 * u.deg, amplitude=2.0)
    table = disk.ring_table(stds={"v_2": 5.0 * KMS, "sb_2": 0.1})
    assert len(table) == 6 and list(table["ring"]) == [1, 2, 3, 4, 5, 6]
    assert table["v_proj"].to_value(KMS) == pytest.approx(np.array(V) * 0.5)
    assert table["v_rot_std"][1] == 5 * KMS
    assert table["v_proj_std"][1].to_value(KMS) == pytest.approx(2.5)
    assert table["surface_brightness"][1].value == pytest.approx(8.0)
    assert table["surface_brightness_std"][1].value == pytest.approx(0.2)
    cls = ring_class(2)
    values = {nm: [getattr(cls, nm).default] * 2 * (getattr(cls, nm).unit or 1)
              for nm in cls.param_names}
    values.update(r_outer=[4, 8] * u.arcsec, v_1=[100, 120] * KMS, v_2=[150, 170] * KMS)
    model_set = TiltedRingDisk(n_rings=2, n_models=2, **values)
    table = model_set.ring_table()
    assert list(table["galaxy"]) == [0, 0, 1, 1]
    assert table["radius"].to_value(u.arcsec) == pytest.approx([2, 4, 4, 8])


def test_r_outer_must_be_set_to_render():
    with pytest.raises(ValueError, match="r_outer = 0.0 arcsec: give the radius"):
        rings().render((32, 32), 1 * u.arcsec)


@pytest.mark.parametrize("inclination, pa, beam", [(60.0, 40.0, 3.0), (80.0, 215.0, 2.0)])
def test_render_matches_kinms_for_a_ring_with_a_declining_curve(inclination, pa, beam):
    # KinMS, the independent simulator, is given the ring model's own profiles on
    # a fine radial grid. Tolerances as in tests/rendering/test_kinms.py (its shot
    # noise at 2e6 clouds is ~0.3% of the mom0 peak and a few 0.1 km/s in mom1).
    pytest.importorskip("kinms")
    disk = rings(r_outer=24 * u.arcsec, inclination=inclination * u.deg, pa=pa * u.deg,
                 x_0=0.5 * u.arcsec, y_0=0.5 * u.arcsec)
    sb = lambda r: disk.intensity_profile(r * u.arcsec).value  # noqa: E731
    vel = lambda r: disk.rotation_curve(r * u.arcsec).to_value(KMS)  # noqa: E731
    k0, k1 = kinms_moments(inclination=inclination, pa=pa, v_max=220.0,
                           beam=(beam, beam, 0.0), profiles=(sb, vel))
    mom0, mom1 = disk.render((64, 64), 1 * u.arcsec, beam=beam * u.arcsec)
    m0, m1 = mom0.value, mom1.to_value(KMS)
    scale = (m0 * k0).sum() / (m0 * m0).sum()
    assert np.abs(scale * m0 - k0).max() < 0.012 * k0.max()
    bright = k0 > 0.05 * k0.max()
    err = np.abs(m1 - k1)[bright]
    assert np.percentile(err, 95) < 1.0 and err.max() < 2.5
