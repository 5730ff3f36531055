"""Velocity dispersion from KinMS cubes: astrokin (cube straight in) against 3D-Barolo 3DFIT.

Each galaxy is an exponential disc with an arctan rotation curve made by
KinMS (an independent simulator: its clouds carry the dispersion as random
velocities), with an intrinsic dispersion that is constant or declines with
radius, ``sigma(r) = s_out + (s_in - s_out) exp(-r / r_d)``, between 5 and 60
km/s; round beams of 2-5 pixels, 1-arcsec pixels, 4 km/s channels, noise
convolved with the beam at a peak S/N per channel of 5-30.

astrokin fits the cube in one call, ``fitter(TiltedRingDisk(), hdu)``: the
moments and their noise maps come from `astrokin.cubes.moment_maps` (its
smooth-and-clip mask), the geometry and rotation curve from mom0 and mom1,
the dispersion ring by ring from mom2 with the beam smearing modelled
(`astrokin.fitting.dispersion`). 3DFIT fits the same cube with the same
first guesses a user would give it (FREE = VROT VDISP INC PA VSYS, its own
SEARCH mask), forked with a timeout.

The dispersion is compared at 0.5, 1, 1.5 and 2 disc scale lengths (where
there is emission above 5% of the peak along the major axis). A point counts
for the target when the peak S/N per channel is at least 10, sigma is at
least 10 km/s and the beam smears the rotation by more than sigma there (the
smearing of a model without dispersion, at that radius on the major axis).

Usage::

    python benchmarks/dispersion.py --n 20 --out benchmarks/results/dispersion.txt

Needs ``kinms``; 3DFIT needs ``pybbarolo`` (see benchmarks/README.md);
``--no-3dfit`` leaves it out.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

KMS = "km/s"
N_PIX = 64
DV = 4.0
FACTORS = (0.5, 1.0, 1.5, 2.0)


def draw(rng, i):
    """One galaxy's design."""
    declining = bool(i % 2)
    s_out = rng.uniform(5.0, 30.0)
    s_in = rng.uniform(s_out + 10.0, 60.0) if declining else s_out
    return dict(inclination=float(rng.uniform(25.0, 80.0)), pa=float(rng.uniform(0, 360)),
                r_scale=float(rng.uniform(4.0, 8.0)), r_turn=float(rng.uniform(1.0, 4.0)),
                v_max=float(rng.uniform(120.0, 280.0)), beam=float(rng.uniform(2.0, 5.0)),
                s_in=float(s_in), s_out=float(s_out), r_d=float(rng.uniform(3.0, 8.0)),
                snr=float(np.exp(rng.uniform(np.log(5.0), np.log(30.0)))),
                declining=declining)


def sigma_of(d, r):
    return d["s_out"] + (d["s_in"] - d["s_out"]) * np.exp(-np.asarray(r) / d["r_d"])


def make_cube(d, seed, n_clouds=400_000):
    """A noisy KinMS cube ``(nv, ny, nx)`` in astrokin's orientation, and its velocities."""
    from kinms import KinMS
    from kinms_sets import convolve_channels, gaussian_beam_kernel

    radius = np.arange(0.0, 2.0 * N_PIX, 0.02)
    sigma = sigma_of(d, radius)
    nv = int(np.ceil((2.0 * (d["v_max"] + 4 * sigma.max()) + 40.0) / DV / 2.0)) * 2
    kin = KinMS(N_PIX, N_PIX, nv * DV, 1.0, DV, [d["beam"], d["beam"], 0.0],
                nSamps=int(n_clouds), seed=[seed, seed + 1, seed + 2, seed + 3])
    cube = kin.model_cube(d["inclination"], d["pa"], gasSigma=sigma,
                          sbProf=np.exp(-radius / d["r_scale"]), sbRad=radius,
                          velProf=2 / np.pi * d["v_max"] * np.arctan(radius / d["r_turn"]),
                          velRad=radius)
    cube = np.transpose(cube, (2, 1, 0))
    v = (np.arange(nv) - nv / 2) * DV
    rng = np.random.default_rng(seed)
    kernel = gaussian_beam_kernel(d["beam"], d["beam"], 0.0, peak_one=False)
    noise = convolve_channels(rng.standard_normal(cube.shape), kernel)
    noise *= (cube.max() / d["snr"]) / noise.std()
    return cube + noise, v


def cube_hdu(cube, v, beam):
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(cube, dtype=np.float32))
    n = cube.shape[-1]
    for k, (ctype, val, delt, pix, unit) in enumerate(
            [("RA---SIN", 180.0, -1 / 3600, (n + 1) / 2, "deg"),
             ("DEC--SIN", 0.0, 1 / 3600, (n + 1) / 2, "deg"),
             ("VRAD", float(v[0]), DV, 1.0, "km/s")], start=1):
        hdu.header.update({f"CTYPE{k}": ctype, f"CRVAL{k}": val, f"CDELT{k}": delt,
                           f"CRPIX{k}": pix, f"CUNIT{k}": unit})
    hdu.header.update(BUNIT="Jy/beam", BMAJ=beam / 3600, BMIN=beam / 3600, BPA=0.0)
    return hdu


def eval_points(d, mom0_true):
    """Radii (arcsec) where sigma is compared: multiples of r_scale with emission."""
    ny, nx = mom0_true.shape
    t = np.radians(d["pa"])
    out = []
    for f in FACTORS:
        r = f * d["r_scale"]
        # KinMS's centre is pixel n/2; the major axis runs along (-sin PA, cos PA).
        x, y = N_PIX / 2 - r * np.sin(t), N_PIX / 2 + r * np.cos(t)
        i, j = int(round(y)), int(round(x))
        if 0 <= i < ny and 0 <= j < nx and mom0_true[i, j] > 0.05 * mom0_true.max():
            out.append(r)
    return np.array(out)


def smearing(d, radii):
    """The beam-smearing width (km/s) of the rotation, on the major axis at ``radii``."""
    import astropy.units as u

    from astrokin.models import ExponentialArctanDisk

    disk = ExponentialArctanDisk(inclination=d["inclination"] * u.deg, pa=d["pa"] * u.deg,
                                 r_scale=d["r_scale"] * u.arcsec, r_turn=d["r_turn"] * u.arcsec,
                                 v_max=d["v_max"] * u.km / u.s, v_disp=0 * u.km / u.s,
                                 x_0=0.5 * u.arcsec, y_0=0.5 * u.arcsec)
    _, _, m2 = disk.render((N_PIX, N_PIX), 1 * u.arcsec, beam=d["beam"] * u.arcsec,
                           moment2=True)
    t = np.radians(d["pa"])
    out = []
    for r in radii:
        x, y = N_PIX / 2 - r * np.sin(t), N_PIX / 2 + r * np.cos(t)
        out.append(float(m2.value[int(round(y)), int(round(x))]))
    return np.array(out)


def run_astrokin(fitter, hdu, d):
    from astrokin.models import TiltedRingDisk

    t0 = time.perf_counter()
    fitted = fitter(TiltedRingDisk(), hdu)
    seconds = time.perf_counter() - t0
    return fitted, seconds


def run_3dfit(cube, v, guess, beam, timeout):
    """3DFIT on one cube, forked with a timeout (`realistic._with_timeout`)."""
    from realistic import _with_timeout

    return _with_timeout("3dfit", (cube, v, guess, (beam, beam, 0.0)), timeout)


def summarise(rows, label, lines):
    rows = [r for r in rows if np.isfinite(r["err"])]
    if not rows:
        lines.append(f"{label:<44s} (no points)")
        return
    err = np.array([r["err"] for r in rows])
    scatter = 1.4826 * np.median(np.abs(err - np.median(err)))
    lines.append(f"{label:<44s} {len(err):4d} {np.median(err):+7.2f} "
                 f"{np.median(np.abs(err)):7.2f} {scatter:7.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-3dfit", action="store_true")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    from machine import cpu_name
    from peer_2dfit import user_guess

    from astrokin.fitting import NeuralKinematicFitter

    rng = np.random.default_rng(args.seed)
    fitter = NeuralKinematicFitter.pretrained(mc_samples=200, seed=0)
    if not args.no_3dfit:
        import pyBBarolo  # noqa: F401 - load once, before forking
    points = {"astrokin": [], "3dfit": []}
    times = {"astrokin": [], "3dfit": []}
    failed = 0
    for i in range(args.n):
        d = draw(rng, i)
        cube, v = make_cube(d, seed=1000 + i)
        clean_mom0 = np.clip(cube, 0, None).sum(axis=0)
        radii = eval_points(d, clean_mom0)
        if radii.size == 0:
            continue
        smear = smearing(d, radii)
        truth = sigma_of(d, radii)
        fitted, seconds = run_astrokin(fitter, cube_hdu(cube, v, d["beam"]), d)
        times["astrokin"].append(seconds)
        band = fitted.dispersion_curve(radii, band=True)
        ours, std = band["v_disp"].value, band["v_disp_std"].value
        for r, t, s, o, e in zip(radii, truth, smear, ours, std, strict=True):
            points["astrokin"].append(dict(r=r, truth=t, smear=s, snr=d["snr"], err=o - t,
                                           std=e))
        if not args.no_3dfit:
            table = fitter.fit_info["table"]
            mom0 = clean_mom0
            mom1 = np.full(mom0.shape, np.nan)
            with np.errstate(all="ignore"):
                mom1 = (np.clip(cube, 0, None) * v[:, None, None]).sum(0) / mom0
            guess = user_guess(np.where(mom0 > 0.05 * mom0.max(), mom0, 0.0),
                               np.where(mom0 > 0.05 * mom0.max(), mom1, np.nan))
            del table
            res = run_3dfit(cube, v, guess, d["beam"], args.timeout)
            if isinstance(res, str):
                failed += 1
                peer = np.full(radii.size, np.nan)
            else:
                times["3dfit"].append(res["wall_time_s"])
                rr, vd = np.asarray(res["radii"]), np.asarray(res["vdisp"])
                inside = (radii >= rr.min()) & (radii <= rr.max()) if rr.size > 1 else radii < 0
                peer = np.where(inside, np.interp(radii, rr, vd) if rr.size > 1 else np.nan,
                                np.nan)
            for r, t, s, o in zip(radii, truth, smear, peer, strict=True):
                points["3dfit"].append(dict(r=r, truth=t, smear=s, snr=d["snr"], err=o - t))
        print(f"galaxy {i}: sigma {d['s_in']:.0f}->{d['s_out']:.0f}, S/N {d['snr']:.0f}, "
              f"beam {d['beam']:.1f}: astrokin {np.round(ours - truth, 1)}", file=sys.stderr,
              flush=True)

    lines = ["Velocity dispersion from KinMS cubes (benchmarks/dispersion.py)",
             f"{cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads",
             f"{args.n} galaxies (seed {args.seed}), half constant and half declining sigma "
             "5-60 km/s, beams 2-5 px, peak S/N per channel 5-30, 4 km/s channels.",
             "Error of sigma (fitted - true) at 0.5-2 scale lengths: n points, median "
             "(bias), median |error|, scatter (1.4826 MAD), km/s.", ""]
    for method in ("astrokin", "3dfit"):
        if method == "3dfit" and args.no_3dfit:
            continue
        name = "astrokin (cube in, rings)" if method == "astrokin" else "3D-Barolo 3DFIT VDISP"
        pts = points[method]
        target = [p for p in pts if p["snr"] >= 10 and p["truth"] >= 10 and p["smear"] > p["truth"]]
        summarise(pts, f"{name}: all points", lines)
        summarise(target, f"{name}: target (S/N>=10, sigma>=10, smear>sigma)", lines)
        for lo, hi in ((5, 10), (10, 20), (20, 60.1)):
            summarise([p for p in pts if lo <= p["truth"] < hi],
                      f"{name}: sigma {lo}-{hi:g} km/s", lines)
        if method == "astrokin":
            ok = [p for p in pts if np.isfinite(p["err"]) and np.isfinite(p["std"])]
            inside = np.mean([abs(p["err"]) <= p["std"] for p in ok]) if ok else np.nan
            lines.append(f"{name}: 1-sigma errors cover {100 * inside:.0f}% of the points "
                         f"(median error bar {np.median([p['std'] for p in ok]):.2f} km/s)")
        t = np.array(times[method])
        if t.size:
            lines.append(f"{name}: {np.median(t):.2f} s per galaxy (median), {t.size} fitted")
        lines.append("")
    if not args.no_3dfit:
        lines.append(f"3DFIT failures or timeouts ({args.timeout:g} s): {failed}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
