"""Peak memory and time of fitting one very large map, and what binning it costs.

Renders an exponential disc (beam 3 px) filling a 500 x 500 map, and
the same galaxy on finer grids up to ``--sides`` (default 2000, 4000 and
8000 pixels a side), gridded by bilinear interpolation of the 500 x 500 maps
(a strip of rows at a time, float32, as a large FITS image would be). Each
map is fitted (bundled network, blind, refinement on) in a fresh process,
which reports its peak resident memory (``ru_maxrss``: the maps themselves,
torch and the fit), the memory above the maps and the modules, the wall
time, and the geometry recovered, beside the truth. The maps larger than
`astrokin.fitting.binning.MAX_MAP_SIDE` are cut out and binned before the
fit; smaller ones are fitted as they are.

Run: ``python benchmarks/large_maps.py [--sides 500 2000 4000 8000] [--threads 2]``.
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


def _child(side, threads):
    """Fit one map in this process; print a JSON line."""
    import warnings

    import astropy.units as u
    import torch

    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    torch.set_num_threads(threads)
    fitter = NeuralKinematicFitter.pretrained()
    (mom0, mom1), scale = _maps(side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = fitter(ExponentialArctanDisk(), mom0, mom1, pixel_scale=scale * u.arcsec,
                        beam=3.0 * u.arcsec)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = fitter.fit_info["table"][0]
    out = {"side": side, "peak_mb": peak, "above_mb": peak - before, "wall_s": wall,
           "binning": fitter.fit_info["binning"][0], "maps_mb": 2 * mom0.nbytes / 2**20}
    for name in ("inclination", "pa", "x_0", "y_0", "v_max", "v_sys"):
        out[name] = float(getattr(fitted, name).value)
        out[f"{name}_std"] = float(row[f"{name}_std"].value)
    print(json.dumps(out))


def main(argv=None):
    """Run each size in its own process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[500, 2000, 4000, 8000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.threads)
        return
    import torch

    from astrokin.fitting.binning import MAX_MAP_SIDE

    print(f"# one large map, blind + refinement: {cpu_name()}, {args.threads} torch threads, "
          f"torch {torch.__version__}; maps binned above {MAX_MAP_SIDE} px a side")
    head = (f"{'side':>6s} {'maps MB':>8s} {'peak MB':>8s} {'fit MB':>7s} {'bin':>4s} "
            f"{'wall s':>7s} {'incl':>13s} {'pa':>14s} {'x_0':>12s} {'v_max':>12s}")
    print(head)
    print("-" * len(head))
    print(f"{'truth':>6s} {'':>8s} {'':>8s} {'':>7s} {'':>4s} {'':>7s} "
          f"{TRUTH['inclination']:13.1f} {TRUTH['pa']:14.1f} {TRUTH['x_0']:12.1f} "
          f"{TRUTH['v_max']:12.1f}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         os.environ.get("PYTHONPATH", "")]))
    for side in args.sides:
        run = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(side),
                              "--threads", str(args.threads)], capture_output=True, text=True,
                             env=env, check=False)
        if run.returncode != 0:
            print(f"{side:6d} failed (exit {run.returncode}): {run.stderr.strip()[-300:]}")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])

        def pm(name, r=r):
            return f"{r[name]:.2f}±{r[name + '_std']:.2f}"

        print(f"{side:6d} {r['maps_mb']:8.0f} {r['peak_mb']:8.0f} {r['above_mb']:7.0f} "
              f"{r['binning']:4d} {r['wall_s']:7.1f} {pm('inclination'):>13s} {pm('pa'):>14s} "
              f"{pm('x_0'):>12s} {pm('v_max'):>12s}")


if __name__ == "__main__":
    main()
