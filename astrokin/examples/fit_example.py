"""Fit the bundled example galaxy blind: ``python -m astrokin.examples.fit_example``.

Reads the example moment maps (FITS, with WCS and beam in their headers),
fits them with the bundled pre-trained network and 1000 MC-dropout samples,
prints the fitted parameters beside the truth the maps were simulated with,
and writes the table (``astrokin_example_fit.ecsv``) and a diagnostic figure
(``astrokin_example_fit.png``; needs matplotlib) to the current directory, or
to the directory given as the first argument.
"""

import pathlib
import sys
from importlib import resources

import astropy.units as u
import numpy as np
from astropy.io import fits

__all__ = ["example_files", "main"]


def example_files():
    """Paths of the bundled example mom0 and mom1 FITS files."""
    base = resources.files("astrokin") / "data" / "examples"
    return base / "example_mom0.fits", base / "example_mom1.fits"


def main(outdir="."):
    """Fit the example, print and save the results."""
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    f0, f1 = example_files()
    with fits.open(f0) as h0, fits.open(f1) as h1:
        mom0_hdu, mom1_hdu = h0[0].copy(), h1[0].copy()
    fitter = NeuralKinematicFitter.pretrained(mc_samples=1000, seed=0)
    fitted = fitter(ExponentialArctanDisk(), mom0_hdu, mom1_hdu)
    table = fitter.fit_info["table"]
    header = mom1_hdu.header
    truth = {"inclination": header["TRUE_INC"], "pa": header["TRUE_PA"],
             "r_scale": header["TRUE_RSC"], "r_turn": header["TRUE_RTU"],
             "v_max": header["TRUE_VMX"], "v_sys": header["TRUE_VSY"],
             "x_0": header["TRUE_X0"], "y_0": header["TRUE_Y0"]}
    truth["vsini"] = truth["v_max"] * np.sin(np.deg2rad(truth["inclination"]))
    print(f"Blind fit of {f1.name} ({fitter.fit_info['timings']['total'] * 1e3:.0f} ms, "
          f"{fitter.fit_info['mc_samples']} MC samples, device {fitter.fit_info['device']})")
    print(f"{'parameter':12s} {'fitted':>10s} {'1 sigma':>9s} {'true':>9s}  unit")
    for name in ("inclination", "pa", "vsini", "v_max", "r_turn", "r_scale", "v_sys",
                 "x_0", "y_0"):
        value, std = table[name][0], table[f"{name}_std"][0]
        print(f"{name:12s} {value.value:10.2f} {std.value:9.2f} {truth[name]:9.2f}  {value.unit}")
    center = table["center"][0]
    print(f"kinematic centre: {center.to_string('hmsdms', precision=2)} "
          f"(pixel {table['x_center_pix'][0]:.2f}, {table['y_center_pix'][0]:.2f})")
    ecsv = outdir / "astrokin_example_fit.ecsv"
    table.write(ecsv, overwrite=True)
    print(f"wrote {ecsv}")
    try:
        png = _figure(fitter, fitted, mom0_hdu, mom1_hdu, outdir / "astrokin_example_fit.png")
        print(f"wrote {png}")
    except ImportError:
        print("matplotlib is not installed: no figure (pip install astrokin[plot])")
    return fitted, table


def _figure(fitter, fitted, mom0_hdu, mom1_hdu, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from astrokin.beams import to_beam

    beam = to_beam((mom0_hdu.header["BMAJ"] * u.deg, mom0_hdu.header["BMIN"] * u.deg,
                    mom0_hdu.header["BPA"] * u.deg))
    ps = abs(mom0_hdu.header["CDELT2"]) * 3600 * u.arcsec
    shape = mom0_hdu.data.shape
    mom0, mom1 = fitted.render(shape, ps, beam=beam)
    data0, data1 = mom0_hdu.data, mom1_hdu.data
    scale = np.nansum(mom0.value * data0) / np.nansum(mom0.value**2)
    model0 = scale * mom0.value
    model1 = np.where(np.isfinite(data1), mom1.value, np.nan)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5), layout="constrained")
    vlim = np.nanpercentile(np.abs(data1 - fitted.v_sys.value), 99)
    panels = [
        (axes[0, 0], data0, "data mom0", "magma", None),
        (axes[0, 1], model0, "model mom0", "magma", None),
        (axes[0, 2], data0 - model0, "residual mom0", "RdBu_r", "sym0"),
        (axes[1, 0], data1, "data mom1 (km/s)", "RdBu_r", "vel"),
        (axes[1, 1], model1, "model mom1 (km/s)", "RdBu_r", "vel"),
        (axes[1, 2], data1 - model1, "residual mom1 (km/s)", "RdBu_r", "sym1"),
    ]
    for ax, img, title, cmap, kind in panels:
        kw = {}
        if kind == "vel":
            kw = dict(vmin=fitted.v_sys.value - vlim, vmax=fitted.v_sys.value + vlim)
        elif kind is not None:
            lim = np.nanpercentile(np.abs(img), 95)
            kw = dict(vmin=-lim, vmax=lim)
        im = ax.imshow(img, origin="lower", cmap=cmap, **kw)
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(title)
        ax.set_xlabel("column (East to the left)")
        ax.set_ylabel("row (North up)")
    r = np.linspace(0, 0.5 * shape[1] * ps.value, 200) * u.arcsec
    samples = fitter.fit_info["samples"]
    curves = (2 / np.pi) * samples["v_max"].value[:, None] * np.arctan(
        r.value[None, :] / samples["r_turn"].value[:, None])
    lo, hi = np.percentile(curves, [15.87, 84.13], axis=0)
    ax = axes[0, 3]
    ax.fill_between(r.value, lo, hi, color="0.8", label="MC 1$\\sigma$ (uncalibrated)")
    ax.plot(r.value, fitted.rotation_curve(r).value, "k", label="fit")
    ax.set_xlabel("radius (arcsec)")
    ax.set_ylabel("rotation speed (km/s)")
    ax.set_title("rotation curve")
    ax.legend()
    ax = axes[1, 3]
    ax.plot(r.value, fitted.intensity_profile(r).value, "k")
    ax.set_xlabel("radius (arcsec)")
    ax.set_ylabel("relative surface brightness")
    ax.set_title("intensity profile")
    fig.suptitle(f"astrokin blind fit: i = {fitted.inclination.value:.1f} deg, "
                 f"PA = {fitted.pa.value:.1f} deg, V sin i = "
                 f"{fitter.fit_info['table']['vsini'][0].value:.0f} km/s")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main(*sys.argv[1:2])
