"""Blind-fit speed: galaxies per second with 1000 MC-dropout samples each.

Fits synthetic 64x64 galaxies with a pre-trained network (the bundled one by
default) at several batch sizes, end to end (`NeuralKinematicFitter.__call__`:
parsing, spurious-pixel rejection, cut-outs, resampling, the MC samples,
summaries, the table), and a mixed catalogue in one call (64 and 100 pixel
maps, beams of 2 to 4 pixels, given as lists). Each figure is the best of
``--repeat`` runs (this machine's speed varies from run to run). Compares
with the naive loop of 1000 full dropout passes per galaxy and, when
pyBBarolo is installed, with 3D-Barolo's 2DFIT on the same velocity maps.
With ``--baseline DIR`` (a checkout of an earlier astrokin, e.g. made by
``git worktree add DIR <commit>``) the same rows are measured with that code
in the same run, one run of each code in turn (this machine's speed drifts
by 20-30% over minutes: measured one after the other, two runs of the same
code differ as much as two versions do). Reports the peak resident memory
of the process too.

Run: ``python benchmarks/blind_speed.py [--threads 2] [--device cuda] [--network P]
[--baseline DIR]``.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py, beside this script

from astrokin.fitting import NeuralKinematicFitter
from astrokin.fitting.mc_dropout import naive_samples
from astrokin.models import ExponentialArctanDisk
from astrokin.synthetic import make_galaxies


def _best_rate(call, n, repeat):
    call(1)  # warm up (network loading, first allocations)
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        call(n)
        best = max(best, n / (time.perf_counter() - t))
    return best


def measure(args):
    """The astrokin rows: ``[(label, batch, galaxies/s)]``."""
    kw = dict(mc_samples=args.mc_samples, seed=0, progress=False, keep_samples=False,
              device=args.device, refine=False)
    fitter = (NeuralKinematicFitter.load(args.network, **kw) if args.network
              else NeuralKinematicFitter.pretrained(**kw))
    sizes = [int(b) for b in args.batches.split(",")]
    gals = make_galaxies(ExponentialArctanDisk(), max(sizes), shape=(64, 64), seed=1,
                         beam=2 * u.pix, mask_snr=1)
    mom1 = gals.mom1 * u.km / u.s
    model = ExponentialArctanDisk()
    rows = []
    # End to end, as users call it: reading and cleaning the maps (spurious-pixel
    # rejection, cut-out) included; and without those two steps, for maps known
    # to be clean (reject_spurious=False, cutout=False).
    for label, clean in (("astrokin blind (end to end)", {}),
                         ("  ... without pixel rejection and cut-out",
                          dict(reject_spurious=False, cutout=False))):
        for n in sizes:
            rate = _best_rate(lambda m, clean=clean: fitter(
                model, gals.mom0[:m], mom1[:m], pixel_scale=1 * u.arcsec,
                beam=2 * u.arcsec, **clean), n, args.repeat)
            rows.append((label, n, rate))
    # A mixed catalogue in one call: four kinds of galaxy, as lists.
    n_mixed = 256
    maps0, maps1, beams = [], [], []
    for k, (side, beam) in enumerate(((64, 2), (100, 3), (64, 4), (100, 2))):
        g = make_galaxies(ExponentialArctanDisk(), n_mixed // 4, shape=(side, side), seed=10 + k,
                          beam=beam * u.pix, mask_snr=1)
        maps0 += list(g.mom0)
        maps1 += list(g.mom1 * u.km / u.s)
        beams += [beam * u.arcsec] * (n_mixed // 4)
    order = np.random.default_rng(0).permutation(n_mixed)
    maps0, maps1, beams = ([a[i] for i in order] for a in (maps0, maps1, beams))
    rate = _best_rate(lambda m: fitter(model, maps0[:m], maps1[:m], pixel_scale=1 * u.arcsec,
                                       beam=beams[:m]), n_mixed, args.repeat)
    rows.append(("mixed catalogue (64/100 px, beams 2-4 px)", n_mixed, rate))
    return rows, fitter, gals, mom1


def _baseline_rows(args):
    """The same rows measured with the astrokin found in ``args.baseline``."""
    env = dict(os.environ, PYTHONPATH=str(Path(args.baseline).resolve()))
    cmd = [sys.executable, __file__, "--rows-only", "--threads", str(args.threads),
           "--device", args.device, "--batches", args.batches, "--repeat", str(args.repeat),
           "--mc-samples", str(args.mc_samples)] + (["--network", args.network]
                                                     if args.network else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return [tuple(r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


def _interleaved(args):
    """Rows of this code and of the baseline, one run of each in turn, the best of each."""
    once = argparse.Namespace(**{**vars(args), "repeat": 1})
    best, best_base = None, None
    for _ in range(args.repeat):
        base = _baseline_rows(once)
        rows, *kept = measure(once)
        best = rows if best is None else [max(a, b, key=lambda r: r[2])
                                          for a, b in zip(best, rows, strict=True)]
        best_base = base if best_base is None else [max(a, b, key=lambda r: r[2])
                                                    for a, b in zip(best_base, base, strict=True)]
    return best, best_base, kept


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--network", default=None, help="saved network (default: bundled)")
    ap.add_argument("--batches", default="1,64,256,1024")
    ap.add_argument("--mc-samples", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the best is kept)")
    ap.add_argument("--baseline", default=None, help="an earlier astrokin checkout to compare")
    ap.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-barolo", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # the synthetic set has galaxies at the v_max bound
    if args.rows_only:
        rows, *_ = measure(args)
        print(json.dumps(rows))
        return
    if args.baseline:
        rows, baseline, (fitter, gals, mom1) = _interleaved(args)
    else:
        baseline = None
        rows, fitter, gals, mom1 = measure(args)
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} torch thread(s), "
          f"device {args.device}" + (f" ({torch.cuda.get_device_name()})"
                                     if args.device.startswith("cuda") else ""))
    print(f"torch {torch.__version__}; {args.mc_samples} MC samples per galaxy; best of "
          f"{args.repeat} runs")
    header = f"{'method':44s} {'batch':>6s} {'galaxies/s':>11s} {'ms/galaxy':>10s}"
    if baseline:
        header += f" {'baseline/s':>11s} {'speed-up':>9s}"
    print(header)
    print("-" * len(header))
    for k, (label, n, rate) in enumerate(rows):
        line = f"{label:44s} {n:6d} {rate:11.1f} {1e3 / rate:10.2f}"
        if baseline:
            line += f" {baseline[k][2]:11.1f} {rate / baseline[k][2]:9.2f}"
        print(line)
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
