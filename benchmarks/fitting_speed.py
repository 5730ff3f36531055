"""Speed of NeuralKinematicFitter on this machine (a benchmark, not a test).

Prints a table of:

- solo fit time per galaxy at 300 epochs (one galaxy: 300 optimiser steps;
  timed over ``--epochs`` epochs and extrapolated linearly when fewer);
- the time for 1000 MC dropout samples per galaxy with the shared trunk
  (`astrokin.fitting.mc_dropout.shared_trunk_samples`, summaries included),
  against one deterministic forward pass of the encoders, and against the
  naive loop of 1000 full forward passes.

Run: ``python benchmarks/fitting_speed.py [--epochs 300] [--threads 1]``.
"""

import argparse
import time

import numpy as np
import torch
from astropy import units as u

from astrokin.fitting import NeuralKinematicFitter
from astrokin.fitting.mc_dropout import mc_dropout_summary, naive_samples
from astrokin.models import ExponentialArctanDisk


def _galaxy():
    truth = ExponentialArctanDisk(inclination=60 * u.deg, pa=30 * u.deg, r_scale=4 * u.arcsec,
                                  r_turn=1.5 * u.arcsec, v_max=220 * u.km / u.s)
    mom0, mom1 = truth.render((64, 64), 0.5 * u.arcsec, beam=1.5 * u.arcsec)
    return mom0.value, mom1


def _best(func, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        func()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--galaxies", type=int, default=16, help="galaxies for the MC timings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mom0, mom1 = _galaxy()
    kw = dict(pixel_scale=0.5 * u.arcsec, beam=1.5 * u.arcsec)

    fitter = NeuralKinematicFitter(epochs=args.epochs, mc_samples=1000, seed=0, progress=False)
    fitter(ExponentialArctanDisk(), mom0, mom1, **kw)
    t = fitter.fit_info["timings"]
    solo = t["training"] * 300 / max(args.epochs, 1) + t["mc_dropout"]

    n = args.galaxies
    net = fitter.network.eval()
    x0 = torch.rand(n, 1, 64, 64)
    x1 = torch.rand(n, 1, 64, 64) * 2 - 1
    encs = net.encoders

    def forward():
        with torch.no_grad():
            encs[0](x0), encs[1](x1)

    forward()
    t_fwd = _best(forward, 5) / n
    t_shared = _best(lambda: mc_dropout_summary(encs, [x0, x1], 1000, seed=0), 3) / n
    n_naive = min(n, 4)
    t_naive = _best(lambda: naive_samples(encs, [x0[:n_naive], x1[:n_naive]], 1000), 1) / n_naive

    rows = [
        ("solo fit, 300 epochs + 1000 MC samples (1 galaxy)", solo),
        ("  of which training", t["training"] * 300 / max(args.epochs, 1)),
        ("one forward pass of both encoders, per galaxy", t_fwd),
        ("1000 MC samples, shared trunk + summaries, per galaxy", t_shared),
        ("1000 MC samples, naive loop of full passes, per galaxy", t_naive),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"device {fitter.fit_info['device']}; MC timings over {n} galaxies "
          f"(naive over {n_naive}); epochs timed: {args.epochs}")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'seconds':>10}")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10.4f}")
    print(f"shared-trunk speed-up over the naive loop: {t_naive / t_shared:.0f}x; "
          f"1000 shared samples cost {t_shared / t_fwd:.1f} forward passes")
    assert np.isfinite(solo)


if __name__ == "__main__":
    main()
