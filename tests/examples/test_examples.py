"""The runnable examples, the README's first command included."""

import astropy.units as u
import numpy as np
import pytest
from astropy.table import QTable

pytest.importorskip("matplotlib")


def test_fit_example_recovers_the_simulated_galaxy(tmp_path, capsys):
    # The README's main job: a blind fit of a KinMS galaxy (noise, clipped
    # masks) from FITS. Tolerances are ~3x the errors measured on the hard
    # benchmark set, so a broken network, reader or convention fails.
    from astropy.io import fits

    from astrokin.examples import fit_example

    fitted, table = fit_example.main(tmp_path)
    header = fits.getheader(fit_example.example_files()[1])
    assert fitted.inclination.value == pytest.approx(header["TRUE_INC"], abs=6)
    assert abs((fitted.pa.value - header["TRUE_PA"] + 180) % 360 - 180) < 6
    vsini = header["TRUE_VMX"] * np.sin(np.deg2rad(header["TRUE_INC"]))
    assert table["vsini"][0].to_value(u.km / u.s) == pytest.approx(vsini, rel=0.15)
    assert fitted.v_sys.value == pytest.approx(header["TRUE_VSY"], abs=10)
    saved = QTable.read(tmp_path / "astrokin_example_fit.ecsv")
    assert saved["inclination"][0] == table["inclination"][0]
    assert (tmp_path / "astrokin_example_fit.png").stat().st_size > 10_000
    assert "inclination" in capsys.readouterr().out


def test_render_example_writes_a_figure(tmp_path):
    from astrokin.examples import render_example

    path = render_example.main(str(tmp_path / "disc.png"))
    assert (tmp_path / "disc.png").stat().st_size > 10_000 and path.endswith("disc.png")
