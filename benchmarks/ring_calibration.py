"""The factors on ring fits' errors (``astrokin.fitting.ring_fits.ERROR_SCALE``), measured.

A ring fit's errors come from its likelihood and the rings' prior; on real
discs the rings are not the whole truth (warps, bars, clumps, arms, smearing
made by another code), and the errors are too small by a factor this script
measures. It fits a calibration set of KinMS realistic mocks made with
another seed than the benchmark's (``realistic_mocks.py --seed 8 --n 300
--cubes 0 --out DIR``) with the default ring route (``pretrained()``, an
8-ring `~astrokin.models.TiltedRingDisk`), and prints, per quantity, the 1-sigma
coverage of the errors as they are (divided by the present factors) and the
factor that gives 68.3% (`astrokin.fitting.calibration.coverage_factor`, the
rule every calibration in astrokin uses). Ring speeds are compared with the
true curve at the ring radii from one beam to 0.7 of the disc's extent.

Run: python benchmarks/ring_calibration.py [--cache DIR] [--n 300]
"""

import argparse
import sys
import time
from pathlib import Path

import astropy.units as u
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realistic  # noqa: E402
import realistic_mocks  # noqa: E402

GEOMETRY = ("inclination", "pa", "x_0", "y_0", "v_sys")


def main(argv=None):
    import torch

    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.fitting.calibration import coverage_factor
    from astrokin.fitting.ring_fits import ERROR_SCALE
    from astrokin.models import TiltedRingDisk

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="~/.cache/astrokin-benchmarks/calibration")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--rings", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    designs, mom0, mom1, curves, _, meta = realistic_mocks.load_realistic(args.cache)
    n = len(designs) if args.n is None else min(args.n, len(designs))
    found = [i for i in range(n) if realistic.detected([mom0[i]], [mom1[i]])[0]]
    fitter = NeuralKinematicFitter.pretrained(mc_samples=100, progress=False, seed=0,
                                              keep_samples=False)
    err = {q: [] for q in (*GEOMETRY, "v")}
    std = {q: [] for q in err}
    t = time.perf_counter()
    for start in range(0, len(found), 25):
        idx = found[start:start + 25]
        beams = [(designs[i]["beam"][0] * u.arcsec, designs[i]["beam"][1] * u.arcsec,
                  designs[i]["beam"][2] * u.deg) for i in idx]
        fitter(TiltedRingDisk(n_rings=args.rings), [mom0[i] for i in idx],
               [mom1[i] for i in idx], pixel_scale=1 * u.arcsec, beam=beams)
        table, rings = fitter.fit_info["table"], fitter.fit_info["rings"]
        for j, i in enumerate(idx):
            d = designs[i]
            for q in GEOMETRY:
                e = float(table[q][j].value) - d[q]
                err[q].append((e + 180.0) % 360.0 - 180.0 if q == "pa" else e)
                std[q].append(float(table[f"{q}_std"][j].value) / ERROR_SCALE[q])
            mine = rings[rings["galaxy"] == j] if "galaxy" in rings.colnames else rings
            r = mine["radius"].value
            use = (r >= d["beam"][0]) & (r <= 0.7 * d["extent"])
            truth = np.interp(r[use], *curves[i])
            err["v"] += list(mine["v_rot"].value[use] - truth)
            std["v"] += list(mine["v_rot_std"].value[use] / ERROR_SCALE["v"])
        print(f"  {start + len(idx)}/{len(found)} galaxies", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t
    print(f"Ring-fit error factors on {len(found)} KinMS realistic mocks (seed {meta['seed']}, "
          f"{meta['machine']}), {args.rings} rings, default route; {seconds:.0f} s")
    print(f"{'quantity':12s} {'n':>6s} {'coverage now':>13s} {'factor':>7s} {'after':>6s}")
    factors = {}
    for q in err:
        f, used, before, after = coverage_factor(err[q], std[q])
        factors[q] = round(f, 2)
        print(f"{q:12s} {used:6d} {before:13.2f} {f:7.2f} {after:6.2f}")
    print("ERROR_SCALE =", factors)


if __name__ == "__main__":
    main()
