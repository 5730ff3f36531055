"""``astrokin fit``: fit moment maps, cubes or a catalogue and write a table (and figures)."""

import argparse
import inspect
import os
import pathlib
import sys
import time

from astropy import units as u

from .options import add_common_options, add_map_options, make_fitter_model, parse_quantity

__all__ = ["add_parser", "run"]

_HELP = "fit moment maps (or cubes) of one or many galaxies and write a table"
_DESCRIPTION = """\
Fit a rotating-disc model to the moment-0 (integrated intensity) and moment-1
(velocity) maps of one or many galaxies, with the neural network of Dawson et
al. (2021). By default the network bundled with astrokin fits the maps 'blind'
(no training: milliseconds per galaxy) and 1000 Monte Carlo dropout samples
give each parameter's uncertainty.

Inputs are FITS files: a MOM0 and a MOM1 map per galaxy (their WCS gives the
pixel scale and orientation, BMAJ/BMIN/BPA the beam), or a data cube (moment
maps are made from it), or a catalogue table of such files. Position angles
are those of the receding half of the major axis, East of North; inclination
0 is face-on. The table has one row per galaxy: every parameter with its
1-sigma error (<name>_std), V sin i, and the kinematic centre in pixels and on
the sky.
"""
_EPILOG = """\
examples:
  astrokin fit NGC4697_mom0.fits NGC4697_mom1.fits --figures plots
  astrokin fit NGC4697_mom0.fits NGC4697_mom1.fits --fix pa=66 --distance 11.4
  astrokin fit 'maps/*_mom0.fits' -o survey.ecsv          (each *_mom1.fits found by name)
  astrokin fit --catalogue galaxies.csv -o survey.fits      (columns mom0, mom1[, name, distance])
  astrokin fit cube.fits --rest-value 115.271 --figures .  (a data cube; v_disp from mom2)
  astrokin fit a_mom0.fits a_mom1.fits --mom2 a_mom2.fits   (the dispersion too)
  astrokin fit a_mom0.fits a_mom1.fits --mode solo --epochs 300   (train on these maps)
"""


def add_parser(sub):
    """Add the ``fit`` command to the sub-command parsers."""
    p = sub.add_parser("fit", help=_HELP, description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "inputs", nargs="*", metavar="FILE",
        help="FITS files: MOM0 MOM1 pairs, data cubes, or quoted patterns ('maps/*.fits')",
    )
    p.add_argument("--catalogue", "--catalog", metavar="TABLE",
                   help="table of galaxies with columns mom0 and mom1 (or cube), optionally "
                        "name and distance (Mpc); paths relative to the table")
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", default="astrokin_fit.ecsv", metavar="TABLE",
                     help="the results table, .ecsv or .fits (default: astrokin_fit.ecsv)")
    out.add_argument("--figures", metavar="DIR",
                     help="write a diagnostic figure per galaxy (NAME_fit.png) to DIR; "
                          "needs matplotlib")
    out.add_argument("--corner", action="store_true",
                     help="with --figures, also a corner plot of the MC samples "
                          "(NAME_corner.png); needs the corner package")
    out.add_argument("--overwrite", action="store_true",
                     help="replace existing output files (by default they are kept and the "
                          "command stops)")
    fit = p.add_argument_group("fitting")
    fit.add_argument("--mode", choices=("blind", "solo"), default="blind",
                     help="blind: a trained network fits at once (default); solo: train a "
                          "network on these maps first, as in the paper (seconds per galaxy; "
                          "fine-tunes --network when given)")
    fit.add_argument("--network", metavar="FILE",
                     help="a network saved by 'astrokin train' (default: the bundled one)")
    fit.add_argument("--epochs", type=int, default=300,
                     help="training epochs in solo mode (default: 300, as in the paper)")
    fit.add_argument("--learning-rate", type=float, default=None,
                     help="Adam learning rate in solo mode (default: 1e-4, or 1e-3 from scratch)")
    fit.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True,
                     help="refine each galaxy's fit to its own maps (the default); "
                          "--no-refine: the network's prediction alone, 10-50 times faster, "
                          "with less accurate values and errors")
    fit.add_argument("--mom2", nargs="+", metavar="FILE",
                     help="second-moment (velocity dispersion) maps, one per galaxy of map "
                          "pairs, to fit the model's dispersion v_disp to")
    fit.add_argument("--dispersion", action=argparse.BooleanOptionalAction, default=True,
                     help="fit the velocity dispersion to the second moment of cubes (and "
                          "--mom2 maps); --no-dispersion leaves it out (default: fit it)")
    fit.add_argument("--mc-samples", type=int, default=1000,
                     help="Monte Carlo dropout samples per galaxy (default: 1000)")
    fit.add_argument("--distance", metavar="DIST",
                     type=lambda s: parse_quantity(s, u.Mpc, "--distance"),
                     help="distance to the galaxy (Mpc, or e.g. '16.5 Mpc'): lengths also in "
                          "kpc, and figures in kpc")
    fit.add_argument("--batch-size", type=int, default=256,
                     help="galaxies per blind forward pass (default: 256)")
    add_map_options(p)
    add_common_options(p)
    survey = p.add_argument_group("survey scale (Dask)")
    survey.add_argument("--scheduler", metavar="ADDRESS",
                        help="fit on a running Dask cluster, e.g. tcp://10.0.0.1:8786")
    survey.add_argument("--workers", type=int, metavar="N",
                        help="fit on N local Dask worker processes")
    p.set_defaults(run=run)
    return p


def _table_format(path):
    name = str(path).lower()
    if name.endswith(".ecsv"):
        return "ascii.ecsv"
    if name.endswith((".fits", ".fit", ".fits.gz")):
        return "fits"
    raise ValueError(f"--output {path}: the table must end in .ecsv or .fits")


def _check_new(paths, overwrite):
    if overwrite:
        return
    for path in paths:
        if os.path.lexists(path):
            raise FileExistsError(f"{path} already exists; use --overwrite to replace it")


def _progress(total, quiet, desc):
    if quiet or total < 2:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="galaxy", file=sys.stderr)


def make_fitter(args):
    """The `~astrokin.fitting.NeuralKinematicFitter` the options ask for."""
    from astrokin.fitting import NeuralKinematicFitter

    common = {"mc_samples": args.mc_samples, "seed": args.seed, "device": args.device,
              "progress": not args.quiet, "refine": getattr(args, "refine", True)}
    if args.mc_samples < 1:
        raise ValueError("--mc-samples must be at least 1")
    if args.network:
        if not os.path.exists(args.network):
            raise FileNotFoundError(f"no such network file: {args.network}")
        fitter = NeuralKinematicFitter.load(args.network, **common)
    elif args.mode == "blind":
        # Without refinement a ring disc needs a network of its own, the ring one.
        from astrokin import models

        cls = getattr(models, args.model or "", None)
        rings = isinstance(cls, type) and issubclass(cls, models.TiltedRingDisk)
        fitter = NeuralKinematicFitter.pretrained(
            name="tilted_ring" if rings and not common["refine"] else None, **common)
    else:
        lr = 1e-3 if args.learning_rate is None else args.learning_rate
        return NeuralKinematicFitter(mode="solo", epochs=args.epochs, learning_rate=lr, **common)
    if args.mode == "solo":  # fine-tune the loaded network
        fitter.mode = "solo"
        fitter.warm_start = True
        fitter.epochs = args.epochs
        if args.learning_rate is not None:
            fitter.learning_rate = args.learning_rate
    return fitter


def _accepts(func, name):
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _masks(path, hdus):
    """Boolean masks (True: fit) of the region file ``path`` on each mom0 HDU's grid."""
    from astropy.wcs import WCS

    from astrokin.masks import pixel_mask

    out = []
    for hdu in hdus:
        wcs = WCS(hdu.header).celestial if hdu.header.get("NAXIS", 0) >= 2 else None
        if wcs is not None and not wcs.has_celestial:
            wcs = None
        out.append(pixel_mask(path, hdu.data.shape, wcs))
    return out


def run(args):
    """Run ``astrokin fit``; returns the exit status."""
    from astropy.table import QTable, vstack

    from .inputs import collect_galaxies

    t_start = time.perf_counter()
    fmt = _table_format(args.output)
    if args.corner and not args.figures:
        raise ValueError("--corner needs --figures DIR (where to write the plots)")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.mask and not os.path.exists(args.mask):
        raise FileNotFoundError(f"no such region file: {args.mask}")
    if args.network and not os.path.exists(args.network):
        raise FileNotFoundError(f"no such network file: {args.network}")
    galaxies = collect_galaxies(args.inputs, args.catalogue)
    _check_new([args.output], args.overwrite)
    figure_paths = {}
    if args.figures:
        _check_plotting(args.corner)
        figdir = pathlib.Path(args.figures)
        figdir.mkdir(parents=True, exist_ok=True)
        for g in galaxies:
            figure_paths[g.name] = (figdir / f"{g.name}_fit.png",
                                    figdir / f"{g.name}_corner.png" if args.corner else None)
        _check_new([p for pair in figure_paths.values() for p in pair if p], args.overwrite)
    if args.distance is not None:
        for g in galaxies:
            g.distance = g.distance if g.distance is not None else args.distance
    if args.scheduler or args.workers:
        return _run_survey(args, galaxies)

    fitter = make_fitter(args)
    default_class = fitter.layout.model_class if fitter.layout is not None else None
    model = make_fitter_model(args.model, args.fix, default_class, args.rings)
    from astrokin.models import TiltedRingDisk

    rings_path = _rings_path(args.output) if isinstance(model, TiltedRingDisk) else None
    if rings_path is not None:
        _check_new([rings_path], args.overwrite)

    # Read the maps.
    bar = _progress(len(galaxies), args.quiet, "reading")
    if args.mom2:
        if len(args.mom2) != len(galaxies) or any(g.cube_file for g in galaxies):
            raise ValueError(f"--mom2 takes one map per galaxy of moment maps ({len(galaxies)} "
                             f"here), not {len(args.mom2)}; cubes give their own.")
        for g, path in zip(galaxies, args.mom2, strict=True):
            g.mom2_file = path
    second = args.dispersion and bool(model.dispersion_parameters)
    maps0, maps1, maps2, errors, windows = [], [], [], [], []
    for g in galaxies:
        h0, h1, *rest = g.load(rest_value=args.rest_value, errors=fitter.refine or second,
                               moment2=second, window=True)
        maps0.append(h0)
        maps1.append(h1)
        maps2.append(rest.pop(0) if second else None)
        windows.append(tuple(rest[-2:]) if second and g.cube_file else None)
        rest = rest[:-2] if second and g.cube_file else rest
        errors.append(rest or None)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    masks = _masks(args.mask, maps0) if args.mask else None
    use_fitter_mask = masks is not None and _accepts(fitter.__call__, "mask")
    if masks is not None and not use_fitter_mask:
        import numpy as np

        for h0, h1, m in zip(maps0, maps1, masks, strict=True):
            h0.data = np.where(m, h0.data, np.nan)
            h1.data = np.where(m, h1.data, np.nan)

    # Fit, in chunks in blind mode (one training run over all maps in solo mode).
    n = len(galaxies)
    step = n if args.mode == "solo" else args.batch_size
    bar = _progress(n, args.quiet, "fitting")
    tables, ring_tables = [], []
    for start in range(0, n, step):
        stop = min(start + step, n)
        kwargs = {"pixel_scale": args.pixel_scale, "beam": args.beam}
        if args.mode == "blind":
            kwargs["first_index"] = start
        if use_fitter_mask:
            kwargs["mask"] = masks[start:stop]
        distances = [g.distance for g in galaxies[start:stop]]
        if all(d is not None for d in distances) and _accepts(fitter.__call__, "distance"):
            kwargs["distance"] = (distances[0] if len(set(map(str, distances))) == 1
                                  else u.Quantity(distances))
        sub0, sub1 = maps0[start:stop], maps1[start:stop]
        one = (lambda a: a[0]) if len(sub0) == 1 else (lambda a: a)  # noqa: E731
        if fitter.refine and all(e is not None for e in errors[start:stop]):
            # Cubes: their moments' noise maps weigh each pixel in refinement.
            kwargs["mom0_err"] = one([e[0] for e in errors[start:stop]])
            kwargs["mom1_err"] = one([e[1] for e in errors[start:stop]])
        if all(m is not None for m in maps2[start:stop]):
            kwargs["mom2"] = one(maps2[start:stop])
            if all(e is not None and len(e) > 2 for e in errors[start:stop]):
                kwargs["mom2_err"] = one([e[2] for e in errors[start:stop]])
            if all(w is not None for w in windows[start:stop]):
                kwargs["mom2_window"] = (one([w[0] for w in windows[start:stop]]),
                                         one([w[1] for w in windows[start:stop]]))
        fitted = fitter(model, sub0 if len(sub0) > 1 else sub0[0],
                        sub1 if len(sub1) > 1 else sub1[0], **kwargs)
        table = QTable(fitter.fit_info["table"], copy=True)
        table["galaxy"] = list(range(start, stop))
        tables.append(table)
        if rings_path is not None:
            rings = QTable(fitter.fit_info["rings"], copy=True)
            local = rings["galaxy"] if "galaxy" in rings.colnames else [0] * len(rings)
            rings["galaxy"] = [start + int(g) for g in local]
            rings.add_column([galaxies[i].name for i in rings["galaxy"]], name="name", index=0)
            ring_tables.append(rings)
        if args.figures:
            _figures(galaxies, start, stop, fitted, fitter, sub0, sub1, masks, figure_paths,
                     args.overwrite, maps2=maps2[start:stop] if "mom2" in kwargs else None)
        if bar is not None:
            bar.update(stop - start)
    if bar is not None:
        bar.close()
    table = tables[0] if len(tables) == 1 else vstack(tables)
    _add_columns(table, galaxies)
    # Short upper-case keys: they become FITS header cards in a .fits table.
    table.meta.update({"FITMODE": args.mode, "MCSAMPLS": args.mc_samples, "SEED": args.seed})
    from astrokin._io import atomic_path

    with atomic_path(args.output, overwrite=args.overwrite) as tmp:
        table.write(tmp, format=fmt, overwrite=True)
    if rings_path is not None:
        rings = ring_tables[0] if len(ring_tables) == 1 else vstack(ring_tables)
        with atomic_path(rings_path, overwrite=args.overwrite) as tmp:
            rings.write(tmp, format=fmt, overwrite=True)
    if not args.quiet:
        _summary(table, n, time.perf_counter() - t_start, args.output, figure_paths)
        if rings_path is not None:
            print(f"wrote {rings_path} (the rotation curve, ring by ring)")
    return 0


def _rings_path(output):
    """``survey.ecsv`` -> ``survey_rings.ecsv``: where the ring-by-ring table goes."""
    root, ext = os.path.splitext(str(output))
    return f"{root}_rings{ext}"


def _check_plotting(corner):
    from astrokin._optional import import_corner, new_figure

    new_figure()  # raises ImportError naming astrokin[plot] when matplotlib is missing
    if corner:
        import_corner()


def _add_columns(table, galaxies):
    names = [g.name for g in galaxies]
    table.add_column(names, name="name", index=0)
    if any(g.cube_file for g in galaxies):
        table.add_column([g.cube_file for g in galaxies], name="cube_file", index=1)
    if any(g.mom0_file for g in galaxies):
        table.add_column([g.mom0_file for g in galaxies], name="mom0_file", index=1)
        table.add_column([g.mom1_file for g in galaxies], name="mom1_file", index=2)
    if "distance" not in table.colnames and all(g.distance is not None for g in galaxies):
        table["distance"] = u.Quantity([g.distance for g in galaxies]).to(u.Mpc)


def _figures(galaxies, start, stop, fitted, fitter, maps0, maps1, masks, paths, overwrite,
             maps2=None):
    from astrokin._io import atomic_path
    from astrokin.visualization import plot_corner, plot_fit

    samples = fitter.fit_info.get("samples")
    for j, g in enumerate(galaxies[start:stop]):
        fit_png, corner_png = paths[g.name]
        fig = plot_fit(fitted, maps0[j], maps1[j], samples=samples, galaxy=j,
                       mask=None if masks is None else masks[start + j], distance=g.distance,
                       name=g.name, mom2=None if maps2 is None else maps2[j])
        with atomic_path(fit_png, overwrite=overwrite) as tmp:
            fig.savefig(tmp, dpi=90)
        if corner_png is not None and samples is not None:
            fig = plot_corner(samples, galaxy=j)
            with atomic_path(corner_png, overwrite=overwrite) as tmp:
                fig.savefig(tmp, dpi=70)


def _summary(table, n, seconds, output, figure_paths):
    if n == 1:
        row = table[0]
        print(f"{row['name']}: fitted in {seconds:.1f} s")
        print(f"  {'parameter':12s} {'value':>11s} {'1 sigma':>9s}  unit")
        for name in ("inclination", "pa", "vsini", "v_max", "r_turn", "r_scale", "v_sys",
                     "x_0", "y_0", "r_ring", "ring_width", "v_c", "beta", "gamma", "r_outer",
                     "v_disp"):
            if name == "v_disp" and "n_mom2" not in table.colnames:
                continue  # not fitted (no mom2)
            if name in table.colnames and f"{name}_std" in table.colnames:
                value, std = row[name], row[f"{name}_std"]
                unit = getattr(value, "unit", "")
                print(f"  {name:12s} {getattr(value, 'value', value):11.2f} "
                      f"{getattr(std, 'value', std):9.2f}  {unit}")
        if "center" in table.colnames:
            print(f"  kinematic centre {row['center'].to_string('hmsdms', precision=2)}")
        if "best_model" in table.colnames:
            print(f"  best model (BIC): {row['best_model']} "
                  f"(BIC {row['bic']:.1f}, start model {row['start_bic']:.1f})")
    else:
        print(f"fitted {n} galaxies in {seconds:.1f} s")
    print(f"wrote {output}")
    for pair in figure_paths.values():
        for path in pair:
            if path is not None and os.path.exists(path):
                print(f"wrote {path}")


def _run_survey(args, galaxies):
    """Hand the galaxies to `astrokin.survey.fit_catalogue` (Dask)."""
    try:
        from astrokin.survey import fit_catalogue
    except ImportError as err:
        raise ImportError(f"--scheduler/--workers need astrokin.survey and dask ({err})") from err
    from astropy.table import Table

    if any(g.cube_file for g in galaxies):
        raise ValueError("--scheduler/--workers fit moment maps; make maps of the cubes first")
    if args.mode != "blind" or args.figures or args.mask:
        raise ValueError("--scheduler/--workers fit blind, without --figures or --mask")
    catalogue = Table({"name": [g.name for g in galaxies],
                       "mom0": [g.mom0_file for g in galaxies],
                       "mom1": [g.mom1_file for g in galaxies]})
    model = make_fitter_model(args.model, args.fix, n_rings=args.rings)
    options = {"model": model, "network": args.network, "output": args.output,
               "overwrite": args.overwrite, "seed": args.seed, "mc_samples": args.mc_samples,
               "batch_size": args.batch_size, "refine": args.refine}
    params = inspect.signature(fit_catalogue).parameters
    if args.scheduler:
        options["scheduler"] = args.scheduler
    else:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                               processes=True, dashboard_address=None)
        options["client"] = Client(cluster)
    options = {k: v for k, v in options.items() if k in params}
    try:
        fit_catalogue(catalogue, **options)
    finally:
        client = options.get("client")
        if client is not None:
            client.close()
            client.cluster.close()
    if not args.quiet:
        print(f"fitted {len(galaxies)} galaxies; wrote {args.output}")
    return 0
