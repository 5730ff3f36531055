"""Blind-fit speed: galaxies per second with 1000 MC-dropout samples each.

Fits synthetic 64x64 galaxies with a pre-trained network (the bundled one by
default) at several batch sizes, end to end (`NeuralKinematicFitter.__call__`:
parsing, resampling, the MC samples, summaries, the table), and compares with
the naive loop of 1000 full dropout passes per galaxy and, when pyBBarolo is
installed, with 3D-Barolo's 2DFIT on the same velocity maps. Reports the
peak resident memory of the process too.

Run: ``python benchmarks/blind_speed.py [--threads 2] [--device cuda] [--network P]``.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py, beside this script

from astrokin.fitting import NeuralKinematicFitter
from astrokin.fitting.mc_dropout import naive_samples
from astrokin.models import ExponentialArctanDisk
from astrokin.synthetic import make_galaxies


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--network", default=None, help="saved network (default: bundled)")
    ap.add_argument("--batches", default="1,64,1024")
    ap.add_argument("--mc-samples", type=int, default=1000)
    ap.add_argument("--no-barolo", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kw = dict(mc_samples=args.mc_samples, seed=0, progress=False, keep_samples=False,
              device=args.device)
    fitter = (NeuralKinematicFitter.load(args.network, **kw) if args.network
              else NeuralKinematicFitter.pretrained(**kw))
    sizes = [int(b) for b in args.batches.split(",")]
    gals = make_galaxies(ExponentialArctanDisk(), max(sizes), shape=(64, 64), seed=1,
                         beam=2 * u.pix, mask_snr=1)
    mom1 = gals.mom1 * u.km / u.s
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} torch thread(s), "
          f"device {args.device}" + (f" ({torch.cuda.get_device_name()})"
                                     if args.device.startswith("cuda") else ""))
    print(f"torch {torch.__version__}; {args.mc_samples} MC samples per galaxy; 64x64 maps")
    header = f"{'method':44s} {'batch':>6s} {'galaxies/s':>11s} {'ms/galaxy':>10s}"
    print(header)
    print("-" * len(header))
    model = ExponentialArctanDisk()
    # End to end, as users call it: reading and cleaning the maps (spurious-pixel
    # rejection, cut-out) included; and without those two steps, for maps known
    # to be clean (reject_spurious=False, cutout=False).
    for label, clean in (("astrokin blind, shared trunk (end to end)", {}),
                         ("  ... without pixel rejection and cut-out",
                          dict(reject_spurious=False, cutout=False))):
        for n in sizes:
            fitter(model, gals.mom0[:1], mom1[:1], pixel_scale=1 * u.arcsec,
                   beam=2 * u.arcsec, **clean)
            t = time.perf_counter()
            fitter(model, gals.mom0[:n], mom1[:n], pixel_scale=1 * u.arcsec,
                   beam=2 * u.arcsec, **clean)
            dt = time.perf_counter() - t
            print(f"{label:44s} {n:6d} {n / dt:11.1f} {1e3 * dt / n:10.2f}")
    # The naive loop: 1000 full passes of both encoders with dropout on.
    from astrokin.fitting.preprocessing import parse_maps, prepare_batch

    m = 4
    batch = prepare_batch(parse_maps(gals.mom0[:m], mom1[:m], pixel_scale=1 * u.arcsec,
                                     beam=2 * u.arcsec))
    dev = next(fitter.network.parameters()).device
    x0 = torch.as_tensor(batch["mom0"][:, None], dtype=torch.float32, device=dev)
    x1 = torch.as_tensor(batch["mom1"][:, None], dtype=torch.float32, device=dev)
    t = time.perf_counter()
    naive_samples(fitter.network.encoders, [x0, x1], args.mc_samples)
    dt = time.perf_counter() - t
    print(f"{'naive loop of full dropout passes (MC only)':44s} {m:6d} {m / dt:11.1f} "
          f"{1e3 * dt / m:10.2f}")
    if not args.no_barolo:
        _barolo(gals, m=20)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:.0f} MB")


def _barolo(gals, m):
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from peers.barolo import fit_2dfit
    except ImportError as err:  # pragma: no cover - optional peer
        print(f"3D-Barolo 2DFIT: not available ({err})")
        return
    t = time.perf_counter()
    for i in range(m):
        p = gals.params[i]
        guess = dict(x_center_pix=31.5, y_center_pix=31.5, v_sys=float(np.nanmedian(gals.mom1[i])),
                     inclination=float(p["inclination"].value) + 10.0,
                     pa=float(p["pa"].value) + 10.0, v_rot=150.0)
        fit_2dfit(gals.mom1[i], 1.0, guess, beam_fwhm_arcsec=2.0)
    dt = time.perf_counter() - t
    print(f"{'3D-Barolo 2DFIT (1 thread, per map)':44s} {1:6d} {m / dt:11.1f} "
          f"{1e3 * dt / m:10.2f}")


if __name__ == "__main__":
    main()
