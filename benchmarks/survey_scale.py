"""Survey scale: catalogue fitting with Dask and training with torch.distributed, 1 vs 2 workers.

Writes ``--galaxies`` synthetic 64x64 galaxies as FITS pairs (WCS and beam in
the headers) to a temporary directory, then measures

* blind catalogue fitting (`astrokin.survey.fit_catalogue`, 1000 MC-dropout
  samples each, bundled network, batches of 256; with ``--refine``, refined
  as ``fit_catalogue`` does by default): in this process, and on a
  `distributed.LocalCluster` of 1 and 2 single-threaded worker processes
  (cluster start-up excluded, first network load included);
* training on shards (`python -m astrokin.survey.train`, global batch 64):
  one process, and ``torchrun --nproc_per_node=2`` (gloo on CPU, NCCL with
  ``--device cuda``), from process launch to exit and per epoch.

Run: ``python benchmarks/survey_scale.py [--galaxies 2000] [--device cuda] [--refine]``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import astropy.units as u
import torch
from astropy.io import fits
from astropy.table import Table
from machine import cpu_name  # benchmarks/machine.py, beside this script


def write_catalogue(directory, n, seed=0):
    from astrokin.models import ExponentialArctanDisk
    from astrokin.synthetic import BeamPrior, make_galaxies

    gals = make_galaxies(ExponentialArctanDisk(), n, shape=(64, 64), seed=seed,
                         beam=BeamPrior(major=(1.5, 3) * u.pix), noise=(10, 50), mask_snr=3,
                         alias_order=0)
    rows = []
    for i in range(n):
        h = fits.Header()
        h["CTYPE1"], h["CTYPE2"] = "RA---SIN", "DEC--SIN"
        h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"] = 150.0, 2.0, 32.5, 32.5
        h["CDELT1"], h["CDELT2"] = -1 / 3600, 1 / 3600
        h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
        h["BMAJ"], h["BMIN"], h["BPA"] = gals.beams[i, 0] / 3600, gals.beams[i, 1] / 3600, \
            gals.beams[i, 2]
        for kind, maps in (("mom0", gals.mom0), ("mom1", gals.mom1)):
            h["BUNIT"] = "km/s" if kind == "mom1" else "Jy km s-1 beam-1"
            fits.PrimaryHDU(maps[i], h).writeto(directory / f"g{i:05d}_{kind}.fits")
        rows.append((f"g{i:05d}_mom0.fits", f"g{i:05d}_mom1.fits"))
    Table(rows=rows, names=("mom0", "mom1")).write(directory / "catalogue.ecsv")
    return directory / "catalogue.ecsv"


def bench_fit(catalogue, tmp, n, device, mc_samples, refine=False):
    from distributed import Client, LocalCluster

    from astrokin.survey import fit_catalogue

    rows = []
    kw = dict(mc_samples=mc_samples, seed=0, batch_size=256, device=device,
              return_table=False, refine=refine)
    t = time.perf_counter()
    fit_catalogue(catalogue, tmp / "inproc.ecsv", **kw)
    rows.append(("fit, in this process (no Dask)", 1, n / (time.perf_counter() - t)))
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            t = time.perf_counter()
            fit_catalogue(catalogue, tmp / f"dask{workers}.ecsv", client=client, **kw)
            rows.append((f"fit, Dask LocalCluster, {workers} worker(s)", workers,
                         n / (time.perf_counter() - t)))
    return rows


def bench_train(catalogue, tmp, n, device, epochs):
    from astrokin.survey import catalogue_to_shards

    shards = tmp / "shards"
    catalogue_to_shards(catalogue, shards, shard_size=512)
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for nproc in (1, 2):
        launcher = ([sys.executable] if nproc == 1 else
                    [sys.executable, "-m", "torch.distributed.run", "--standalone",
                     f"--nproc_per_node={nproc}"])
        t = time.perf_counter()
        run = subprocess.run(launcher + ["-m", "astrokin.survey.train", "--shards", str(shards),
                                         "--out", str(tmp / f"net{nproc}.pt"), "--epochs",
                                         str(epochs), "--batch-size", "64", "--threads", "1",
                                         "--device", device, "--learning-rate", "1e-3"],
                             capture_output=True, text=True, env=env, check=True)
        wall = time.perf_counter() - t
        epochs_log = [json.loads(x) for x in run.stdout.splitlines()
                      if x.startswith('{"epoch"')]
        per_epoch = 60 * epochs_log[-1]["minutes"] / len(epochs_log)
        rows.append((f"train, {'torchrun ' if nproc > 1 else ''}{nproc} process(es)", nproc,
                     n / per_epoch, wall, epochs_log[-1]["loss"]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--galaxies", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mc-samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--refine", action="store_true",
                    help="refine the fits (fit_catalogue's default); blind otherwise")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "cat").mkdir()
        catalogue = write_catalogue(tmp / "cat", args.galaxies)
        fit_rows = bench_fit(catalogue, tmp, args.galaxies, args.device, args.mc_samples,
                             args.refine)
        train_rows = bench_train(catalogue, tmp, args.galaxies, args.device, args.epochs)
    dev = args.device + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda")
                         else "")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, device {dev}; torch "
          f"{torch.__version__}; 1 torch thread per worker/process")
    print(f"{args.galaxies} synthetic 64x64 galaxies as FITS pairs; fits: "
          f"{'refined' if args.refine else 'blind'}, {args.mc_samples} "
          "MC samples, batches of 256; training: global batch 64, "
          f"{args.epochs} epochs")
    header = f"{'run':44s} {'workers':>7s} {'galaxies/s':>11s} {'speed-up':>9s}"
    print(header)
    print("-" * len(header))
    base = fit_rows[1][2]
    for name, w, rate in fit_rows:
        print(f"{name:44s} {w:7d} {rate:11.1f} {rate / base:9.2f}")
    base = train_rows[0][2]
    for name, w, rate, wall, loss in train_rows:
        print(f"{name:44s} {w:7d} {rate:11.1f} {rate / base:9.2f}   (wall {wall:.0f} s incl. "
              f"start-up, final loss {loss:.4f})")
    print("fit speed-ups relative to 1 Dask worker; training: galaxies per second per epoch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
