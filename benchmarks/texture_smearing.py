"""How much clumps and arms bias beam-smeared velocities; whether weighting by the data undoes it.

astrokin's decoder weights the beam-smeared velocity field by the model's own,
axisymmetric intensity. A real disc's mom1 is weighted by its real, clumpy
intensity: within a beam, a bright clump on one side pulls the velocity
towards its own. This script measures that error on discs of the realistic
prior (`astrokin.synthetic.RealisticGenerator`'s profiles and geometry) with
clumps, arms or both (`astrokin.synthetic.texture_field`), each rendered by
brute force (`astrokin.rendering.render_reference`, 4x4 sub-pixels) three ways:

``truth``
    the intensity textured: mom1 weighted by the textured intensity;
``axisymmetric``
    the model's own weighting (what the decoder renders);
``data-weighted``
    the intensity multiplied, before the beam, by the ratio of the observed
    (textured) mom0 to the axisymmetric one, interpolated between pixels: the
    model normalised to the observed intensity, as 3D-Barolo does its model
    cubes, on maps.

It prints the RMS difference of each from the truth in mom1 (km/s, over
pixels above 5% of the peak), overall, per texture and per beam size, beside
the noise of the realistic mocks' velocity maps.

With ``--fits N`` it then fits the first N clumpy or armed galaxies of the
KinMS realistic mocks (``realistic_mocks.py``, the independent simulator)
with and without data weighting (``NeuralKinematicFitter(data_weighted=...)``,
`astrokin.fitting.map_problems.smearing_weights`), exponential disc and
8-ring disc, and prints the median errors as ``realistic.py`` measures them.

Run: python benchmarks/texture_smearing.py [--n 48] [--fits 60]
"""

import argparse
import time

import astropy.units as u
import numpy as np
from scipy import ndimage

from astrokin.models import disc_coordinates
from astrokin.rendering import render_reference
from astrokin.synthetic import TEXTURES, RealisticGenerator, texture_field

KMS = u.km / u.s
OVERSAMPLE = 4
#: Richardson-Lucy steps of the data weights.
ITERATIONS = 3
SHAPE = (64, 64)


def _pixel_field(ratio):
    """A callable of sky offsets (arcsec) interpolating a pixel map (1-arcsec pixels)."""
    ny, nx = ratio.shape

    def field(x, y):
        cols = x + (nx - 1) / 2
        rows = y + (ny - 1) / 2
        return ndimage.map_coordinates(ratio, [rows, cols], order=1, mode="nearest")

    return field


def measure(n, seed):
    gals = RealisticGenerator(seed=seed, noise_fraction=0.0, texture_fraction=0.0).draw(n)
    rng = np.random.default_rng(seed + 1)
    rows = []
    for i in range(n):
        model = gals.model(i)
        p = gals.params[i]
        beam = gals.beam(i)
        kind = TEXTURES[i % len(TEXTURES)]

        def texture(x, y, kind=kind, p=p, fwhm=float(beam[0].value)):
            # Called once, by the render of the truth.
            major, minor = disc_coordinates(np, x - p["x_0"].value, y - p["y_0"].value,
                                            p["pa"].value, p["inclination"].value)
            return texture_field(major, minor, p["r_outer"].value, fwhm, kind, rng)

        t_m0, t_m1 = render_reference(model, SHAPE, 1 * u.arcsec, beam=beam,
                                      oversample=OVERSAMPLE, texture=texture)
        a_m0, a_m1 = render_reference(model, SHAPE, 1 * u.arcsec, beam=beam,
                                      oversample=OVERSAMPLE)
        keep = t_m0 > 0.05 * t_m0.max()
        row = {"texture": kind, "beam_px": float(beam[0].value),
               "vsini": max(float(np.max(np.abs(t_m1[keep] - p["v_sys"].value))), 1.0),
               "axisymmetric": float(np.sqrt(np.mean((a_m1 - t_m1)[keep] ** 2)))}
        weights, m0 = np.ones(SHAPE), a_m0
        for it in range(1, ITERATIONS + 1):
            # Richardson-Lucy: the weights times the ratio of the observed mom0 to
            # the weighted model's (one step: the observed over the model's own).
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(m0 > 1e-3 * m0.max(), t_m0 / m0, 1.0)
            weights = np.clip(weights * np.nan_to_num(ratio, nan=1.0), 0.05, 20.0)
            m0, w_m1 = render_reference(model, SHAPE, 1 * u.arcsec, beam=beam,
                                        oversample=OVERSAMPLE, texture=_pixel_field(weights))
            row[f"weighted {it}"] = float(np.sqrt(np.mean((w_m1 - t_m1)[keep] ** 2)))
        rows.append(row)
    return rows


def report(rows, seconds):
    methods = ["axisymmetric"] + [f"weighted {it}" for it in range(1, ITERATIONS + 1)]

    def line(label, sel):
        v = np.array([r["vsini"] for r in rows])[sel]
        cells = []
        for m in methods:
            e = np.array([r[m] for r in rows])[sel]
            cells.append(f"{np.median(e):7.2f} {np.mean(e):6.2f} {np.median(e / v) * 100:5.1f}%")
        print(f"{label:16s} {sel.sum():4d} " + "  ".join(cells))

    print(f"mom1 RMS error against the textured truth (km/s; pixels above 5% of the peak): "
          f"median, mean, median / (V sin i); {len(rows)} galaxies, {seconds:.0f} s")
    print("'weighted k': data-weighted after k Richardson-Lucy steps (1: observed / model mom0)")
    print(f"{'sample':16s} {'n':>4s} " + "  ".join(f"{m:>20s}" for m in methods))
    kinds = np.array([r["texture"] for r in rows])
    beams = np.array([r["beam_px"] for r in rows])
    line("all", np.ones(len(rows), bool))
    for k in TEXTURES:
        line(k, kinds == k)
    line("beam 2-4 px", beams < 4)
    line("beam 4-6 px", beams >= 4)
    print("For scale: the velocity noise of the realistic mocks' mom1 maps is 3-10 km/s "
          "per pixel (S/N 3-20 per channel).")


def fit_kinms(n_fits):
    """Fits of textured KinMS mocks with and without data weighting: a table."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import realistic  # noqa: E402
    import realistic_mocks  # noqa: E402

    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import TiltedRingDisk

    torch.set_num_threads(1)
    designs, mom0, mom1, curves, _, _ = realistic_mocks.load_realistic(None)
    found = np.array(realistic.detected(mom0, mom1))
    idx = [int(i) for i in np.flatnonzero(found)
           if designs[i]["texture"] in ("clumpy", "arms")][:n_fits]
    sel = np.zeros(len(designs), bool)
    sel[idx] = True
    print(f"\nKinMS realistic mocks with clumps or arms: {len(idx)} galaxies; median errors "
          "(deg, deg, arcsec, km/s, km/s RMS); seconds per galaxy (exponential + rings, "
          "1 thread)")
    print(f"{'fit':34s} {'incl':>6s} {'PA':>6s} {'centre':>6s} {'v_sys':>6s} {'RC':>6s} "
          f"{'s/gal':>6s}")
    for weighted in (False, True):
        fitter = NeuralKinematicFitter.pretrained(mc_samples=100, progress=False, seed=0,
                                                  keep_samples=False, data_weighted=weighted)
        out = {m: {k: [None] * len(designs) for k in ("values", "stds", "rc")}
               for m in ("exponential", "rings")}
        t = time.perf_counter()
        for start in range(0, len(idx), 20):
            rows = idx[start:start + 20]
            beams = [(designs[i]["beam"][0] * u.arcsec, designs[i]["beam"][1] * u.arcsec,
                      designs[i]["beam"][2] * u.deg) for i in rows]
            fitted = fitter(TiltedRingDisk(n_rings=8), [mom0[i] for i in rows],
                            [mom1[i] for i in rows], pixel_scale=1 * u.arcsec, beam=beams)
            start_model, start_info = fitter.fit_info["start_fit"]
            realistic._store(out["exponential"], rows, start_model, start_info, designs)
            realistic._store(out["rings"], rows, fitted, fitter.fit_info, designs)
        seconds = (time.perf_counter() - t) / max(len(idx), 1)
        for m, o in out.items():
            e = realistic.errors(designs, curves, o["values"], o["rc"])
            cells = " ".join(f"{np.nanmedian(e[q][sel]):6.2f}" for q in realistic.QUANTITIES)
            label = f"{m}, {'data-weighted' if weighted else 'axisymmetric'} smearing"
            print(f"{label:34s} {cells} {seconds:6.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fits", type=int, default=0,
                    help="also fit this many textured KinMS mocks with and without weighting")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    rows = measure(args.n, args.seed)
    report(rows, time.perf_counter() - t)
    if args.fits:
        fit_kinms(args.fits)


if __name__ == "__main__":
    main()
