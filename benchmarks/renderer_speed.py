"""Renders per second of DiskRenderer (the fitter's decoder and training inner loop).

Times forward and forward+backward passes for batches of discs with random
geometry at several map sizes, with and without a beam, for both alias
orders ("auto" picks 0 when every beam is >= 2 px FWHM, else 1).

Run: python benchmarks/renderer_speed.py [--device cuda] [--threads N]
"""

import argparse
import time

import torch
from machine import cpu_name  # benchmarks/machine.py, beside this script

from astrokin.models import ExponentialArctanDisk
from astrokin.rendering import DiskRenderer


def params(n, device, dtype):
    g = torch.Generator().manual_seed(0)

    def uniform(lo, hi):
        return (lo + (hi - lo) * torch.rand(n, generator=g)).to(device, dtype)

    p = {k: torch.full((n,), float(getattr(ExponentialArctanDisk, k).default), device=device,
                       dtype=dtype) for k in ExponentialArctanDisk.param_names}
    p.update(inclination=uniform(10, 90), pa=uniform(0, 360), r_scale=uniform(3, 11),
             r_turn=uniform(0.3, 25), v_max=uniform(50, 500), x_0=uniform(-3, 3),
             y_0=uniform(-3, 3))
    return p


def timeit(fn, device, repeat):
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeat


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    print(f"torch {torch.__version__}, device {dev}, {torch.get_num_threads()} threads, "
          f"{cpu_name()}")
    if dev == "cuda":
        print(torch.cuda.get_device_name())
    header = (f"{'map':>7s} {'B':>5s} {'beam':>6s} {'order':>5s} {'fwd ms':>8s} {'renders/s':>10s} "
              f"{'fwd+bwd ms':>11s} {'renders/s':>10s}")
    print(header)
    print("-" * len(header))
    for size, n in [(64, 64), (64, 1024), (100, 64), (128, 64)]:
        for beam_px, order in [(2.0, 0), (None, 1), (2.0, 1)]:
            if n > 64 and dev == "cpu" and order == 1:
                continue
            r = DiskRenderer(ExponentialArctanDisk, (size, size), alias_order=order, device=dev)
            p = params(n, dev, torch.float32)
            ps = torch.ones(n, device=dev)
            beam = None if beam_px is None else torch.tensor(
                [[beam_px, beam_px, 0.0]], device=dev).expand(n, 3)

            def fwd(r=r, p=p, ps=ps, beam=beam):
                with torch.no_grad():
                    r(p, ps, beam)

            pg = {k: v.clone().requires_grad_(True) for k, v in p.items()}

            def fwd_bwd(r=r, pg=pg, ps=ps, beam=beam):
                m0, m1 = r(pg, ps, beam)
                (m0.mean() + m1.mean()).backward()

            tf = timeit(fwd, dev, args.repeat)
            tb = timeit(fwd_bwd, dev, args.repeat)
            label = "none" if beam_px is None else f"{beam_px:g}px"
            print(f"{size:4d}^2 {n:5d} {label:>6s} {order:5d} {tf * 1e3:8.1f} {n / tf:10.0f} "
                  f"{tb * 1e3:11.1f} {n / tb:10.0f}")


if __name__ == "__main__":
    main()
