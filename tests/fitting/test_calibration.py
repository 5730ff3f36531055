"""NeuralKinematicFitter.calibrate: MC-dropout spreads calibrated on galaxies of known truth."""

import numpy as np
import pytest
from astropy import units as u

from astrokin.fitting import NeuralKinematicFitter
from astrokin.models import ExponentialArctanDisk
from astrokin.synthetic import make_galaxies

torch = pytest.importorskip("torch")

# A few noisy galaxies get r_scale at the edge of the network's range (a warning).
pytestmark = pytest.mark.filterwarnings("ignore:Parameters at the edge of the network")

#: Noisy, clipped galaxies with one beam: a set-up of its own, unlike the mix
#: the bundled network's calibration was measured on.
SETUP = dict(shape=(64, 64), pixel_scale=1 * u.arcsec, beam=2.5 * u.arcsec, noise=(10, 30),
             mask_snr=3.0, priors={"inclination": (20, 85) * u.deg,
                                   "v_max": (80, 350) * u.km / u.s,
                                   # within the bundled network's training ranges
                                   "r_scale": (4, 10) * u.arcsec,
                                   "r_turn": (0.5, 20) * u.arcsec})


def _galaxies(n, seed):
    return make_galaxies(ExponentialArctanDisk(), n, seed=seed, **SETUP)


def _z(fitter, gals, name):
    """|error| / 1-sigma (as the fitter reports it) of parameter ``name``."""
    fitted = fitter(ExponentialArctanDisk(), gals.mom0, gals.mom1 * u.km / u.s,
                    pixel_scale=gals.pixel_scale, beam=SETUP["beam"])
    table = fitter.fit_info["table"]
    truth = gals.params[name].to_value(table[name].unit)
    assert len(fitted) == len(truth)
    with np.errstate(divide="ignore"):  # no spread: infinite z, counted as not covering
        return np.abs(table[name].value - truth) / table[f"{name}_std"].value


@pytest.fixture(scope="module")
def calibrated():
    # The MC-dropout spreads' calibration (refined errors: tests/fitting/test_refinement.py).
    fitter = NeuralKinematicFitter.pretrained(mc_samples=200, seed=0, progress=False,
                                              refine=False)
    gals = _galaxies(300, seed=11)
    report = fitter.calibrate(ExponentialArctanDisk(), gals.mom0, gals.mom1 * u.km / u.s,
                              gals.params, pixel_scale=gals.pixel_scale, beam=SETUP["beam"])
    return fitter, report


def test_calibration_holds_on_fresh_galaxies_of_the_same_setup(calibrated):
    fitter, report = calibrated
    assert set(report["parameter"]) >= {"inclination", "pa", "r_scale", "r_turn", "vsini"}
    fresh = _galaxies(300, seed=12)
    for name in ("inclination", "r_scale", "r_turn"):
        z = _z(fitter, fresh, name)
        # 300 galaxies: the binomial 1-sigma of a 68% fraction is 2.7%.
        assert 0.58 < np.mean(z <= 1.0) < 0.78, name
        # On the calibration set itself the fraction is the level, by construction.
        assert report.loc[name]["coverage_after"] == pytest.approx(0.6827, abs=0.01)
        # Galaxies whose parameter is pinned at the network's range (no spread)
        # are left out of the calibration, and are rare here.
        assert 290 <= report.loc[name]["n"] <= 300


def test_report_and_saved_network_carry_the_factors(calibrated, tmp_path):
    fitter, report = calibrated
    for row in report:
        assert fitter.std_scale[row["parameter"]] == pytest.approx(row["scale"])
        # The raw coverage and the factor agree: raw intervals that cover less
        # than 68% need widening (factor > 1), and the reverse.
        assert (row["coverage_before"] < 0.6827) == (row["scale"] > 1.0)
    path = tmp_path / "calibrated.pt"
    fitter.save(path)
    again = NeuralKinematicFitter.load(path, mc_samples=200, seed=0, progress=False)
    assert again.std_scale == pytest.approx(fitter.std_scale)
    assert again.metadata["calibration_source"]["n_galaxies"] == 300


def test_truth_as_dict_or_model_set_and_bad_truth():
    fitter = NeuralKinematicFitter.pretrained(mc_samples=50, seed=0, progress=False,
                                              refine=False)
    gals = _galaxies(20, seed=5)
    args = (ExponentialArctanDisk(), gals.mom0, gals.mom1 * u.km / u.s)
    kw = dict(pixel_scale=gals.pixel_scale, beam=SETUP["beam"])
    as_dict = {"inclination": gals.params["inclination"],
               "v_max": gals.params["v_max"].to_value(u.km / u.s)}  # plain: canonical units
    report = fitter.calibrate(*args, as_dict, **kw)
    assert list(report["parameter"]) == ["inclination", "v_max", "vsini"]
    model_set = ExponentialArctanDisk(
        **{nm: gals.params[nm] for nm in ("inclination", "pa", "r_scale", "r_turn", "v_max",
                                          "v_sys", "x_0", "y_0")},
        amplitude=np.ones(20), z_scale=np.zeros(20) * u.arcsec,
        v_disp=np.full(20, 10.0) * u.km / u.s, n_models=20)
    report2 = fitter.calibrate(*args, model_set, parameters=["inclination"], **kw)
    assert report2["scale"][0] == pytest.approx(report.loc["inclination"]["scale"])
    with pytest.raises(ValueError, match=r"truth\['inclination'\] has 3 value\(s\) for 20"):
        fitter.calibrate(*args, {"inclination": [30, 40, 50] * u.deg}, **kw)
    with pytest.raises(ValueError, match="truth gives none of the parameters"):
        fitter.calibrate(*args, {"colour": np.ones(20)}, **kw)
    with pytest.raises(ValueError, match=r"Cannot calibrate \['pa'\]: the free parameters"):
        fitter.calibrate(ExponentialArctanDisk(pa=0 * u.deg, fixed={"pa": True}), *args[1:],
                         model_set, parameters=["pa"], **kw)
    with pytest.raises(ValueError, match=r"truth gives no values of \['r_turn'\]"):
        fitter.calibrate(*args, as_dict, parameters=["inclination", "r_turn"], **kw)
    with pytest.raises(ValueError, match=r"level must be a finite number in \(0.0, 1.0\)"):
        fitter.calibrate(*args, as_dict, level=68, **kw)
    with pytest.raises(u.UnitConversionError):
        fitter.calibrate(*args, {"inclination": np.ones(20) * u.km / u.s}, **kw)
    solo = NeuralKinematicFitter(mode="solo", progress=False)
    with pytest.raises(ValueError, match="needs a trained network in blind mode"):
        solo.calibrate(*args, as_dict, **kw)


def test_a_bad_truth_fails_before_the_fit():
    fitter = NeuralKinematicFitter.pretrained(mc_samples=50, seed=0, progress=False,
                                              refine=False)
    before = dict(fitter.std_scale)
    gals = _galaxies(4, seed=5)
    args = (ExponentialArctanDisk(), gals.mom0, gals.mom1 * u.km / u.s)
    kw = dict(pixel_scale=gals.pixel_scale, beam=SETUP["beam"])
    ones = np.ones(4)
    for truth, kind, match in (
            ({"inclination": [np.nan, 30.0, 40.0, 50.0]}, ValueError,
             r"truth\['inclination'\] must be finite numbers; it has nan for galaxy 0"),
            ({"inclination": ["sixty"] * 4}, TypeError,
             r"truth\['inclination'\] must hold numbers"),
            ({"inclination": np.ones((4, 2))}, ValueError, "one value per galaxy, 1D"),
            ({"inclination": ones, "pa": np.ones(3)}, ValueError,
             "one value per galaxy for every parameter"),
            ({"inclination": ones * u.km / u.s}, u.UnitConversionError,
             r"truth\['inclination'\] must be in units of deg"),
            ([30.0, 40.0], TypeError, "truth must be a Table, a dict or a model set"),
            ({"inclination": np.ones(3)}, ValueError, r"has 3 value\(s\) for 4 galaxies"),
            ({"colour": ones}, ValueError, "truth gives none of the parameters")):
        with pytest.raises(kind, match=match):
            fitter.calibrate(*args, truth, **kw)
        # nothing was fitted (the old check came after the fit), nothing changed
        assert fitter.fit_info == {} and fitter.std_scale == before
    with pytest.raises(ValueError, match=r"Cannot calibrate \['pa'\]"):
        fitter.calibrate(ExponentialArctanDisk(pa=0 * u.deg, fixed={"pa": True}), *args[1:],
                         {"pa": ones}, parameters=["pa"], **kw)
    assert fitter.fit_info == {}
