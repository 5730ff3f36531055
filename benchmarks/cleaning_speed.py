"""Spurious-pixel rejection speed: `~astrokin.fitting.cleaning.find_spurious` on stacks of maps.

Times the cleaning of 256 noisy, masked synthetic discs (64x64 and 100x100
maps, as in ``blind_speed.py``) in one stack on one thread, and split in
halves over two threads as the fitter shares it (numpy's sorts and gathers
release the GIL). With ``--baseline DIR`` (a checkout of an earlier astrokin,
e.g. made by ``git worktree add DIR <commit>``) that checkout's cleaning
module is loaded beside this one and the two are timed in turn in the same
process, so that this machine's drift over minutes (20-30%) falls on both;
their flags are compared too. Each figure is the best of ``--repeat`` runs
(the median in brackets).

Run: ``python benchmarks/cleaning_speed.py [--n 256] [--baseline DIR]``.
"""

import argparse
import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import astropy.units as u
import numpy as np
from machine import cpu_name  # benchmarks/machine.py, beside this script

from astrokin.fitting import cleaning
from astrokin.models import ExponentialArctanDisk
from astrokin.synthetic import make_galaxies


def _baseline_module(directory):
    """The cleaning module of the astrokin checkout in ``directory``."""
    path = Path(directory) / "astrokin" / "fitting" / "cleaning.py"
    spec = importlib.util.spec_from_file_location("baseline_cleaning", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _maps(n, side):
    """``n`` masked discs with spikes and wild pixels, and their beam areas."""
    g = make_galaxies(ExponentialArctanDisk(), n, shape=(side, side), seed=1,
                      beam=2 * u.pix, mask_snr=1)
    m1 = np.array(g.mom1, dtype=float)
    rng = np.random.default_rng(2)
    for i in range(n):
        for _ in range(rng.integers(0, 6)):
            y, x = rng.integers(0, side, 2)
            m1[i, y, x] += rng.choice([-1, 1]) * rng.uniform(60, 5000)
    return m1, np.full(n, 4.5)


def _timings(module, m1, areas, pool):
    """Seconds for one stack on one thread, and for two halves on two threads."""
    t = time.perf_counter()
    module.find_spurious(m1, beam_area=areas)
    one = time.perf_counter() - t
    half = len(m1) // 2
    t = time.perf_counter()
    list(pool.map(lambda s: module.find_spurious(m1[s], beam_area=areas[s]),
                  [slice(0, half), slice(half, None)]))
    return one, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="maps per stack")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--baseline", default=None, help="an earlier astrokin checkout to compare")
    args = ap.parse_args()
    codes = [("astrokin", cleaning)]
    if args.baseline:
        codes.append(("baseline", _baseline_module(args.baseline)))
    print(f"machine: {cpu_name()}; {args.n} maps per stack; best of {args.repeat} runs "
          "(median), codes timed in turn")
    header = f"{'code':10s} {'maps':>8s} {'1 thread (ms)':>18s} {'2 threads (ms)':>18s}"
    print(header)
    print("-" * len(header))
    with ThreadPoolExecutor(2) as pool:
        for side in (64, 100):
            m1, areas = _maps(args.n, side)
            flags = [module.find_spurious(m1, beam_area=areas) for _, module in codes]
            same = all(np.array_equal(flags[0][k], f[k]) for f in flags[1:] for k in flags[0])
            times = {name: [] for name, _ in codes}
            for _ in range(args.repeat):
                for name, module in codes:
                    times[name].append(_timings(module, m1, areas, pool))
            for name, _ in codes:
                t = np.array(times[name]) * 1e3
                cells = [f"{t[:, k].min():7.0f} ({np.median(t[:, k]):5.0f})" for k in (0, 1)]
                print(f"{name:10s} {side:4d}^2 {cells[0]:>18s} {cells[1]:>18s}")
            if len(codes) > 1:
                print(f"{'':10s} flags identical: {same}")


if __name__ == "__main__":
    main()
