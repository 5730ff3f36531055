"""The ``astrokin`` command line, run for real on FITS files in tmp_path."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import QTable

from astrokin.cli import main
from astrokin.examples.fit_example import example_files, true_parameters

SHARED = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
def maps(tmp_path):
    """Two galaxies' example maps, copied into tmp_path as a_mom0.fits ... b_mom1.fits."""
    f0, f1 = example_files()
    for name in ("a", "b"):
        shutil.copy(f0, tmp_path / f"{name}_mom0.fits")
        shutil.copy(f1, tmp_path / f"{name}_mom1.fits")
    return tmp_path


def _run(argv, capsys):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_fit_one_galaxy_writes_table_and_figures(maps, capsys):
    truth = true_parameters()
    before = (maps / "a_mom1.fits").read_bytes()
    out_table = maps / "fit.ecsv"
    status, out, _ = _run(["fit", maps / "a_mom0.fits", maps / "a_mom1.fits", "-o", out_table,
                           "--figures", maps / "figs", "--corner", "--distance", "16.5",
                           "--mc-samples", "300", "-q"], capsys)
    assert status == 0 and out == ""
    table = QTable.read(out_table)
    assert len(table) == 1 and table["name"][0] == "a"
    assert table["inclination"][0].to_value(u.deg) == pytest.approx(truth["inclination"], abs=5)
    assert abs((table["pa"][0].to_value(u.deg) - truth["pa"] + 180) % 360 - 180) < 5
    assert table["distance"][0] == 16.5 * u.Mpc
    assert table["mom1_file"][0] == str(maps / "a_mom1.fits")
    assert (maps / "figs" / "a_fit.png").stat().st_size > 20_000
    assert (maps / "figs" / "a_corner.png").stat().st_size > 20_000
    assert (maps / "a_mom1.fits").read_bytes() == before  # inputs untouched
    assert not [p for p in maps.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_fix_holds_a_parameter(maps, capsys):
    status, out, _ = _run(["fit", maps / "a_mom0.fits", maps / "a_mom1.fits", "-o",
                           maps / "fix.fits", "--fix", "pa=130", "--fix", "v_sys=1350 km/s",
                           "--mc-samples", "200"], capsys)
    assert status == 0 and "wrote" in out and "inclination" in out
    table = QTable.read(maps / "fix.fits")
    assert table["pa"][0] == 130 * u.deg and table["pa_std"][0] == 0 * u.deg
    assert table["v_sys"][0] == 1350 * u.km / u.s


def test_ring_model_writes_the_rotation_curve_ring_by_ring(maps, capsys):
    truth = true_parameters()
    status, out, _ = _run(["fit", maps / "a_mom0.fits", maps / "a_mom1.fits", maps / "b_mom0.fits",
                           maps / "b_mom1.fits", "-o", maps / "rings.fits", "--model",
                           "TiltedRingDisk", "--rings", "6", "--mc-samples", "100"], capsys)
    assert status == 0 and "rings.fits" in out and "ring by ring" in out
    table = QTable.read(maps / "rings.fits")
    rings = QTable.read(maps / "rings_rings.fits")
    assert len(table) == 2 and "v_6" in table.colnames and "sb_6" in table.colnames
    assert table["inclination"][0].to_value(u.deg) == pytest.approx(truth["inclination"], abs=3)
    # The example is an exponential/arctan disc: the parametric model wins.
    assert list(table["best_model"]) == ["ExponentialArctanDisk"] * 2
    assert len(rings) == 12 and list(rings["name"]) == ["a"] * 6 + ["b"] * 6
    assert rings["radius"].unit == u.arcsec and rings["v_rot"].unit == u.km / u.s
    status, _, err = _run(["fit", maps / "a_mom0.fits", maps / "a_mom1.fits", "-o",
                           maps / "x.ecsv", "--rings", "6"], capsys)
    assert status != 0 and "--rings is for --model TiltedRingDisk" in err


def test_unrefined_ring_fits_use_the_ring_network(maps, capsys):
    from importlib import resources

    if not (resources.files("astrokin") / "data" / "networks" / "tilted_ring_disk.pt").is_file():
        pytest.skip("the bundled ring network is not present in this tree")
    truth = true_parameters()
    status, _, _ = _run(["fit", maps / "a_mom0.fits", maps / "a_mom1.fits", "-o",
                         maps / "blind_rings.ecsv", "--model", "TiltedRingDisk", "--no-refine",
                         "--mc-samples", "100", "-q"], capsys)
    assert status == 0
    table = QTable.read(maps / "blind_rings.ecsv")
    rings = QTable.read(maps / "blind_rings_rings.ecsv")
    assert "v_10" in table.colnames and len(rings) == 10
    assert table["r_outer"][0].to_value(u.arcsec) > 0  # predicted by the network
    assert table["inclination"][0].to_value(u.deg) == pytest.approx(truth["inclination"], abs=8)
    status, _, err = _run(["fit", maps / "a_mom0.fits", maps / "a_mom1.fits", "-o",
                           maps / "x6.ecsv", "--model", "TiltedRingDisk", "--rings", "6",
                           "--no-refine"], capsys)
    assert status != 0 and "fits only that model" in err


def test_many_galaxies_by_pattern_and_catalogue(maps, capsys):
    status, _, _ = _run(["fit", str(maps / "*_mom0.fits"), "-o", maps / "glob.ecsv",
                         "--mc-samples", "200", "--batch-size", "1", "-q"], capsys)
    assert status == 0
    by_glob = QTable.read(maps / "glob.ecsv")
    assert list(by_glob["name"]) == ["a", "b"] and list(by_glob["galaxy"]) == [0, 1]
    (maps / "cat.csv").write_text("name,mom0,mom1,distance\n"
                                  "first,a_mom0.fits,a_mom1.fits,10\n"
                                  "second,b_mom0.fits,b_mom1.fits,20\n")
    status, _, _ = _run(["fit", "--catalogue", maps / "cat.csv", "-o", maps / "cat.ecsv",
                         "--mc-samples", "200", "-q"], capsys)
    assert status == 0
    by_cat = QTable.read(maps / "cat.ecsv")
    assert list(by_cat["name"]) == ["first", "second"]
    assert list(by_cat["distance"].to_value(u.Mpc)) == [10, 20]
    # chunks of one and one call of two give the same fits (seeded per galaxy)
    assert np.allclose(by_glob["inclination"].value, by_cat["inclination"].value)


def test_region_mask_restricts_the_fit(maps, capsys):
    header = fits.getheader(maps / "a_mom0.fits")
    ny, nx = header["NAXIS2"], header["NAXIS1"]
    # a DS9 pixel circle (1-based image coordinates) around the middle of the map
    (maps / "inner.reg").write_text(f"image\ncircle({(nx + 1) / 2},{(ny + 1) / 2},12)\n")
    args = [maps / "a_mom0.fits", maps / "a_mom1.fits", "--mc-samples", "200", "-q"]
    assert _run(["fit", *args, "-o", maps / "all.ecsv"], capsys)[0] == 0
    assert _run(["fit", *args, "-o", maps / "in.ecsv", "--mask", maps / "inner.reg"],
                capsys)[0] == 0
    full, inner = QTable.read(maps / "all.ecsv"), QTable.read(maps / "in.ecsv")
    assert full["inclination"][0] != inner["inclination"][0]
    # a round window hides the mom0 axis ratio (the inclination: the network is not
    # trained on such masks), but the velocity field inside it still pins the PA
    truth = true_parameters()
    assert abs((inner["pa"][0].to_value(u.deg) - truth["pa"] + 180) % 360 - 180) < 6


def test_errors_are_one_line_and_nothing_is_overwritten(maps, capsys):
    a0, a1 = maps / "a_mom0.fits", maps / "a_mom1.fits"
    (maps / "taken.ecsv").write_text("keep me")
    cases = [
        (["fit", a0, a1, "-o", maps / "taken.ecsv"], "already exists; use --overwrite"),
        (["fit", maps / "nope.fits", a1, "-o", maps / "x.ecsv"], "no such file"),
        (["fit", a0, a1, "-o", maps / "x.txt"], "must end in .ecsv or .fits"),
        (["fit", a0, a1, "-o", maps / "x.ecsv", "--fix", "nope=3"], "has no parameter 'nope'"),
        (["fit", a0, a1, "-o", maps / "x.ecsv", "--fix", "pa=3 km/s"], "not in units of deg"),
        (["fit", a0, a1, "-o", maps / "x.ecsv", "--network", a0], "network"),
        (["fit", str(maps / "zz*.fits"), "-o", maps / "x.ecsv"], "no file matches"),
        (["train", a0, a1, "-o", maps / "taken.ecsv"], "already exists"),
    ]
    for argv, message in cases:
        status, out, err = _run(argv, capsys)
        assert status == 1, argv
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    assert (maps / "taken.ecsv").read_text() == "keep me"
    assert not (maps / "x.ecsv").exists()
    # odd numbers of unnamed maps cannot be paired
    shutil.copy(a0, maps / "lone.fits")
    status, _, err = _run(["fit", maps / "lone.fits", "-o", maps / "x.ecsv"], capsys)
    assert status == 1 and "in pairs" in err


def test_train_then_fit_with_the_network(maps, capsys):
    net = maps / "net.pt"
    status, out, _ = _run(["train", str(maps / "*_mom0.fits"), "-o", net, "--epochs", "2",
                           "--init", "pretrained", "-q"], capsys)
    assert status == 0 and net.stat().st_size > 100_000
    status, _, _ = _run(["fit", maps / "a_mom0.fits", maps / "a_mom1.fits", "--network", net,
                         "-o", maps / "t.ecsv", "--mc-samples", "100", "-q"], capsys)
    assert status == 0
    truth = true_parameters()
    fitted = QTable.read(maps / "t.ecsv")["inclination"][0].to_value(u.deg)
    assert fitted == pytest.approx(truth["inclination"], abs=8)


def test_solo_mode_trains_on_the_maps(maps, capsys):
    status, _, _ = _run(["fit", maps / "a_mom0.fits", maps / "a_mom1.fits", "--mode", "solo",
                         "--epochs", "3", "--mc-samples", "50", "-o", maps / "solo.ecsv",
                         "-q"], capsys)
    assert status == 0 and len(QTable.read(maps / "solo.ecsv")) == 1


def test_demo_writes_the_example_and_keeps_existing_files(tmp_path, capsys):
    status, out, _ = _run(["demo", "-o", tmp_path, "--mc-samples", "300"], capsys)
    assert status == 0 and "inclination" in out
    table = QTable.read(tmp_path / "astrokin_example_fit.ecsv")
    assert table["inclination"][0].to_value(u.deg) == pytest.approx(
        true_parameters()["inclination"], abs=5)
    assert (tmp_path / "astrokin_example_fit.png").stat().st_size > 20_000
    status, _, err = _run(["demo", "-o", tmp_path], capsys)
    assert status == 1 and "--overwrite" in err


def test_command_runs_as_a_program(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "astrokin.cli"]
    help_text = subprocess.run(cmd + ["fit", "--help"], capture_output=True, text=True,
                               env=env, check=True).stdout
    for words in ("--fix NAME=VALUE", "receding", "--distance", "--scheduler", "examples:"):
        assert words in help_text
    bad = subprocess.run(cmd + ["fit", str(tmp_path / "none.fits"), str(tmp_path / "n.fits")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("astrokin fit: error: no such file")
    assert "Traceback" not in bad.stderr


def test_cube_input(tmp_path, capsys):
    pytest.importorskip("astrokin.cubes")
    cube = SHARED / "cubes" / "NGC4324_CO10.fits"
    if not cube.exists():
        pytest.skip("the shared real data are not here")
    status, _, err = _run(["fit", cube, "-o", tmp_path / "cube.ecsv", "--mc-samples", "200",
                           "-q"], capsys)
    assert status == 0, err
    table = QTable.read(tmp_path / "cube.ecsv")
    assert table["cube_file"][0] == str(cube)
    # the kinematic PA of NGC 4324 is about 65 deg (mod 180)
    assert abs((table["pa"][0].to_value(u.deg) - 65 + 90) % 180 - 90) < 15


def test_dask_workers(maps, capsys):
    survey = pytest.importorskip("astrokin.survey")
    if not hasattr(survey, "fit_catalogue"):
        pytest.skip("astrokin.survey.fit_catalogue is not there yet")
    status, _, err = _run(["fit", str(maps / "*_mom0.fits"), "--workers", "1",
                           "-o", maps / "dask.ecsv", "--mc-samples", "100", "-q"], capsys)
    assert status == 0, err
    assert len(QTable.read(maps / "dask.ecsv")) == 2


def test_pretrain_specialises_the_bundled_network(tmp_path, capsys):
    net = tmp_path / "special.pt"
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"shapes": [64], "noise_fraction": 0.0, "priors": {"pa": 0}}')
    tiny = ["batch_size=8", "supervised_steps=4", "selfsupervised_steps=0", "eval_every=2",
            "validation_size=8", "calibration_size=16", "calibration_mc_samples=10"]
    status, out, _ = _run(["pretrain", "-o", net, "--recipe", recipe, "--init", "pretrained",
                           "--set", *tiny], capsys)
    assert status == 0, out
    assert "continuing from pretrained" in out and f"saved {net}" in out
    from astrokin.fitting import NeuralKinematicFitter

    saved = NeuralKinematicFitter.load(net)
    rec = saved.metadata["recipe_pretraining"]
    assert rec["init"] == "pretrained" and rec["priors"] == {"pa": 0}
    assert rec["supervised_steps"] == 4 and len(saved.metadata["history"]) == 2
    size = net.stat().st_size
    # Errors: one line, exit status 1, and the existing network is left alone.
    for argv, message in (
            (["--set", "supervised_steps=4"], "already exists"),
            (["--overwrite", "--set", "epochs=4"], "Unknown recipe keys: ['epochs']"),
            (["--overwrite", "--set", "priors={pa: 0}"], "must be JSON"),
            (["--overwrite", "--set", "supervised_steps"], "KEY=VALUE"),
            (["--overwrite", "--set", "priors={\"colour\": 1}"], "not a parameter"),
            (["--overwrite", "--set", "shapes=[16384]"], "MAX_MAP_SIDE"),
            (["--overwrite", "--set", "calibration_size=1000000000"], "at most 50,000"),
            (["--overwrite", "--set", "noise_fraction=\"most\""], "'noise_fraction' must be")):
        status, _, err = _run(["pretrain", "-o", net, *argv], capsys)
        assert status == 1 and message in err and len(err.strip().splitlines()) == 1, err
        assert net.stat().st_size == size


def _map_hdu(data, unit, beam_arcsec=4.0):
    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float32))
    n = data.shape[-1]
    for k, (ctype, val, delt) in enumerate([("RA---SIN", 150.0, -1 / 3600),
                                            ("DEC--SIN", 2.0, 1 / 3600)], start=1):
        hdu.header.update({f"CTYPE{k}": ctype, f"CRVAL{k}": val, f"CDELT{k}": delt,
                           f"CRPIX{k}": (n + 1) / 2, f"CUNIT{k}": "deg"})
    hdu.header.update(BUNIT=unit, BMAJ=beam_arcsec / 3600, BMIN=beam_arcsec / 3600, BPA=0.0)
    return hdu


def test_mom2_maps_and_cubes_fit_the_dispersion(tmp_path, capsys):
    from astrokin.models import ExponentialArctanDisk

    from ..fitting.test_dispersion import _cube_hdu

    truth = ExponentialArctanDisk(inclination=60 * u.deg, pa=200 * u.deg, r_scale=6 * u.arcsec,
                                  r_turn=2 * u.arcsec, v_max=200 * u.km / u.s,
                                  v_sys=900 * u.km / u.s, v_disp=25 * u.km / u.s)
    maps = truth.render((64, 64), 1 * u.arcsec, beam=4 * u.arcsec, moment2=True)
    paths = []
    for k, (m, unit) in enumerate(zip(maps, ("Jy/beam.km/s", "km/s", "km/s"), strict=True)):
        paths.append(tmp_path / f"g_mom{k}.fits")
        _map_hdu(m.value, unit).writeto(paths[-1])
    status, out, err = _run(["fit", paths[0], paths[1], "--mom2", paths[2], "-o",
                             tmp_path / "m.ecsv", "--figures", tmp_path / "figs",
                             "--mc-samples", "100"], capsys)
    assert status == 0, err
    table = QTable.read(tmp_path / "m.ecsv")
    assert table["v_disp"][0].to_value(u.km / u.s) == pytest.approx(25.0, abs=0.5)
    assert "v_disp" in out and table["n_mom2"][0] > 500
    assert (tmp_path / "figs" / "g_fit.png").stat().st_size > 20_000
    status, _, err = _run(["fit", paths[0], paths[1], "--mom2", paths[2], paths[2], "-o",
                           tmp_path / "bad.ecsv"], capsys)
    assert status == 1 and "--mom2 takes one map per galaxy" in err
    # A cube: the dispersion from its second moment, unless --no-dispersion.
    _cube_hdu().writeto(tmp_path / "disc_cube.fits")
    status, _, err = _run(["fit", tmp_path / "disc_cube.fits", "-o", tmp_path / "c.ecsv",
                           "--mc-samples", "100", "-q"], capsys)
    assert status == 0, err
    cube_table = QTable.read(tmp_path / "c.ecsv")
    assert cube_table["v_disp"][0].to_value(u.km / u.s) == pytest.approx(20.0, abs=3.0)
    status, _, err = _run(["fit", tmp_path / "disc_cube.fits", "-o", tmp_path / "n.ecsv",
                           "--mc-samples", "100", "-q", "--no-dispersion"], capsys)
    assert status == 0, err
    assert "n_mom2" not in QTable.read(tmp_path / "n.ecsv").colnames


def test_fix_given_twice_is_refused(maps, capsys):
    status, _, err = _run(["fit", maps / "a_mom0.fits", maps / "a_mom1.fits", "-o",
                           maps / "twice.ecsv", "--fix", "pa=120", "--fix", "pa=130"], capsys)
    assert status == 1 and "--fix gives pa more than once" in err
    assert not (maps / "twice.ecsv").exists()
