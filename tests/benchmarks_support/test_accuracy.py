"""Checks of benchmarks/accuracy.py: the table functions and a tiny end-to-end run."""

import numpy as np
import pytest

from .test_kinms_sets import _load

acc = _load("accuracy")
ks = _load("kinms_sets")


def test_differences_wrap_angles():
    np.testing.assert_allclose(acc.differences([359.0, 10.0], [1.0, 350.0], "angle"),
                               [2.0, -20.0])
    np.testing.assert_allclose(acc.differences([1.0], [3.5]), [2.5])


def test_error_stats_and_table():
    st = acc.error_stats([1.0, -1.0, 3.0, np.nan])
    assert st["n"] == 3
    assert st["mean_abs"] == pytest.approx(5 / 3)
    assert st["median_abs"] == pytest.approx(1.0)
    assert st["rms"] == pytest.approx(np.sqrt(11 / 3))
    assert st["bias"] == pytest.approx(1.0)
    true = {"inclination": np.array([30.0, 60.0]), "x_0": np.zeros(2), "y_0": np.zeros(2),
            "pa": np.array([359.0, 90.0])}
    fit = {"inclination": np.array([31.0, 58.0]), "x_0": np.array([3.0, 0.0]),
           "y_0": np.array([4.0, 0.0]), "pa": np.array([1.0, 90.0])}
    rows = acc.error_table(true, fit, selections={"all": [True, True], "first": [True, False]})
    by = {(r["quantity"], r["sample"]): r for r in rows}
    assert by[("inclination", "all")]["bias"] == pytest.approx(-0.5)
    assert by[("inclination", "all")]["paper"] == 1.1
    assert by[("PA", "all")]["mean_abs"] == pytest.approx(1.0)
    assert by[("centre |offset|", "first")]["mean_abs"] == pytest.approx(5.0)
    assert np.isnan(by[("centre |offset|", "all")]["bias"])
    text = acc.format_table(rows, title="t")
    assert "centre |offset|" in text and text.startswith("t\n")


def test_coverage_and_report_units():
    assert acc.coverage([0, 0, 0, 0], [0.5, 1.5, -0.5, 3], [1, 1, 1, 1]) == 0.5
    assert acc.coverage([359.0], [1.0], [2.5], "angle") == 1.0
    out = acc.report_units({"r_scale": [8.0], "x_0": [1.0], "v_max": [200.0],
                            "inclination": [30.0]}, half_width=[32.0], pixel_scale=[0.5])
    assert out["r_scale"][0] == 0.25 and out["x_0"][0] == 2.0
    assert out["vsini"][0] == pytest.approx(100.0)


def test_resolution_flag_definitions():
    beam = np.array([[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [4.0, 2.0, 0.0]])
    true = {"r_turn": np.array([4.0, 2.0, 4.0]), "inclination": np.array([60.0, 0.0, 0.0]),
            "pa": np.array([0.0, 0.0, 0.0])}
    # projected: 4 cos 60 = 2 < 3; 2 < 3; 4 cos 0 = 4 vs the beam along the minor axis
    # (PA 90: the 2" axis) -> 3: not flagged
    np.testing.assert_array_equal(acc.resolution_flag(true, beam), [True, True, False])
    # intrinsic: 4 > 3, 2 < 3, 4 < 1.5 * 4 (major axis of the beam along PA 0)
    np.testing.assert_array_equal(acc.resolution_flag(true, beam, definition="intrinsic"),
                                  [False, True, True])
    np.testing.assert_allclose(acc.beam_fwhm_along(beam[2:], [0.0, 90.0, 45.0]),
                               [4.0, 2.0, 1 / np.sqrt(0.5 / 16 + 0.5 / 4)])


def test_rotation_curve_errors():
    true = {"v_max": np.array([200.0, 100.0]), "r_turn": np.array([2.0, 5.0]),
            "inclination": np.array([30.0, 90.0])}
    radii = acc.rotation_curve_radii([2.0, 2.0], [32.0, 32.0], n_radii=10)
    assert radii.shape == (2, 10) and radii[0, 0] == 2.0 and radii[0, -1] == pytest.approx(25.6)
    rc = acc.rotation_curve_errors(true, true, radii)
    np.testing.assert_allclose(rc["projected"], 0.0)
    fit = dict(true, v_max=true["v_max"] * 1.1)
    rc = acc.rotation_curve_errors(true, fit, radii)
    assert rc["deprojected"][0] > rc["projected"][0]
    assert rc["deprojected"][1] == pytest.approx(rc["projected"][1])
    rows = acc.rc_table(rc)
    assert [r["curve"] for r in rows] == ["V(r) sin i", "V(r)"]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("sets")
    ks.save_set(ks.generate("hard", 4, clouds=30_000, seed=4, verbose=False),
                out / "kinms_hard.npz")
    ks.save_set(ks.generate("paper", 4, clouds=30_000, seed=4, verbose=False),
                out / "kinms_paper.npz")
    return out


def test_end_to_end_solo_then_blind(tiny_set, tmp_path, capsys):
    pytest.importorskip("torch")
    net = tmp_path / "net.pt"
    acc.main(["--set", "paper", "--cache", str(tiny_set), "--mode", "solo", "--epochs", "1",
              "--mc-samples", "5", "--n", "2", "--save-network", str(net)])
    text = capsys.readouterr().out
    assert "Errors (fitted - true)" in text and "galaxies/s" in text
    assert "fixed at truth: pa, x_0, y_0, v_sys" in text
    assert net.exists()
    results = tmp_path / "res.npz"
    acc.main(["--set", "paper", "--cache", str(tiny_set), "--mode", "blind", "--network",
              str(net), "--mc-samples", "5", "--start", "2", "--save-results", str(results)])
    text = capsys.readouterr().out
    assert "galaxies 2-3: 2 fitted" in text and "Rotation-curve" in text
    with np.load(results) as f:
        assert f["fit_inclination"].shape == (2,) and np.all(np.isfinite(f["fit_vsini"]))


def test_end_to_end_hard_mixed_shapes(tiny_set, capsys):
    pytest.importorskip("torch")
    acc.main(["--set", "hard", "--cache", str(tiny_set), "--mode", "solo", "--epochs", "1",
              "--mc-samples", "5"])
    text = capsys.readouterr().out
    for label in ("PA", "centre |offset|", "v_sys", "unflagged"):
        assert label in text


def test_calibrate_on_another_set_sets_the_factors(tiny_set, tmp_path, capsys):
    pytest.importorskip("torch")
    other = tmp_path / "kinms_hard_seed5.npz"
    ks.save_set(ks.generate("hard", 6, clouds=30_000, seed=5, verbose=False), other)
    acc.main(["--set", "hard", "--cache", str(tiny_set), "--mode", "blind", "--network",
              "pretrained", "--mc-samples", "50", "--calibrate-on", str(other)])
    text = capsys.readouterr().out
    assert "MC spreads recalibrated on 6 galaxies of hard (seed 5), not the fitted ones" in text
    for name in ("inclination", "pa", "vsini"):
        assert any(line.startswith(name) for line in text.splitlines()), name
    # The test galaxies themselves cannot be the calibration set.
    with pytest.raises(SystemExit, match="another --seed"):
        acc.main(["--set", "hard", "--cache", str(tiny_set), "--mode", "blind", "--network",
                  "pretrained", "--calibrate-on", str(tiny_set / "kinms_hard.npz")])
    with pytest.raises(SystemExit):
        acc.main(["--set", "hard", "--cache", str(tiny_set), "--mode", "solo",
                  "--calibrate-on", str(other)])
