"""Peak memory: one very large map, and many galaxies in one fitter call.

**One large map** (``--sides``). Renders an exponential disc (beam 3 px)
filling a 500 x 500 map, and the same galaxy on finer grids (default 2000,
4000 and 8000 pixels a side), gridded by bilinear interpolation of the
500 x 500 maps (a strip of rows at a time, float32, as a large FITS image
would be). Each map is fitted (bundled network, blind, refinement on) in a
fresh process, which reports its peak resident memory (``ru_maxrss``: the
maps themselves, torch and the fit), the memory above the maps and the
modules, the wall time, and the geometry recovered, beside the truth. The
maps larger than `astrokin.fitting.binning.MAX_MAP_SIDE` are cut out and
binned before the fit; smaller ones are fitted as they are.

**Many galaxies** (``--counts``). One call of the fitter (blind, MC dropout
only, no samples kept) on a float32 stack of N noisy 64 x 64 galaxies, in a
fresh process each: the peak memory, the part above the maps and the
modules, per galaxy, and the rate. Blind fits are streamed
(`astrokin.fitting.fitter.STREAM_BLOCK` galaxies at a time).

Run: ``python benchmarks/memory.py [--sides 500 2000 4000 8000]
[--counts 2048 8192 32768] [--threads 2]``.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from machine import cpu_name  # benchmarks/machine.py, beside this script

TRUTH = {"inclination": 55.0, "pa": 120.0, "x_0": 40.0, "y_0": -30.0, "r_scale": 40.0,
         "r_turn": 8.0, "v_max": 200.0, "v_sys": 1500.0}
BASE_SIDE = 500
BASE_SCALE = 1.0  # arcsec per pixel at 500 x 500


def _maps(side):
    """mom0, mom1 (float32, ``side`` x ``side``) of the galaxy, 250 arcsec across."""
    import astropy.units as u
    from scipy import ndimage

    from astrokin.models import ExponentialArctanDisk

    t = TRUTH
    model = ExponentialArctanDisk(
        inclination=t["inclination"] * u.deg, pa=t["pa"] * u.deg, x_0=t["x_0"] * u.arcsec,
        y_0=t["y_0"] * u.arcsec, r_scale=t["r_scale"] * u.arcsec, r_turn=t["r_turn"] * u.arcsec,
        v_max=t["v_max"] * u.km / u.s, v_sys=t["v_sys"] * u.km / u.s)
    maps = model.render((BASE_SIDE, BASE_SIDE), BASE_SCALE * u.arcsec, beam=3 * u.arcsec)
    base = [maps[0].value, maps[1].to_value(u.km / u.s)]
    if side == BASE_SIDE:
        return [b.astype(np.float32) for b in base], BASE_SCALE
    scale = BASE_SCALE * BASE_SIDE / side
    out = [np.empty((side, side), dtype=np.float32) for _ in base]
    cols = (np.arange(side) + 0.5) * BASE_SIDE / side - 0.5
    step = max(1, 4_000_000 // side)
    for r0 in range(0, side, step):
        rows = (np.arange(r0, min(r0 + step, side)) + 0.5) * BASE_SIDE / side - 0.5
        yy, xx = np.meshgrid(rows, cols, indexing="ij")
        for o, b in zip(out, base, strict=True):
            o[r0:r0 + len(rows)] = ndimage.map_coordinates(b, [yy, xx], order=1,
                                                           mode="nearest")
    return out, scale


def _measured(fit):
    """``(result, peak MB, MB above the process before, wall s)`` of ``fit()``."""
    import warnings

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result, peak, peak - before, wall


def _print_head(head):
    print(head)
    print("-" * len(head))


def _child(side, threads):
    """Fit one map in this process; print a JSON line."""
    import astropy.units as u
    import torch

    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    torch.set_num_threads(threads)
    fitter = NeuralKinematicFitter.pretrained()
    (mom0, mom1), scale = _maps(side)
    fitted, peak, above, wall = _measured(lambda: fitter(
        ExponentialArctanDisk(), mom0, mom1, pixel_scale=scale * u.arcsec, beam=3.0 * u.arcsec))
    row = fitter.fit_info["table"][0]
    out = {"side": side, "peak_mb": peak, "above_mb": above, "wall_s": wall,
           "binning": fitter.fit_info["binning"][0], "maps_mb": 2 * mom0.nbytes / 2**20}
    for name in ("inclination", "pa", "x_0", "y_0", "v_max", "v_sys"):
        out[name] = float(getattr(fitted, name).value)
        out[f"{name}_std"] = float(row[f"{name}_std"].value)
    print(json.dumps(out))


def _child_many(n, threads):
    """Fit ``n`` galaxies in one call in this process; print a JSON line."""
    import astropy.units as u
    import torch

    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk
    from astrokin.synthetic import make_galaxies

    torch.set_num_threads(threads)
    fitter = NeuralKinematicFitter.pretrained(refine=False, keep_samples=False)
    gals = make_galaxies(ExponentialArctanDisk(), 256, shape=(64, 64), seed=3,
                         beam=3 * u.pix, mask_snr=1)
    reps = -(-n // 256)
    mom0 = np.tile(np.asarray(gals.mom0, dtype=np.float32), (reps, 1, 1))[:n]
    mom1 = np.tile(np.asarray(gals.mom1, dtype=np.float32), (reps, 1, 1))[:n]
    _, peak, above, wall = _measured(lambda: fitter(
        ExponentialArctanDisk(), mom0, mom1, pixel_scale=gals.pixel_scale,
        beam=3 * u.arcsec * float(gals.pixel_scale.to_value(u.arcsec))))
    print(json.dumps({"n": n, "peak_mb": peak, "above_mb": above, "wall_s": wall,
                      "maps_mb": (mom0.nbytes + mom1.nbytes) / 2**20,
                      "blocks": fitter.fit_info["n_blocks"]}))


def _run_child(args, flag, value):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, os.path.abspath(__file__), flag, str(value),
                          "--threads", str(args.threads)], capture_output=True, text=True,
                         env=env, check=False)
    if run.returncode != 0:
        print(f"{value:6d} failed (exit {run.returncode}): {run.stderr.strip()[-300:]}")
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None):
    """Run each size in its own process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="*", default=[500, 2000, 4000, 8000])
    parser.add_argument("--counts", type=int, nargs="*", default=[2048, 8192, 32768])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-many", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.threads)
        return
    if args.child_many:
        _child_many(args.child_many, args.threads)
        return
    import torch

    from astrokin.fitting.binning import MAX_MAP_SIDE

    print(f"# one large map, blind + refinement: {cpu_name()}, {args.threads} torch threads, "
          f"torch {torch.__version__}; maps binned above {MAX_MAP_SIDE} px a side")
    head = (f"{'side':>6s} {'maps MB':>8s} {'peak MB':>8s} {'fit MB':>7s} {'bin':>4s} "
            f"{'wall s':>7s} {'incl':>13s} {'pa':>14s} {'x_0':>12s} {'v_max':>12s}")
    _print_head(head)
    print(f"{'truth':>6s} {'':>8s} {'':>8s} {'':>7s} {'':>4s} {'':>7s} "
          f"{TRUTH['inclination']:13.1f} {TRUTH['pa']:14.1f} {TRUTH['x_0']:12.1f} "
          f"{TRUTH['v_max']:12.1f}")
    for side in args.sides:
        r = _run_child(args, "--child", side)
        if r is None:
            continue

        def pm(name, r=r):
            return f"{r[name]:.2f}±{r[name + '_std']:.2f}"

        print(f"{side:6d} {r['maps_mb']:8.0f} {r['peak_mb']:8.0f} {r['above_mb']:7.0f} "
              f"{r['binning']:4d} {r['wall_s']:7.1f} {pm('inclination'):>13s} {pm('pa'):>14s} "
              f"{pm('x_0'):>12s} {pm('v_max'):>12s}")

    if not args.counts:
        return
    from astrokin.fitting.fitter import STREAM_BLOCK

    print()
    print(f"# many 64x64 galaxies (float32) in one call, blind, 1000 MC samples, no samples "
          f"kept; streamed {STREAM_BLOCK} at a time")
    head = (f"{'N':>7s} {'maps MB':>8s} {'peak MB':>8s} {'fit MB':>7s} {'kB/galaxy':>9s} "
            f"{'blocks':>6s} {'gal/s':>7s}")
    _print_head(head)
    for n in args.counts:
        r = _run_child(args, "--child-many", n)
        if r is None:
            continue
        print(f"{n:7d} {r['maps_mb']:8.0f} {r['peak_mb']:8.0f} {r['above_mb']:7.0f} "
              f"{1024 * r['above_mb'] / n:9.1f} {r['blocks']:6d} {n / r['wall_s']:7.0f}")

if __name__ == "__main__":
    main()
