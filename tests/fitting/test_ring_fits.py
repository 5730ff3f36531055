"""Ring-by-ring fits: a TiltedRingDisk refined from the network's model, and model choice."""

import astropy.units as u
import numpy as np
import pytest

from astrokin.fitting import NeuralKinematicFitter, compare_models
from astrokin.fitting.model_choice import STRONG_EVIDENCE
from astrokin.fitting.ring_fits import ERROR_SCALE
from astrokin.models import ExponentialArctanDisk, TiltedRingDisk

from ..kinms_helpers import kinms_moments

KMS = u.km / u.s
#: A gas ring around a central depression, on a curve that peaks and declines.
V = [140.0, 200.0, 215.0, 205.0, 190.0, 180.0, 175.0, 170.0]
SB = [2.5, 4.0, 2.0, 1.0, 0.6, 0.4, 0.25, 0.1]
GEOMETRY = dict(inclination=58 * u.deg, pa=130 * u.deg, x_0=1.2 * u.arcsec,
                y_0=-0.8 * u.arcsec, v_sys=30 * KMS)


def ring_galaxy(**kwargs):
    values = {f"v_{k}": v * KMS for k, v in enumerate(V, 1)}
    values.update({f"sb_{k}": s for k, s in enumerate(SB, 1)})
    values.update(GEOMETRY, r_outer=24 * u.arcsec)
    values.update(kwargs)
    return TiltedRingDisk(n_rings=len(V), **values)


def noisy(mom0, mom1, seed, noise0=0.01, noise1=3.0, clip=0.05):
    rng = np.random.default_rng(seed)
    m0 = mom0 + rng.normal(0.0, noise0 * mom0.max(), mom0.shape)
    m1 = mom1 + rng.normal(0.0, noise1, mom1.shape)
    return m0, np.where(m0 > clip * mom0.max(), m1, np.nan)


@pytest.fixture(scope="module")
def fitter():
    return NeuralKinematicFitter.pretrained(mc_samples=100, seed=0, progress=False)


@pytest.fixture(scope="module")
def ring_maps():
    mom0, mom1 = ring_galaxy().render((64, 64), 1 * u.arcsec, beam=3 * u.arcsec)
    return noisy(mom0.value, mom1.to_value(KMS), seed=0)


def test_ring_fit_recovers_the_geometry_and_curve_the_parametric_fit_cannot(fitter, ring_maps):
    mom0, mom1 = ring_maps
    model = TiltedRingDisk(n_rings=len(V), r_outer=24 * u.arcsec)
    fitted = fitter(model, mom0, mom1, pixel_scale=1 * u.arcsec, beam=3 * u.arcsec)
    info = fitter.fit_info
    assert type(fitted) is type(model) and fitted.r_outer.value == 24.0  # given: kept
    assert fitted.inclination.value == pytest.approx(58.0, abs=1.0)
    assert abs(fitted.inclination.value - 58.0) < 3 * fitted.stds["inclination"]
    assert fitted.pa.value == pytest.approx(130.0, abs=0.5)
    assert fitted.v_sys.value == pytest.approx(30.0, abs=1.0)
    rings = info["rings"]
    assert len(rings) == len(V) and rings["radius"][0] == 3 * u.arcsec
    # Inside the emission (rings 1-6), the curve ring by ring, within its errors.
    err = np.abs(rings["v_rot"] - V * KMS)[:6]
    assert np.all(err < np.maximum(3 * rings["v_rot_std"][:6], 5 * KMS))
    # The exponential start model, refined, leaves ~5x the mom1 residual and
    # loses on the criterion by far.
    start, start_info = info["start_fit"]
    table = info["table"]
    assert isinstance(start, ExponentialArctanDisk)
    assert start_info["table"]["rms_mom1"][0] > 3 * table["rms_mom1"][0]
    assert table["rms_mom1"][0] == pytest.approx(3.0, rel=0.15)  # the noise
    assert table["best_model"][0] == type(model).__name__
    assert table["start_bic"][0] - table["bic"][0] > 100
    assert table["n_free"][0] == 5 + 2 * len(V) + 1
    # The errors are the likelihood's times the factors measured on KinMS mocks.
    raw = info["std_uncalibrated"]
    for name, key in (("inclination", "inclination"), ("v_sys", "v_sys"), ("v_3", "v")):
        assert table[f"{name}_std"][0].value == pytest.approx(
            ERROR_SCALE[key] * raw[name].value, rel=1e-9)


def test_ring_fit_of_a_kinms_ring_galaxy_with_the_outer_radius_from_the_map(fitter):
    # KinMS, the independent simulator, makes the galaxy from the profiles.
    pytest.importorskip("kinms")
    truth = ring_galaxy(inclination=70 * u.deg, pa=230 * u.deg, x_0=0.5 * u.arcsec,
                        y_0=0.5 * u.arcsec, v_sys=0 * KMS)
    k0, k1 = kinms_moments(
        inclination=70.0, pa=230.0, v_max=220.0, beam=(3.0, 3.0, 0.0), n_clouds=1_000_000,
        profiles=(lambda r: truth.intensity_profile(r * u.arcsec).value,
                  lambda r: truth.rotation_curve(r * u.arcsec).to_value(KMS)))
    mom0, mom1 = noisy(k0 / k0.max(), k1, seed=1)
    fitted = fitter(TiltedRingDisk(n_rings=8), mom0, mom1, pixel_scale=1 * u.arcsec,
                    beam=3 * u.arcsec)
    # The outer ring follows the detected emission (the 5% clip cuts the disc at ~21").
    assert 17.0 < fitted.r_outer.value < 25.0
    assert fitted.inclination.value == pytest.approx(70.0, abs=1.5)
    assert fitted.pa.value == pytest.approx(230.0, abs=1.0)
    curve = fitted.rotation_curve(np.array([6.0, 9.0, 12.0, 15.0]) * u.arcsec, band=False)
    assert curve.to_value(KMS) == pytest.approx(truth.rotation_curve(
        np.array([6.0, 9.0, 12.0, 15.0]) * u.arcsec).to_value(KMS), abs=8.0)


def test_model_choice_prefers_the_exponential_disc_on_an_exponential_galaxy(fitter):
    truth = ExponentialArctanDisk(inclination=50 * u.deg, pa=70 * u.deg, r_scale=5 * u.arcsec,
                                  r_turn=2 * u.arcsec, v_max=220 * KMS)
    mom0, mom1 = truth.render((64, 64), 1 * u.arcsec, beam=3 * u.arcsec)
    mom0, mom1 = noisy(mom0.value, mom1.to_value(KMS), seed=2)
    table, fits = compare_models(fitter, [ExponentialArctanDisk(), TiltedRingDisk(n_rings=8)],
                                 mom0, mom1, pixel_scale=1 * u.arcsec, beam=3 * u.arcsec)
    assert table["best_model"][0] == "ExponentialArctanDisk"
    assert table["delta_bic"][0] > STRONG_EVIDENCE and table["strong"][0]
    # Both fits agree on the geometry; the rings only spend parameters.
    exp, rings = fits["ExponentialArctanDisk"][0], fits["TiltedRingDisk8"][0]
    assert exp.inclination.value == pytest.approx(50.0, abs=1.5)
    assert rings.inclination.value == pytest.approx(exp.inclination.value, abs=2.0)


def test_model_set_and_fixed_geometry(fitter, ring_maps):
    mom0, mom1 = ring_maps
    other = ring_galaxy(pa=20 * u.deg).render((64, 64), 1 * u.arcsec, beam=3 * u.arcsec)
    m0b, m1b = noisy(other[0].value, other[1].to_value(KMS), seed=3)
    model = TiltedRingDisk(n_rings=6, pa=130 * u.deg, fixed={"pa": True})
    fitted = fitter(model, [mom0, m0b], [mom1, m1b], pixel_scale=1 * u.arcsec,
                    beam=3 * u.arcsec)
    assert len(fitted) == 2 and np.all(fitted.pa.value == 130.0)
    rings = fitter.fit_info["rings"]
    assert list(rings["galaxy"]) == [0] * 6 + [1] * 6
    assert fitter.fit_info["table"]["pa_std"][0] == 0
    # The first galaxy's PA is the true one: its fit is good; the second's is not.
    rms = fitter.fit_info["table"]["rms_mom1"]
    assert rms[0] < 4.0 < rms[1]


def test_ring_fits_need_refinement():
    fitter = NeuralKinematicFitter.pretrained(refine=False, progress=False)
    mom0, mom1 = ring_galaxy().render((32, 32), 2 * u.arcsec, beam=6 * u.arcsec)
    with pytest.raises(ValueError, match="fitted by refinement.*refine=False"):
        fitter(TiltedRingDisk(), mom0, mom1, pixel_scale=2 * u.arcsec, beam=6 * u.arcsec)
    with pytest.raises(ValueError, match="needs a fitter with refine=True"):
        compare_models(fitter, [ExponentialArctanDisk(), TiltedRingDisk()], mom0, mom1)


@pytest.fixture(scope="module")
def ring_network():
    from importlib import resources

    path = resources.files("astrokin") / "data" / "networks" / "tilted_ring_disk.pt"
    if not path.is_file():
        pytest.skip("the bundled ring network is not present in this tree")
    return NeuralKinematicFitter.pretrained(model=TiltedRingDisk(), refine=False,
                                            mc_samples=200, seed=0, progress=False)


def test_pretrained_picks_the_network_of_the_model(ring_network):
    assert ring_network.layout.model_class.__name__ == "TiltedRingDisk10"
    assert "r_outer" in ring_network.layout.free_names  # it predicts the extent too
    exp = NeuralKinematicFitter.pretrained(model=ExponentialArctanDisk())
    assert exp.layout.model_class is ExponentialArctanDisk
    assert ring_network.metadata["recipe_pretraining"]["prior"] == "realistic"


def test_the_ring_network_alone_fits_a_ring_galaxy_blind(ring_network, ring_maps):
    mom0, mom1 = ring_maps
    fitted = ring_network(TiltedRingDisk(), mom0, mom1, pixel_scale=1 * u.arcsec,
                          beam=3 * u.arcsec)
    # A galaxy the exponential network's own prediction gets wrong (a ring
    # around a depression): the ring network's first guess is close.
    assert fitted.inclination.value == pytest.approx(58.0, abs=6.0)
    assert abs((fitted.pa.value - 130.0 + 180) % 360 - 180) < 6.0
    assert fitted.v_sys.value == pytest.approx(30.0, abs=8.0)
    assert 14.0 < fitted.r_outer.value < 32.0  # the extent it predicts
    rings = ring_network.fit_info["rings"]
    v_proj = np.interp(12.0, rings["radius"].value, rings["v_proj"].value)
    truth = ring_galaxy()
    expected = truth.rotation_curve(12 * u.arcsec).to_value(KMS) * np.sin(np.radians(58.0))
    assert v_proj == pytest.approx(expected, rel=0.15)
    with pytest.raises(ValueError, match="fits only that model.*refine=True"):
        ring_network(TiltedRingDisk(n_rings=8), mom0, mom1, pixel_scale=1 * u.arcsec,
                     beam=3 * u.arcsec)


def test_rings_refined_from_the_ring_network_alone(ring_network, ring_maps):
    mom0, mom1 = ring_maps
    fitter = NeuralKinematicFitter.pretrained(model=TiltedRingDisk(), mc_samples=100, seed=0,
                                              progress=False)
    model = TiltedRingDisk(n_rings=len(V), r_outer=24 * u.arcsec)
    fitted = fitter(model, mom0, mom1, pixel_scale=1 * u.arcsec, beam=3 * u.arcsec)
    table = fitter.fit_info["table"]
    assert type(fitted) is type(model) and fitted.r_outer.value == 24.0
    assert fitted.inclination.value == pytest.approx(58.0, abs=1.0)
    assert fitted.pa.value == pytest.approx(130.0, abs=0.5)
    assert table["rms_mom1"][0] == pytest.approx(3.0, rel=0.15)  # down to the noise
    # No parametric fit was made, so no model choice.
    assert "best_model" not in table.colnames and "start_fit" not in fitter.fit_info
