"""Throughput of refinement, and where its time goes.

Fits batches of noisy synthetic galaxies (astrokin renders with beam-correlated
noise and an S/N mask, every geometric parameter free) with the bundled
network, with and without refinement, and prints per set: galaxies per
second, milliseconds per galaxy, renders per galaxy (trial steps, and
finite-difference Jacobians where the renderer's derivatives are not used)
and the Jacobians the renderer differentiated (`MapResiduals.linearization`),
the share of the time spent in both (of the time of all the threads that
refinement fits its problems in, `astrokin.fitting.threads`), and the
fraction of 1-sigma intervals that contain the truth (per parameter: the
median and the range over the eight).

Run: ``python benchmarks/refinement_speed.py [--n 256] [--threads 2]
[--sizes 64 100]``.
"""

import argparse
import threading
import time
import warnings

import numpy as np
from astropy import units as u
from machine import cpu_name  # benchmarks/machine.py, beside this script


def main(argv=None):
    """Measure and print the table."""
    import torch

    import astrokin.fitting.refinement as refinement
    from astrokin.fitting import NeuralKinematicFitter
    try:
        from astrokin.fitting.threads import cpu_workers
    except ImportError:  # (a baseline's code, which fits its problems in turn)
        def cpu_workers(device, n):
            return 1
    from astrokin.models import ExponentialArctanDisk
    from astrokin.synthetic import BeamPrior, make_galaxies

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="galaxies per set (one batch)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 100])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    counts = {"renders": 0, "jacobians": 0, "seconds": 0.0}
    residuals = refinement.MapResiduals

    lock = threading.Lock()  # (refinement's problems are fitted in threads)

    def counted(method, key):
        def timed(self, theta, rows, problem):
            t0 = time.perf_counter()
            out = method(self, theta, rows, problem)
            with lock:
                counts[key] += len(rows)
                counts["seconds"] += time.perf_counter() - t0
            return out
        return timed

    residuals.render = counted(residuals.render, "renders")
    if hasattr(residuals, "linearization"):  # (a baseline's code may lack it)
        residuals.linearization = counted(residuals.linearization, "jacobians")
    model = ExponentialArctanDisk(bounds={"v_max": (20, 3000)})
    print(f"# refinement throughput: {cpu_name()}, {args.threads} torch threads, "
          f"torch {torch.__version__}; {args.n} galaxies per batch, 8 free parameters, "
          "noise S/N 10-60, beams 2-4 px")
    header = (f"{'maps':>7s} {'refine':>6s} {'gal/s':>7s} {'ms/gal':>7s} {'renders/gal':>11s} "
              f"{'jacobians/gal':>13s} {'rendering':>9s} {'iterations':>10s} {'coverage':>17s}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        gals = make_galaxies(ExponentialArctanDisk(), args.n, shape=(size, size), seed=3,
                             beam=BeamPrior(major=(2, 4) * u.pix, axis_ratio=(0.6, 1.0)),
                             noise=(10, 60), mask_snr=3,
                             priors={"inclination": (20, 85) * u.deg,
                                     "v_max": (100, 350) * u.km / u.s})
        kw = dict(pixel_scale=gals.pixel_scale, beam=[gals.beam(i) for i in range(args.n)])
        for refine in (False, True):
            fitter = NeuralKinematicFitter.pretrained(mc_samples=1000, seed=0, progress=False,
                                                      keep_samples=False, refine=refine)
            counts.update(renders=0, jacobians=0, seconds=0.0)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitter(model, gals.mom0, gals.mom1 * u.km / u.s, **kw)
            dt = time.perf_counter() - t0
            table = fitter.fit_info["table"]
            renders = counts["renders"] / args.n
            jacobians = counts["jacobians"] / args.n
            # (Of the time of the threads that refinement fits its problems in.)
            share = counts["seconds"] / (dt * cpu_workers("cpu", args.n))
            iters = float(np.mean(table["n_iterations"])) if refine else 0.0
            cover = []
            for nm in ("inclination", "pa", "x_0", "y_0", "v_sys", "r_scale", "r_turn",
                       "v_max"):
                err = table[nm].value - np.asarray(gals.params[nm].value)
                if nm == "pa":
                    err = (err + 180.0) % 360.0 - 180.0
                cover.append(float(np.mean(np.abs(err) <= table[f"{nm}_std"].value)))
            coverage = f"{np.median(cover):.2f} ({min(cover):.2f}-{max(cover):.2f})"
            print(f"{size:>4d}^2 {str(refine):>6s} {args.n / dt:7.1f} {1e3 * dt / args.n:7.1f} "
                  f"{renders:11.1f} {jacobians:13.1f} {share:9.0%} {iters:10.1f} "
                  f"{coverage:>17s}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
