"""What the bundled (or a saved) network was trained on, how it trained, and its calibration.

Prints the recipe, the validation history recorded during training, the
MC-dropout calibration factors, and the 1-sigma coverage on a *fresh* set of
held-out synthetic galaxies (other seeds than those used for calibration),
before and after calibration.

Run: ``python benchmarks/pretrained_report.py [--network PATH] [--n 1024]``.
"""

import argparse
import json

import numpy as np
import torch

from astrokin.fitting import NeuralKinematicFitter
from astrokin.fitting.pretraining import (
    DEFAULT_RECIPE,
    _generators,
    _mixed_batch,
    _model_from_recipe,
    calibrate,
)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default=None)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--mc-samples", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fitter = (NeuralKinematicFitter.load(args.network, progress=False) if args.network
              else NeuralKinematicFitter.pretrained(progress=False))
    meta = fitter.metadata
    rec = {**DEFAULT_RECIPE, **{k: v for k, v in (meta.get("recipe_pretraining") or {}).items()
                                if k in DEFAULT_RECIPE}}
    print("recipe:", json.dumps({k: v for k, v in rec.items()
                                 if k not in ("model",)}, default=str))
    if meta.get("training_minutes"):
        print(f"training time: {meta['training_minutes']:.1f} min on {meta.get('device')}")
    hist = meta.get("history") or []
    if hist:
        cols = ["phase", "step", "minutes", "inclination", "pa", "vsini", "r_scale", "r_turn",
                "x_0", "v_sys"]
        print("\nvalidation (mean absolute errors of MC means; 512 synthetic galaxies, half "
              "noisy; r_* as fractions of the half-width, x_0 in arcsec = px)")
        print(" ".join(f"{c:>15s}" for c in cols))
        for h in hist:
            print(" ".join(f"{h[c]:>15.4g}" if isinstance(h.get(c), float) else
                           f"{h.get(c, ''):>15}" for c in cols))
    model = _model_from_recipe(rec)
    batch, truth = _mixed_batch(_generators(model, rec, 4242), rec,
                                np.random.default_rng(4242), args.n)
    scale = fitter.std_scale or {}
    fitter.std_scale = None
    _, before = calibrate(fitter, model, batch, truth, args.mc_samples)
    # coverage after: raw z compared with the stored factors
    summary, names = fitter.mc_summary(batch, args.mc_samples)
    vname = "v_max"
    t = dict(truth)
    t["vsini"] = t[vname] * np.sin(np.deg2rad(t["inclination"]))
    print(f"\n1-sigma coverage on {args.n} fresh held-out synthetic galaxies "
          f"({args.mc_samples} MC samples)")
    print(f"{'parameter':>12s} {'factor':>8s} {'raw':>7s} {'calibrated':>11s}")
    for nm, s in scale.items():
        j = names.index(nm)
        err = summary.mean[:, j] - t[nm]
        if nm == "pa":
            err = np.remainder(err + 180, 360) - 180
        z = np.abs(err) / np.sqrt(np.clip(summary.cov[:, j, j], 1e-30, None))
        print(f"{nm:>12s} {s:8.2f} {before[nm]:7.2f} {np.mean(z <= s):11.2f}")


if __name__ == "__main__":
    main()
