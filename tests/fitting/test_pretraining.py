"""The pre-training recipe, calibration, and the bundled network."""

from importlib import resources

import astropy.units as u
import numpy as np
import pytest
import torch

from astrokin.fitting import NeuralKinematicFitter
from astrokin.fitting.parameters import ParameterLayout
from astrokin.fitting.pretraining import (
    DEFAULT_RECIPE,
    MAX_HELD_OUT,
    MAX_MAP_SIDE,
    MAX_STEPS,
    RING_RECIPE,
    calibrate,
    check_recipe,
    pretrain,
    read_recipe,
    run,
)
from astrokin.models import ExponentialArctanDisk

KMS = u.km / u.s
BUNDLED = resources.files("astrokin") / "data" / "networks" / "exponential_arctan_disk.pt"


def test_to_outputs_inverts_to_parameters():
    layout = ParameterLayout(ExponentialArctanDisk(bounds={"v_max": (20, 3000)}))
    g = torch.Generator().manual_seed(0)
    n = 200
    ctx = {"half_width": 10 + 30 * torch.rand(n, generator=g),
           "v_ref": 100 * torch.randn(n, generator=g),
           "v_half": 50 + 300 * torch.rand(n, generator=g)}
    out = {"intensity": 2 * torch.rand(n, layout.n_outputs["intensity"], generator=g) - 1,
           "velocity": 2 * torch.rand(n, layout.n_outputs["velocity"], generator=g) - 1}
    # Unit (cos, sin) pairs, as a trained network would give for the PA.
    ang = torch.atan2(out["velocity"][:, 1], out["velocity"][:, 0])
    out["velocity"][:, 0], out["velocity"][:, 1] = torch.cos(ang), torch.sin(ang)
    fixed = {"amplitude": 1.0, "z_scale": 0.0}
    params = layout.to_parameters(out, ctx, fixed)
    back = layout.to_outputs(params, ctx)
    for k in out:
        torch.testing.assert_close(back[k], out[k], rtol=0, atol=2e-4)


def test_calibration_gives_68_percent_coverage_on_its_set():
    # A briefly pre-trained network has spreads far too small for its errors;
    # the calibration factors must make exactly ~68% of intervals cover.
    fitter = pretrain({"supervised_steps": 3, "selfsupervised_steps": 0, "batch_size": 8,
                       "validation_size": 8, "calibration_size": 16,
                       "calibration_mc_samples": 30, "shapes": [64]},
                      progress=False, log=lambda line: None)
    from astrokin.fitting.pretraining import _batch, _generators, _model_from_recipe

    rec = {**DEFAULT_RECIPE, "shapes": [64]}
    model = _model_from_recipe(rec)
    batch, truth = _batch(_generators(model, rec, 3), rec, np.random.default_rng(3), 200)
    scale, coverage = calibrate(fitter, model, batch, truth, mc_samples=40)
    summary, names = fitter.mc_summary(batch, 40)
    for nm in ("inclination", "r_scale", "vsini"):
        j = names.index(nm)
        t = truth[nm] if nm != "vsini" else truth["v_max"] * np.sin(
            np.deg2rad(truth["inclination"]))
        z = np.abs(summary.mean[:, j] - t) / np.sqrt(summary.cov[:, j, j])
        assert coverage[nm] == pytest.approx(np.mean(z <= 1))
        assert np.mean(z <= scale[nm]) == pytest.approx(0.683, abs=0.02)
    with pytest.raises(ValueError, match="Unknown recipe keys"):
        pretrain({"epochs_typo": 3})


@pytest.fixture(scope="module")
def bundled():
    if not BUNDLED.is_file():
        pytest.skip("the bundled network is not present in this tree")
    # The network's own predictions and MC-dropout spreads (no refinement).
    return NeuralKinematicFitter.pretrained(mc_samples=300, seed=0, progress=False, refine=False)


def test_bundled_network_is_safe_to_load_and_describes_itself(bundled):
    data = torch.load(str(BUNDLED), weights_only=True)  # no code from the file runs
    assert set(data) == {"metadata", "state_dict"}
    meta = bundled.metadata
    assert meta["layout"]["model_class"] == "astrokin.models.disks:ExponentialArctanDisk"
    assert set(meta["calibration"]) >= {"inclination", "pa", "vsini"}
    assert meta["recipe_pretraining"]["vsini_range"] == [50.0, 500.0]
    assert BUNDLED.stat().st_size < 8e6  # a few MB, shipped in the package


@pytest.mark.parametrize(
    "truth",
    [
        dict(inclination=35.0, pa=80.0, r_scale=3.5, r_turn=1.0, v_max=250.0, v_sys=1500.0,
             x_0=0.6, y_0=-0.4),
        dict(inclination=62.0, pa=215.0, r_scale=5.0, r_turn=3.0, v_max=180.0, v_sys=-30.0,
             x_0=-1.0, y_0=0.8),
        dict(inclination=80.0, pa=330.0, r_scale=4.0, r_turn=2.0, v_max=300.0, v_sys=400.0,
             x_0=0.0, y_0=0.0),
    ],
    ids=["i35", "i62", "i80"],
)
def test_bundled_network_recovers_rendered_galaxies_blind(bundled, truth):
    # 64x64 maps of 0.5" pixels with a 1.5" (3 px) beam: inside the training
    # distribution. Tolerances are ~3x the validation mean absolute errors
    # recorded in the network's metadata (docs/pretrained.rst), so a network
    # that lost its accuracy, or a convention change (PA sense, centre
    # offsets, v_sys), fails.
    units = dict(inclination=u.deg, pa=u.deg, r_scale=u.arcsec, r_turn=u.arcsec, v_max=KMS,
                 v_sys=KMS, x_0=u.arcsec, y_0=u.arcsec)
    disk = ExponentialArctanDisk(**{k: v * units[k] for k, v in truth.items()})
    mom0, mom1 = disk.render((64, 64), 0.5 * u.arcsec, beam=1.5 * u.arcsec)
    fitted = bundled(ExponentialArctanDisk(), mom0, mom1, pixel_scale=0.5 * u.arcsec,
                     beam=1.5 * u.arcsec)
    row = bundled.fit_info["table"][0]
    vsini = truth["v_max"] * np.sin(np.deg2rad(truth["inclination"]))
    assert fitted.inclination.value == pytest.approx(truth["inclination"], abs=6)
    assert abs((fitted.pa.value - truth["pa"] + 180) % 360 - 180) < 6
    assert row["vsini"].to_value(KMS) == pytest.approx(vsini, rel=0.12)
    assert fitted.v_sys.value == pytest.approx(truth["v_sys"], abs=0.05 * vsini)
    assert fitted.x_0.value == pytest.approx(truth["x_0"], abs=0.75)
    assert fitted.y_0.value == pytest.approx(truth["y_0"], abs=0.75)
    assert fitted.r_scale.value == pytest.approx(truth["r_scale"], rel=0.25)
    # Reported spreads are the raw MC spreads times the stored calibration, and
    # both are reported.
    raw = bundled.fit_info["std_uncalibrated"]["inclination"]
    factor = bundled.std_scale["inclination"]
    assert raw > 0 * u.deg
    assert row["inclination_std"].value == pytest.approx(factor * raw.value, rel=1e-9)


def test_solo_fine_tune_starts_from_the_bundled_weights(bundled):
    fitter = NeuralKinematicFitter.pretrained(mode="solo", epochs=3, mc_samples=50, seed=0,
                                              progress=False, learning_rate=1e-5)
    before = {k: v.clone() for k, v in fitter.network.state_dict().items()}
    disk = ExponentialArctanDisk(inclination=50 * u.deg, pa=100 * u.deg, r_scale=4 * u.arcsec,
                                 r_turn=2 * u.arcsec, v_max=200 * KMS)
    mom0, mom1 = disk.render((64, 64), 0.5 * u.arcsec, beam=1.5 * u.arcsec)
    fitted = fitter(ExponentialArctanDisk(), mom0, mom1, pixel_scale=0.5 * u.arcsec,
                    beam=1.5 * u.arcsec)
    after = fitter.network.state_dict()
    moved = max(float((after[k] - before[k]).abs().max()) for k in before)
    assert 0 < moved < 1e-2  # fine-tuned: changed, but only a little
    assert fitted.inclination.value == pytest.approx(50, abs=6)


def test_pretraining_can_continue_from_a_saved_network(tmp_path):
    small = {"supervised_steps": 2, "selfsupervised_steps": 0, "batch_size": 4,
             "validation_size": 4, "calibration_size": 8, "calibration_mc_samples": 10,
             "shapes": [64]}
    first = pretrain(small, progress=False, log=lambda line: None)
    path = tmp_path / "stage1.pt"
    first.save(path)
    # No new steps: the continued network is the saved one, weight for weight.
    second = pretrain({**small, "supervised_steps": 0, "init": str(path), "seed": 5},
                      progress=False, log=lambda line: None)
    for (k, a), (_, b) in zip(first.network.state_dict().items(),
                              second.network.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_recipe_priors_set_the_training_galaxies():
    from astrokin.fitting.pretraining import _batch, _generators, _model_from_recipe

    rec = {**DEFAULT_RECIPE, "shapes": [64], "noise_fraction": 0.0,
           "priors": {"pa": 0.0, "x_0": [-1.0, 1.0], "v_sys": 0.0, "inclination": [40, 50]}}
    model = _model_from_recipe(rec)
    _, truth = _batch(_generators(model, rec, 1), rec, np.random.default_rng(1), 64)
    assert np.all(truth["pa"] == 0) and np.all(truth["v_sys"] == 0)
    assert np.all(np.abs(truth["x_0"]) <= 1) and np.ptp(truth["x_0"]) > 0.5
    assert np.all((truth["inclination"] >= 40) & (truth["inclination"] <= 50))
    # V sin i keeps the recipe's range whatever the inclinations are.
    vsini = truth["v_max"] * np.sin(np.deg2rad(truth["inclination"]))
    assert vsini.min() >= 50 and vsini.max() <= 500
    for bad, match in (({"colour": 1.0}, "not a parameter of ExponentialArctanDisk"),
                       ({"pa": [10, 0]}, "one value or \\[low, high\\]"),
                       ({"pa": [0, 1, 2]}, "one value or \\[low, high\\]"),
                       ({"pa": "north"}, "one value or \\[low, high\\]")):
        with pytest.raises(ValueError, match=match):
            check_recipe({"priors": bad})


def test_specialising_starts_from_the_bundled_network():
    if not BUNDLED.is_file():
        pytest.skip("the bundled network is not present in this tree")
    fitter = pretrain({"init": "pretrained", "supervised_steps": 0, "selfsupervised_steps": 0,
                       "validation_size": 4, "calibration_size": 8,
                       "calibration_mc_samples": 10, "shapes": [64],
                       "priors": {"pa": 0.0}}, progress=False, log=lambda line: None)
    bundled = NeuralKinematicFitter.pretrained()
    for (k, a), (_, b) in zip(fitter.network.state_dict().items(),
                              bundled.network.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert fitter.metadata["recipe_pretraining"]["priors"] == {"pa": 0.0}


def test_specialising_to_one_setup_makes_it_more_accurate_there():
    if not BUNDLED.is_file():
        pytest.skip("the bundled network is not present in this tree")
    from astrokin.fitting.pretraining import (
        _evaluate,
        _generators,
        _mixed_batch,
        _model_from_recipe,
    )

    setup = {"shapes": [64], "noise_fraction": 0.0, "beam_major_px": [2, 2],
             "beam_axis_ratio": [1, 1], "priors": {"pa": 0, "x_0": 0, "y_0": 0, "v_sys": 0}}
    rec = {**DEFAULT_RECIPE, **setup}
    model = _model_from_recipe(rec)
    batch, truth = _mixed_batch(_generators(model, rec, 77), rec, np.random.default_rng(77), 256)
    before, _, _ = _evaluate(NeuralKinematicFitter.pretrained(seed=0), model, batch, truth)
    special = pretrain({**setup, "init": "pretrained", "supervised_steps": 120,
                        "supervised_lr": 2e-4, "batch_size": 32, "selfsupervised_steps": 0,
                        "eval_every": 1000, "validation_size": 8, "calibration_size": 16,
                        "calibration_mc_samples": 10, "seed": 3},
                       progress=False, log=lambda line: None)
    after, _, _ = _evaluate(special, model, batch, truth)
    # Measured: inclination 0.88 -> 0.43 deg, V sin i 3.8 -> 2.7 km/s, r_turn 0.0106 ->
    # 0.0075 on these 256 galaxies after 120 steps (5000 steps of 64: 0.25 deg, 1.1 km/s).
    for name in ("inclination", "vsini"):
        assert after[name] < 0.8 * before[name], (name, before[name], after[name])
    assert after["r_turn"] < before["r_turn"]


def test_the_ring_recipe_frees_the_outer_radius_and_narrows_the_brightness():
    from astrokin.fitting.pretraining import _batch, _generators, _model_from_recipe

    rec = {**DEFAULT_RECIPE, **RING_RECIPE, "shapes": [64]}
    model = _model_from_recipe(rec)
    layout = ParameterLayout(model)
    slots = {s["name"]: s for s in layout.slots}
    assert type(model).__name__ == "TiltedRingDisk10" and "r_outer" in slots
    assert slots["r_outer"]["rule"] == "half_width"
    assert (slots["sb_4"]["lo"], slots["sb_4"]["hi"]) == (0.0, 12.0)
    # Ring speeds are predicted as V sin i, in units of the map's velocity half-range.
    assert slots["v_7"]["rule"] == "projected" and slots["v_7"]["kind"] == "linear"
    batch, truth = _batch(_generators(model, rec, 2), rec, np.random.default_rng(2), 32)
    ctx = batch.to("cpu").context
    truth_t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in truth.items()}
    out = layout.to_outputs(truth_t, ctx)
    # The realistic galaxies' labels lie inside the network's ranges (few clipped).
    for enc, o in out.items():
        assert float((o.abs() >= 1).float().mean()) < 0.02, enc
    for bad, match in (({"free": ["colour"]}, "frees 'colour'"),
                       ({"bounds": {"w_*": [0, 1]}}, "matches no parameter"),
                       ({"prior": "kinms"}, "'paper' or 'realistic'")):
        with pytest.raises(ValueError, match=match):
            check_recipe({**RING_RECIPE, **bad})


def test_node_speeds_are_deprojected_with_the_inclination():
    from astrokin.fitting.parameters import NODE_FRACTION
    from astrokin.fitting.ring_fits import network_model
    from astrokin.models import TiltedRingDisk

    layout = ParameterLayout(network_model(TiltedRingDisk(n_rings=3)))
    ctx = {"half_width": torch.tensor([30.0]), "v_ref": torch.tensor([0.0]),
           "v_half": torch.tensor([200.0])}
    out = {enc: torch.zeros(1, n) for enc, n in layout.n_outputs.items()}
    slots = [s["name"] for s in layout.slots if s["encoder"] == "intensity"]
    out["intensity"][0, slots.index("inclination")] = 1 / 3  # 10 + (4/3) 40 = 63.3 deg
    out["velocity"][0, 0] = 1.0  # PA 0: (cos, sin) = (1, 0)
    params = layout.to_parameters(out, ctx, {"amplitude": 1.0, "z_scale": 0.0})
    sin_i = np.sin(np.radians(float(params["inclination"])))
    # u = 0 is the middle of [0, NODE_FRACTION] v_half, projected.
    assert float(params["v_2"]) * sin_i == pytest.approx(0.5 * NODE_FRACTION * 200.0, rel=1e-5)
    assert float(params["r_outer"]) == pytest.approx(0.5 * (0.05 + 0.85) * 30.0, rel=1e-5)
    back = layout.to_outputs(params, ctx)
    for k in out:
        torch.testing.assert_close(back[k], out[k], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------
# check_recipe: every key, whole, before anything runs


def test_the_shipped_recipes_pass_the_check():
    from pathlib import Path

    from astrokin.fitting.persistence import read_network_file

    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "benchmarks" / "recipes").glob("*.json"))
    assert files
    for path in files:
        assert check_recipe(read_recipe(path))["model"] == DEFAULT_RECIPE["model"]
    assert check_recipe(None) == DEFAULT_RECIPE and check_recipe(RING_RECIPE)["prior"] == \
        "realistic"
    networks = sorted((resources.files("astrokin") / "data" / "networks").glob("*.pt"))
    for path in networks:
        stored = read_network_file(path)[0]["recipe_pretraining"]
        assert set(stored) <= set(DEFAULT_RECIPE), path
        assert check_recipe(stored)["shapes"] == stored["shapes"]


@pytest.mark.parametrize("key, value, kind, match", [
    ("shapes", [16384], ValueError, "holds 16384: map sides must be 16 to 1024"),
    ("shapes", [8], ValueError, "must be an integer >= 16"),
    ("shapes", [], ValueError, "at least one map side"),
    ("shapes", 64, TypeError, "non-empty list of map sides"),
    ("shapes", [64.5], ValueError, "integer"),
    ("calibration_size", 10**9, ValueError, "at most 50,000 .MAX_HELD_OUT"),
    ("validation_size", 0, ValueError, "'validation_size' must be a positive integer"),
    ("supervised_steps", 10**12, ValueError, "at most 1,000,000 .MAX_STEPS"),
    ("supervised_steps", -1, ValueError, "non-negative integer"),
    ("supervised_steps", "many", ValueError, "'supervised_steps' must be a non-negative"),
    ("eval_every", 0, ValueError, "positive integer"),
    ("batch_size", 10**6, ValueError, "at most 4,096"),
    ("batch_size", True, ValueError, "'batch_size' must be a positive integer; got True"),
    ("calibration_mc_samples", 1, ValueError, "integer >= 2"),
    ("calibration_mc_samples", 10**9, ValueError, "MAX_MC_SAMPLES"),
    ("seed", -3, ValueError, "'seed' must be a non-negative integer"),
    ("seed", 2**40, ValueError, "MAX_SEED"),
    ("noise_fraction", 1.5, ValueError, r"'noise_fraction' must be a number in \[0, 1\]"),
    ("texture_fraction", "half", TypeError, "'texture_fraction' must be a real number"),
    ("dropout", 1.0, ValueError, r"in \[0, 1\)"),
    ("supervised_lr", 0.0, ValueError, r"in \(0, 1\]"),
    ("lr_final_fraction", float("nan"), ValueError, "finite number"),
    ("mask_snr", -1, ValueError, ">= 0"),
    ("anchor_weight", None, TypeError, "real number"),
    ("snr_range", [10, 5], ValueError, "0 < low <= high; got \\[10, 5\\]"),
    ("snr_range", "high", TypeError, "two numbers"),
    ("snr_range", [1, 2, 3], TypeError, "two numbers"),
    ("beam_major_px", [1, 500], ValueError, "MAX_BEAM_PX"),
    ("beam_major_px", [1, "4"], TypeError, "'beam_major_px' high must be a real number"),
    ("beam_axis_ratio", [0.5, 2], ValueError, "high <= 1"),
    ("inclination_range", [0, 90], ValueError, "0 < low"),
    ("v_max_bounds", [300, 300], ValueError, "low < high"),
    ("diameter_beams", [0, 30], ValueError, "0 < low"),
    ("prior", 5, ValueError, "'paper' or 'realistic'"),
    ("prior", "realistic", ValueError, "draws ring discs"),
    ("model", "Disk", ValueError, "'module:Class'"),
    ("model", 3, TypeError, "'module:Class'"),
    ("model", "astrokin.models:Nope", ValueError, "cannot be found"),
    ("model", "numpy:ndarray", ValueError, "not an astrokin disc model"),
    ("init", 5, TypeError, "'init' must be null, 'pretrained' or the file"),
    ("init", "", TypeError, "'init'"),
    ("free", "r_outer", TypeError, "list of parameter names"),
    ("priors", [1, 2], TypeError, "'priors' must be an object"),
    ("priors", {"pa": [1, float("inf")]}, ValueError, "'priors' of 'pa'"),
    ("bounds", {"pa": [5, 1]}, ValueError, "'bounds' of 'pa' must be"),
    ("bounds", {"pa": "wide"}, TypeError, "'bounds' of 'pa' must be \\[low, high\\]"),
])
def test_check_recipe_names_the_key_the_value_and_what_was_expected(key, value, kind, match):
    with pytest.raises(kind, match=match) as info:
        check_recipe({key: value})
    assert repr(key) in str(info.value)
    # Not a subclass that hides the kind: exactly the documented type.
    assert type(info.value) is kind


def test_check_recipe_refuses_unknown_keys_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown recipe keys: \['epochs'\]; the known keys "
                                         r"are \['anchor_weight', 'batch_size'"):
        check_recipe({"epochs": 300})
    with pytest.raises(TypeError, match="recipe must be a dict"):
        check_recipe([("seed", 1)])


def test_check_recipe_gives_the_full_recipe_with_integer_counts():
    full = check_recipe({"supervised_steps": 8000.0, "shapes": [64.0, 100], "seed": None})
    assert full["supervised_steps"] == 8000 and type(full["supervised_steps"]) is int
    assert full["shapes"] == [64, 100] and all(type(n) is int for n in full["shapes"])
    assert full["seed"] is None and full["vsini_range"] == DEFAULT_RECIPE["vsini_range"]
    # the limits are generous: the bundled schedules are far inside them
    assert check_recipe({"shapes": [MAX_MAP_SIDE], "calibration_size": MAX_HELD_OUT,
                         "supervised_steps": MAX_STEPS})["shapes"] == [MAX_MAP_SIDE]


def test_read_recipe_checks_over_the_recipe_it_overrides(tmp_path):
    # The ring recipe frees r_outer; over the default recipe it is no parameter.
    assert read_recipe(items=['free=["r_outer"]'], base=RING_RECIPE) == {"free": ["r_outer"]}
    with pytest.raises(ValueError, match="frees 'r_outer' .its 'free'., not a parameter"):
        read_recipe(items=['free=["r_outer"]'])
    path = tmp_path / "huge.json"
    path.write_text('{"shapes": [64], "calibration_size": 1000000000}')
    with pytest.raises(ValueError, match="'calibration_size' must be at most 50,000"):
        read_recipe(path)
    with pytest.raises(TypeError, match="KEY=VALUE"):
        read_recipe(items="seed=1")
    with pytest.raises(TypeError, match="path must be the name of a JSON recipe"):
        read_recipe(5)


def test_run_refuses_a_bad_recipe_before_anything_is_written(tmp_path):
    out = tmp_path / "net.pt"
    with pytest.raises(ValueError, match="'noise_fraction' must be a number in"):
        run({"noise_fraction": 2.0}, out, progress=False, log=lambda line: None)
    with pytest.raises(TypeError, match="overwrite must be True or False; got str 'yes'"):
        run({}, out, overwrite="yes", log=lambda line: None)
    with pytest.raises(ValueError, match="Unknown recipe keys"):
        pretrain({"supervised_step": 3}, progress=False, log=lambda line: None)
    assert not any(tmp_path.iterdir())
