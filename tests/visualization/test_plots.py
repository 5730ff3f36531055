"""The diagnostic figure and the corner plot, checked on the numbers they draw."""

import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits

pytest.importorskip("matplotlib")

from astrokin.models import ExponentialArctanDisk  # noqa: E402
from astrokin.visualization import plot_corner, plot_fit  # noqa: E402
from astrokin.visualization.diagnostic import rotation_curve_band  # noqa: E402

TRUTH = dict(inclination=60 * u.deg, pa=120 * u.deg, r_scale=4 * u.arcsec, r_turn=2 * u.arcsec,
             v_max=200 * u.km / u.s, v_sys=1200 * u.km / u.s, x_0=1.5 * u.arcsec,
             y_0=-1 * u.arcsec)
PS = 0.5 * u.arcsec
BEAM = (2.0 * u.arcsec, 1.5 * u.arcsec, 30 * u.deg)


def _panels(fig):
    """Map panels by title: the arrays they show."""
    return {ax.get_title(): np.asarray(ax.images[0].get_array(), dtype=float)
            for ax in fig.axes if ax.images and ax.get_title()}


def _hdus(mom0, mom1, *, flip=False, beam=BEAM):
    """FITS HDUs of maps in the standard orientation, optionally stored mirrored (CDELT1 > 0)."""
    ny, nx = mom0.shape
    header = fits.Header()
    header.update(CTYPE1="RA---SIN", CTYPE2="DEC--SIN", CRVAL1=150.0, CRVAL2=2.0,
                  CRPIX1=(nx + 1) / 2, CRPIX2=(ny + 1) / 2, CUNIT1="deg", CUNIT2="deg",
                  CDELT1=(1 if flip else -1) * PS.to_value(u.deg), CDELT2=PS.to_value(u.deg),
                  BMAJ=beam[0].to_value(u.deg), BMIN=beam[1].to_value(u.deg),
                  BPA=beam[2].to_value(u.deg))
    d0, d1 = mom0.value, mom1.to_value(u.km / u.s)
    if flip:
        d0, d1 = d0[:, ::-1], d1[:, ::-1]
    h1 = header.copy()
    h1["BUNIT"] = "km/s"
    return fits.PrimaryHDU(d0.copy(), header), fits.PrimaryHDU(d1.copy(), h1)


@pytest.fixture(scope="module")
def truth_maps():
    truth = ExponentialArctanDisk(**TRUTH)
    mom0, mom1 = truth.render((48, 56), PS, beam=BEAM)
    return truth, mom0, mom1


def test_true_model_leaves_no_residual(truth_maps):
    # Plotting the true model against its own maps: residuals vanish, the model
    # panels reproduce the data, and the figure has its 8 panels.
    truth, mom0, mom1 = truth_maps
    fig = plot_fit(truth, mom0, mom1, pixel_scale=PS, beam=BEAM)
    panels = _panels(fig)
    assert {"data mom0", "model mom0", "data mom1", "model mom1"} <= set(panels)
    peak = np.nanmax(panels["data mom0"])
    assert np.nanmax(np.abs(panels["residual mom0 (data - model)"])) < 1e-6 * peak
    assert np.nanmax(np.abs(panels["residual mom1 (data - model)"])) < 1e-6
    assert "i = 60.0 deg" in fig.get_suptitle()
    titles = {ax.get_title() for ax in fig.axes}
    assert {"major-axis intensity profile", "rotation curve"} <= titles


def test_mirrored_fits_map_is_drawn_in_the_fitters_frame(truth_maps):
    # A map stored with East along +column: the fitter reports x_0 along the
    # input's +column (here -x_0 of the standard frame) and the sky PA. Drawing
    # that model must match the data, shown North up, East left.
    truth, mom0, mom1 = truth_maps
    h0, h1 = _hdus(mom0, mom1, flip=True)
    as_fitted = truth.copy()
    as_fitted.x_0 = -truth.x_0.quantity
    fig = plot_fit(as_fitted, h0, h1)
    panels = _panels(fig)
    assert np.nanmax(np.abs(panels["residual mom1 (data - model)"])) < 1e-6
    # shown in the standard orientation: the same array as the unflipped map
    assert np.allclose(panels["data mom0"], mom0.value)


def test_fit_of_a_mirrored_map_leaves_the_same_residuals(truth_maps):
    from astrokin.fitting import NeuralKinematicFitter

    truth, mom0, mom1 = truth_maps
    fitter = NeuralKinematicFitter.pretrained(mc_samples=100, seed=0, progress=False)
    residuals = []
    for flip in (False, True):
        h0, h1 = _hdus(mom0, mom1, flip=flip)
        fitted = fitter(ExponentialArctanDisk(), h0, h1)
        residuals.append(_panels(plot_fit(fitted, h0, h1))["residual mom1 (data - model)"])
    assert np.nanmedian(np.abs(residuals[0])) < 6  # km/s, on a 200 km/s disc
    assert np.allclose(residuals[0], residuals[1], atol=1e-3, equal_nan=True)


def test_fitted_example_and_distance_axes(truth_maps):
    from astrokin.fitting import NeuralKinematicFitter

    truth, mom0, mom1 = truth_maps
    h0, h1 = _hdus(mom0, mom1)
    fitter = NeuralKinematicFitter.pretrained(mc_samples=300, seed=0, progress=False)
    fitted = fitter(ExponentialArctanDisk(), h0, h1)
    fig = plot_fit(fitted, h0, h1, samples=fitter.fit_info["samples"], distance=10 * u.Mpc,
                   name="NGC 0000")
    panels = _panels(fig)
    # a good blind fit: mom1 residuals within a few per cent of the velocity range
    res = panels["residual mom1 (data - model)"]
    assert np.nanmedian(np.abs(res)) < 0.03 * 200
    assert fig.get_suptitle().startswith("NGC 0000: ExponentialArctanDisk fit")
    ax = next(a for a in fig.axes if a.get_title() == "data mom0")
    # 56 columns of 0.5" at 10 Mpc = 28" = 1.357 kpc, East (+) to the left
    left, right = ax.get_xlim()
    assert left == pytest.approx(14 * 10e3 / 206264.806, rel=1e-3) and right == -left
    assert "kpc" in ax.get_xlabel()
    rc = next(a for a in fig.axes if a.get_title() == "rotation curve")
    assert len(rc.collections) >= 1  # the MC band


def test_rotation_curve_band_has_the_sample_spread():
    rng = np.random.default_rng(3)
    samples = {"v_max": rng.normal(200, 10, 4000) * u.km / u.s,
               "r_turn": np.full(4000, 2.0) * u.arcsec}
    band = rotation_curve_band(ExponentialArctanDisk(), samples, [2, 1e6] * u.arcsec)
    half = ((band["v_rot_hi"] - band["v_rot_lo"]) / 2).to_value(u.km / u.s)
    # V(r_turn) = v_max / 2: the band is half as wide there as at infinity
    assert half[1] == pytest.approx(10, rel=0.05)
    assert half[0] == pytest.approx(5, rel=0.05)
    assert band["v_rot"][1].to_value(u.km / u.s) == pytest.approx(200, abs=1)


def test_corner_plot_unwraps_the_position_angle():
    pytest.importorskip("corner")
    rng = np.random.default_rng(0)
    samples = {"inclination": rng.normal(60, 1, 2000) * u.deg,
               "pa": np.remainder(rng.normal(0, 2, 2000), 360) * u.deg,
               "amplitude": np.ones(2000)}
    fig = plot_corner(samples, truths={"pa": 359 * u.deg})
    assert len(fig.axes) == 4  # amplitude does not vary: left out
    lo, hi = fig.axes[3].get_xlim()  # the PA histogram
    assert hi - lo < 30 and lo < 0 < hi  # one peak around 0, not 0 and 360
    with pytest.raises(ValueError, match="No samples of"):
        plot_corner(samples, names=["r_turn"])


def test_mask_blanks_the_data(truth_maps):
    truth, mom0, mom1 = truth_maps
    mask = np.zeros(mom0.shape, bool)
    mask[10:30, 10:40] = True
    fig = plot_fit(truth, mom0, mom1, pixel_scale=PS, beam=BEAM, mask=mask)
    data = _panels(fig)["data mom0"]
    assert np.isfinite(data).sum() == mask.sum()
    with pytest.raises(ValueError, match="mask has shape"):
        plot_fit(truth, mom0, mom1, pixel_scale=PS, mask=mask[:5])


def test_missing_matplotlib_names_the_extra():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from astrokin.visualization import plot_corner\n"
            "try:\n    plot_corner({'a': [1.0, 2.0]})\n"
            "except ImportError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert 'pip install "astrokin[plot]"' in out


def test_mom2_row_shows_the_second_moment_and_the_dispersion():
    truth = ExponentialArctanDisk(**TRUTH, v_disp=15 * u.km / u.s)
    mom0, mom1, mom2 = truth.render((48, 56), PS, beam=BEAM, moment2=True)
    fig = plot_fit(truth, mom0, mom1, mom2=mom2, pixel_scale=PS, beam=BEAM)
    panels = _panels(fig)
    data2, model2 = panels["data mom2"], panels["model mom2"]
    # Where mom0 is above 1% of its peak (the pixels a fit uses) the true model
    # leaves no residual, and the line is never narrower than the dispersion.
    assert np.nanmax(np.abs(panels["residual mom2 (data - model)"])) < 1e-6
    assert np.nanmin(data2) > 14.9 and np.isfinite(model2).sum() > 500
    disp = next(ax for ax in fig.axes if ax.get_title() == "velocity dispersion")
    intrinsic = next(line for line in disp.get_lines()
                     if line.get_label() == "intrinsic dispersion (fit)")
    assert np.allclose(intrinsic.get_ydata(), 15.0)
    assert len(fig.axes) >= 12
