"""Accelerator throughput: blind MC fits, refinement, training and rendering, with peak memory.

One script for a lent GPU (``--device cuda``), built to finish within
``--budget`` seconds (default 420: one 10-minute device call with room to
start): each section is skipped, and says so, once the budget is spent.
It measures, on the bundled network and synthetic 64x64 galaxies (beams of
2 px, noise, an S/N mask):

1. the network's blind fit with ``--mc-samples`` (1000) MC-dropout samples
   at batches of 1k to 64k galaxies (the maps prepared once and tiled on the
   device: the network's part, `TrainedNetwork.mc_summary`), with the peak
   device memory of each batch;
2. the same end to end through `NeuralKinematicFitter` (host-side parsing
   and cleaning included) at batch 1024;
3. refinement (`refine=True`) at batch 256 (1024 on a GPU);
4. training: self-supervised galaxy-steps per second at batch 1024 (64 on
   a CPU) through `NeuralKinematicFitter.train`;
5. renders per second of `DiskRenderer` (forward, and forward+backward),
   64x64 with a beam, at batch 1024.

``--quick`` runs every section at toy sizes (the CPU test of the script).

Run: ``python benchmarks/gpu.py --device cuda [--budget 420] [--out table.txt]``.
"""

import argparse
import resource
import time
import warnings

import astropy.units as u
import torch
from machine import cpu_name  # benchmarks/machine.py, beside this script

from astrokin.fitting import NeuralKinematicFitter
from astrokin.fitting.preprocessing import parse_maps, prepare_batch
from astrokin.models import ExponentialArctanDisk
from astrokin.rendering import DiskRenderer
from astrokin.synthetic import make_galaxies

__all__ = ["main"]


class Clock:
    """Wall-clock budget of the whole run."""

    def __init__(self, budget):
        self.start = time.perf_counter()
        self.budget = float(budget)

    def left(self):
        return self.budget - (time.perf_counter() - self.start)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device):
    """Peak device memory since the last reset (CUDA), else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def blind_network(fitter, gals, batches, mc_samples, device, clock):
    """Rows of the network's blind fit at each batch size (maps tiled on the device)."""
    obs = parse_maps(gals.mom0, gals.mom1 * u.km / u.s, pixel_scale=1 * u.arcsec,
                     beam=2 * u.arcsec)
    base = prepare_batch(obs).to(device)
    rows = []
    fitter.trained.mc_summary(base.select(slice(0, 8)), mc_samples, seed=0)  # warm up
    for n in batches:
        if clock.left() < 30:
            rows.append(("blind, network only (skipped: budget)", n, None, None))
            continue
        index = torch.arange(n, device=device) % len(base)
        batch = base.select(index)
        _reset_peak(device)
        dt, _ = _timed(lambda batch=batch: fitter.trained.mc_summary(batch, mc_samples, seed=0),
                       device)
        rows.append(("blind, network only", n, n / dt, _peak_mb(device)))
        del batch
    return rows


def _fit_rate(fitter, model, gals, n, label, device):
    """One row: galaxies per second of ``fitter`` on the first ``n`` galaxies (after a warm-up)."""
    mom1 = gals.mom1 * u.km / u.s
    kw = dict(pixel_scale=1 * u.arcsec, beam=2 * u.arcsec)
    fitter(model, gals.mom0[:2], mom1[:2], **kw)
    _reset_peak(device)
    dt, _ = _timed(lambda: fitter(model, gals.mom0[:n], mom1[:n], **kw), device)
    return [(label, n, n / dt, _peak_mb(device))]


def blind_end_to_end(fitter, gals, n, device, clock):
    if clock.left() < 30:
        return [("blind, end to end (skipped: budget)", n, None, None)]
    return _fit_rate(fitter, ExponentialArctanDisk(), gals, n,
                     "blind, end to end (host parsing included)", device)


def refinement(device, gals, n, mc_samples, clock):
    if clock.left() < 60:
        return [("refinement (skipped: budget)", n, None, None)]
    fitter = NeuralKinematicFitter.pretrained(mc_samples=mc_samples, seed=0, progress=False,
                                              keep_samples=False, refine=True, device=device)
    return _fit_rate(fitter, ExponentialArctanDisk(bounds={"v_max": (20, 3000)}), gals, n,
                     "refinement (8 free parameters)", device)


def training(device, gals, batch_size, epochs, clock):
    if clock.left() < 60:
        return [("training (skipped: budget)", batch_size, None, None)]
    fitter = NeuralKinematicFitter(mode="blind", epochs=epochs, batch_size=batch_size,
                                   learning_rate=1e-4, seed=0, progress=False, device=device,
                                   refine=False, mc_samples=10)
    _reset_peak(device)
    dt, _ = _timed(lambda: fitter.train(ExponentialArctanDisk(), gals.mom0,
                                        gals.mom1 * u.km / u.s, pixel_scale=1 * u.arcsec,
                                        beam=2 * u.arcsec), device)
    steps = len(gals.mom0) * epochs
    return [(f"training, galaxy-steps ({epochs} epochs, parsing included)", batch_size,
             steps / dt, _peak_mb(device))]


def renders(device, n, repeat, clock):
    if clock.left() < 20:
        return [("renders (skipped: budget)", n, None, None)]
    r = DiskRenderer(ExponentialArctanDisk, (64, 64), device=device)
    g = torch.Generator().manual_seed(0)

    def uniform(lo, hi):
        return (lo + (hi - lo) * torch.rand(n, generator=g)).to(device)

    p = {k: torch.full((n,), float(getattr(ExponentialArctanDisk, k).default), device=device)
         for k in ExponentialArctanDisk.param_names}
    p.update(inclination=uniform(10, 90), pa=uniform(0, 360), r_scale=uniform(3, 11),
             r_turn=uniform(0.3, 25), v_max=uniform(50, 500))
    ps = torch.ones(n, device=device)
    beam = torch.tensor([[2.0, 2.0, 0.0]], device=device).expand(n, 3)
    pg = {k: v.clone().requires_grad_(True) for k, v in p.items()}

    def forward():
        with torch.no_grad():
            for _ in range(repeat):
                r(p, ps, beam)

    def backward():
        for _ in range(repeat):
            m0, m1 = r(pg, ps, beam)
            (m0.mean() + m1.mean()).backward()

    forward()
    _reset_peak(device)
    tf, _ = _timed(forward, device)
    rows = [("renders, forward (64x64, beam)", n, n * repeat / tf, _peak_mb(device))]
    backward()
    _reset_peak(device)
    tb, _ = _timed(backward, device)
    rows.append(("renders, forward+backward", n, n * repeat / tb, _peak_mb(device)))
    return rows


def format_rows(rows):
    """The table: what, batch, galaxies (or steps, renders) per second, peak memory."""
    header = f"{'measurement':52s} {'batch':>6s} {'per second':>12s} {'peak MB':>9s}"
    lines = [header, "-" * len(header)]
    for label, n, rate, peak in rows:
        rate_s = "-" if rate is None else f"{rate:12.0f}"
        peak_s = "-" if peak is None else f"{peak:9.0f}"
        lines.append(f"{label:52s} {n:6d} {rate_s:>12s} {peak_s:>9s}")
    return "\n".join(lines)


def main(argv=None):
    """Measure and print the table (and write it to ``--out``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run")
    ap.add_argument("--mc-samples", type=int, default=1000)
    ap.add_argument("--batches", default="1024,4096,16384,65536")
    ap.add_argument("--quick", action="store_true", help="toy sizes (a test of the script)")
    ap.add_argument("--out", default=None, help="also write the table here")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # synthetic galaxies at the v_max bound warn
    clock = Clock(args.budget)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.quick:
        batches, n_gal, mc, n_e2e, n_ref, train_batch, epochs, n_render = (
            [16, 32], 32, 20, 16, 4, 16, 1, 16)
    else:
        batches = [int(b) for b in args.batches.split(",")]
        n_gal, mc = 1024, args.mc_samples
        n_e2e, n_ref = 1024, 1024 if gpu else 256
        train_batch, epochs, n_render = (1024, 4, 1024) if gpu else (64, 1, 256)
    gals = make_galaxies(ExponentialArctanDisk(), max(n_gal, n_e2e, n_ref), shape=(64, 64),
                         seed=1, beam=2 * u.pix, mask_snr=1)
    fitter = NeuralKinematicFitter.pretrained(mc_samples=mc, seed=0, progress=False,
                                              keep_samples=False, refine=False, device=device)
    rows = blind_network(fitter, gals, batches, mc, device, clock)
    rows += blind_end_to_end(fitter, gals, n_e2e, device, clock)
    rows += refinement(device, gals, n_ref, mc, clock)
    train_set = gals if not gpu else make_galaxies(
        ExponentialArctanDisk(), 8192, shape=(64, 64), seed=2, beam=2 * u.pix, mask_snr=1)
    rows += training(device, train_set, train_batch, epochs, clock)
    rows += renders(device, n_render, 2 if args.quick else 5, clock)
    name = torch.cuda.get_device_name(device) if gpu else cpu_name()
    text = (f"# {name}; torch {torch.__version__}; device {device}; "
            f"{torch.get_num_threads()} host threads; {mc} MC samples; "
            f"{time.perf_counter() - clock.start:.0f} s\n" + format_rows(rows))
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return rows


if __name__ == "__main__":
    main()
