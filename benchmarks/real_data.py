"""Fit the real observations in ``../shared/data`` and print a table of the results.

Five WISDOM ALMA CO(2-1) galaxies (moment maps as published) and the CARMA
CO(1-0) cube of NGC 4324 (moment maps made by `astrokin.cubes.moment_maps`),
each fitted five ways:

``blind``
    The bundled pre-trained network, one forward pass and MC dropout
    (``refine=False``).
``blind+refine``
    The same, refined to the galaxy's own maps (the fitter's default; the
    cube's moments come with their noise maps).
``solo+refine``
    The paper's solo mode (``--scratch-epochs`` epochs, fresh network), then
    refinement (from its guess, the bundled network's and the moments').
``solo-tuned``
    Solo mode starting from the bundled weights (``pretrained(mode='solo')``),
    ``--tune-epochs`` epochs on the galaxy alone.
``solo-scratch``
    The paper's solo mode: a fresh network, ``--scratch-epochs`` epochs at a
    learning rate of 1e-3, on the galaxy alone.
``rings+refine``
    A `~astrokin.models.TiltedRingDisk` of ``--rings`` rings, started from
    ``blind+refine`` (`astrokin.fitting.ring_fits`); ``best`` is the model
    with the lower BIC of the two, ``v_max`` the outermost ring's speed. The
    rings also start from the bundled ring network's prediction.
``ring-net``
    The bundled ring network alone (``pretrained(model=TiltedRingDisk())``,
    ``refine=False``): a 10-ring disc, blind.

The reference PA is the independent point-symmetry kinematic PA given in the
data README (mod 180). Usage::

    python benchmarks/real_data.py [--data ../shared/data] [--threads 2] [--modes a,b]
"""

import argparse
import pathlib
import time
import warnings

import numpy as np
from astropy import units as u
from machine import cpu_name  # benchmarks/machine.py, beside this script

GALAXIES = ["NGC0383", "NGC0524", "NGC1387", "NGC4697", "FRL49", "NGC4324"]
REFERENCE_PA = {"NGC0383": 141.0, "NGC1387": 65.0, "NGC4697": 66.0, "NGC4324": 65.0}


def _maps(data, name):
    from astrokin.cubes import moment_maps

    if name == "NGC4324":
        m0, m1, e0, e1 = moment_maps(data / "cubes" / "NGC4324_CO10.fits", errors=True)
        return (m0, m1), {"mom0_err": e0, "mom1_err": e1}
    return (data / "wisdom" / f"{name}_mom0.fits", data / "wisdom" / f"{name}_mom1.fits"), {}


def main(argv=None):
    """Run the fits and print the table."""
    import torch

    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk, TiltedRingDisk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = pathlib.Path(__file__).resolve().parents[1]
    parser.add_argument("--data", default=str(here.parent / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tune-epochs", type=int, default=100)
    parser.add_argument("--scratch-epochs", type=int, default=300)
    parser.add_argument("--rings", type=int, default=8)
    parser.add_argument("--modes", default=None,
                        help="comma-separated modes to run (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = pathlib.Path(args.data)
    fitters = {
        "blind": lambda: NeuralKinematicFitter.pretrained(mc_samples=1000, seed=0,
                                                          progress=False, refine=False),
        "blind+refine": lambda: NeuralKinematicFitter.pretrained(mc_samples=1000, seed=0,
                                                                 progress=False),
        "solo+refine": lambda: NeuralKinematicFitter(
            mode="solo", epochs=args.scratch_epochs, learning_rate=1e-3, mc_samples=1000,
            seed=0, progress=False),
        "solo-tuned": lambda: NeuralKinematicFitter.pretrained(
            mode="solo", epochs=args.tune_epochs, mc_samples=1000, seed=0, progress=False,
            refine=False),
        "solo-scratch": lambda: NeuralKinematicFitter(
            mode="solo", epochs=args.scratch_epochs, learning_rate=1e-3, mc_samples=1000,
            seed=0, progress=False, refine=False),
        "rings+refine": lambda: NeuralKinematicFitter.pretrained(mc_samples=1000, seed=0,
                                                                 progress=False),
        "ring-net": lambda: NeuralKinematicFitter.pretrained(
            model=TiltedRingDisk(), mc_samples=1000, seed=0, progress=False, refine=False),
    }
    if args.modes:
        fitters = {k: fitters[k] for k in args.modes.split(",")}
    print(f"# astrokin on real observations ({cpu_name()}, "
          f"{args.threads} torch threads, torch {torch.__version__})")
    print(f"# solo-tuned: {args.tune_epochs} epochs from the bundled weights; solo-scratch: "
          f"{args.scratch_epochs} epochs, lr 1e-3; 1000 MC samples; PA ref.: data README (mod 180)")
    header = (f"{'galaxy':8s} {'mode':12s} {'inc (deg)':>12s} {'PA (deg)':>13s} {'PA ref':>6s} "
              f"{'dPA':>5s} {'v_max (km/s)':>13s} {'v_sys (km/s)':>13s} {'r_scale (as)':>12s} "
              f"{'rejected':>8s} {'at bound':>9s} {'structure':>9s} {'best (BIC)':>21s} "
              f"{'time (s)':>8s}")
    print(header)
    print("-" * len(header))
    for name in GALAXIES:
        maps, noise = _maps(data, name)
        for mode, make in fitters.items():
            fitter = make()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = (TiltedRingDisk(n_rings=args.rings) if mode == "rings+refine"
                         else TiltedRingDisk() if mode == "ring-net" else ExponentialArctanDisk())
                fitter(model, *maps, **(noise if fitter.refine else {}))
            dt = time.perf_counter() - t0
            t = fitter.fit_info["table"]

            if mode in ("rings+refine", "ring-net"):
                last = args.rings if mode == "rings+refine" else type(model).n_rings
                t["v_max"], t["v_max_std"] = t[f"v_{last}"], t[f"v_{last}_std"]

            def fmt(col, t=t):
                if col not in t.colnames:
                    return "-"
                return f"{t[col][0].value:6.1f}±{t[col + '_std'][0].value:<5.1f}"

            pa = t["pa"][0].to_value(u.deg)
            ref = REFERENCE_PA.get(name)
            dpa = "" if ref is None else f"{abs((pa - ref + 90) % 180 - 90):5.1f}"
            structure = (str(bool(t["mom1_structure"][0])) if "mom1_structure" in t.colnames
                         else "-")
            print(f"{name:8s} {mode:12s} {fmt('inclination'):>12s} {fmt('pa'):>13s} "
                  f"{'' if ref is None else f'{ref:.0f}':>6s} {dpa:>5s} {fmt('v_max'):>13s} "
                  f"{fmt('v_sys'):>13s} {fmt('r_scale'):>12s} {t['n_rejected'][0]:8d} "
                  f"{t['at_bound'][0] or '-':>9s} {structure:>9s} "
                  f"{str(t['best_model'][0]) if 'best_model' in t.colnames else '-':>21s} "
                  f"{dt:8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
