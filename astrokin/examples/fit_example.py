"""Fit the bundled example galaxy blind: ``python -m astrokin.examples.fit_example``.

Reads the example moment maps (FITS, with WCS and beam in their headers),
fits them with the bundled pre-trained network and 1000 MC-dropout samples,
prints the fitted parameters beside the truth the maps were simulated with,
and writes the table (``astrokin_example_fit.ecsv``) and a diagnostic figure
(``astrokin_example_fit.png``, made by `astrokin.visualization.plot_fit`;
needs matplotlib) to the current directory, or to the directory given as the
first argument. ``astrokin demo`` runs the same code.
"""

import pathlib
import sys
from importlib import resources

import astropy.units as u
import numpy as np
from astropy.io import fits

from astrokin._io import atomic_path

__all__ = ["example_files", "main", "true_parameters"]


def example_files():
    """Paths of the bundled example mom0 and mom1 FITS files."""
    base = resources.files("astrokin") / "data" / "examples"
    return base / "example_mom0.fits", base / "example_mom1.fits"


def main(outdir=".", *, overwrite=True, mc_samples=1000, device="auto", seed=0, corner=False):
    """Fit the example, print and save the results.

    Parameters
    ----------
    outdir : str or path-like, optional
        Directory for ``astrokin_example_fit.ecsv`` and ``astrokin_example_fit.png``.
    overwrite : bool, optional
        Replace existing files (the default for this example script; ``astrokin
        demo`` keeps them unless given ``--overwrite``).
    mc_samples : int, optional
        Monte Carlo dropout samples.
    device : str, optional
        Torch device (``'auto'``: a GPU when there is one).
    seed : int, optional
        Random seed of the dropout masks.
    corner : bool, optional
        Also write a corner plot of the MC samples (``astrokin_example_corner.png``).

    Returns
    -------
    fitted : `~astrokin.models.ExponentialArctanDisk`
    table : `~astropy.table.QTable`
    """
    from astrokin._validation import check_bool
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    overwrite, corner = check_bool("overwrite", overwrite), check_bool("corner", corner)
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ecsv = outdir / "astrokin_example_fit.ecsv"
    png = outdir / "astrokin_example_fit.png"
    corner_png = outdir / "astrokin_example_corner.png"
    if not overwrite:
        for path in (ecsv, png, corner_png if corner else None):
            if path is not None and path.exists():
                raise FileExistsError(f"{path} already exists; use --overwrite to replace it")
    f0, f1 = example_files()
    with fits.open(f0) as h0, fits.open(f1) as h1:
        mom0_hdu, mom1_hdu = h0[0].copy(), h1[0].copy()
    fitter = NeuralKinematicFitter.pretrained(mc_samples=mc_samples, seed=seed, device=device)
    fitted = fitter(ExponentialArctanDisk(), mom0_hdu, mom1_hdu)
    table = fitter.fit_info["table"]
    truth = true_parameters()
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
    with atomic_path(ecsv, overwrite=overwrite) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    print(f"wrote {ecsv}")
    try:
        from astrokin.visualization import plot_corner, plot_fit

        fig = plot_fit(fitted, mom0_hdu, mom1_hdu, samples=fitter.fit_info["samples"],
                       name="astrokin example (blind)")
        with atomic_path(png, overwrite=overwrite) as tmp:
            fig.savefig(tmp, dpi=90)
        print(f"wrote {png}")
        if corner:
            units = {"inclination": u.deg, "pa": u.deg, "vsini": u.km / u.s,
                     "v_max": u.km / u.s, "r_turn": u.arcsec, "r_scale": u.arcsec,
                     "v_sys": u.km / u.s, "x_0": u.arcsec, "y_0": u.arcsec}
            fig = plot_corner(fitter.fit_info["samples"],
                              truths={k: v * units[k] for k, v in truth.items()})
            with atomic_path(corner_png, overwrite=overwrite) as tmp:
                fig.savefig(tmp, dpi=70)
            print(f"wrote {corner_png}")
    except ImportError as err:
        print(f"no figure: {err}")
    return fitted, table


def true_parameters():
    """The parameters the example galaxy was simulated with (deg, arcsec, km/s).

    Returns
    -------
    truth : dict
        ``inclination``, ``pa``, ``r_scale``, ``r_turn``, ``v_max``, ``v_sys``,
        ``x_0``, ``y_0`` and ``vsini``, as plain numbers.
    """
    header = fits.getheader(example_files()[1])
    truth = {"inclination": header["TRUE_INC"], "pa": header["TRUE_PA"],
             "r_scale": header["TRUE_RSC"], "r_turn": header["TRUE_RTU"],
             "v_max": header["TRUE_VMX"], "v_sys": header["TRUE_VSY"],
             "x_0": header["TRUE_X0"], "y_0": header["TRUE_Y0"]}
    truth["vsini"] = truth["v_max"] * np.sin(np.deg2rad(truth["inclination"]))
    return truth


if __name__ == "__main__":
    main(*sys.argv[1:2])
