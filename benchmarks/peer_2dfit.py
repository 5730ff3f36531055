"""3D-Barolo's 2DFIT on the benchmark sets, reported like astrokin (the peer comparison).

Runs 2DFIT (``benchmarks/peers/barolo.py``) on the mom1 maps of a cached KinMS
set with the first guesses a user would give it, measured from the maps
themselves:

* centre: the intensity-weighted centroid of mom0 (held fixed, as usual when
  a 2D tilted-ring fit is started from a map);
* systemic velocity: the median of mom1;
* inclination: from the axis ratio of mom0's second moments, arccos(b/a),
  clipped to 20-80 deg;
* position angle: the major axis of mom0's second moments, turned to the side
  where mom1 is above the systemic guess (receding); on the ``paper`` set the
  true PA is given and fixed, as for astrokin;
* rotation speed: the 95th percentile of |mom1 - v_sys| / sin(i).

Free: VROT, INC, VSYS and (hard set) PA. Rings one beam FWHM wide. The ring
medians of INC, PA and VSYS are the fitted values; the rotation-curve error is
the RMS of VROT sin(INC) against the true V(r) sin i at the ring radii between
one beam and 0.8 of the half-width (rings that failed are skipped). 2DFIT has
no asymptotic speed, so there is no V_max sin i row.

Run: ``python benchmarks/peer_2dfit.py --set paper|hard [--n 1000]``.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402
import kinms_sets  # noqa: E402
from peers.barolo import fit_2dfit  # noqa: E402


def user_guess(mom0, mom1):
    """First guesses from the maps, as a user would make them."""
    ny, nx = mom0.shape
    y, x = np.mgrid[:ny, :nx]
    w = np.where(np.isfinite(mom0) & (mom0 > 0), mom0, 0.0)
    tot = w.sum()
    xc, yc = (w * x).sum() / tot, (w * y).sum() / tot
    cxx = (w * (x - xc) ** 2).sum() / tot
    cyy = (w * (y - yc) ** 2).sum() / tot
    cxy = (w * (x - xc) * (y - yc)).sum() / tot
    evals, evecs = np.linalg.eigh([[cxx, cxy], [cxy, cyy]])
    q = np.sqrt(max(evals[0], 1e-12) / max(evals[1], 1e-12))
    inc = float(np.clip(np.degrees(np.arccos(np.clip(q, 0, 1))), 20.0, 80.0))
    ex, ey = evecs[:, 1]
    v_sys = float(np.nanmedian(mom1))
    # Receding side: mom1 above v_sys along +major axis?
    along = (x - xc) * ex + (y - yc) * ey
    good = np.isfinite(mom1)
    if np.nanmean(np.where(good & (along > 0), mom1 - v_sys, np.nan)) < 0:
        ex, ey = -ex, -ey
    pa = float(np.degrees(np.arctan2(-ex, ey)) % 360.0)
    v_rot = float(np.nanpercentile(np.abs(mom1 - v_sys), 95) / np.sin(np.radians(inc)))
    return dict(x_center_pix=xc, y_center_pix=yc, v_sys=v_sys, inclination=inc, pa=pa,
                v_rot=v_rot)


def _child(queue, args):
    try:
        queue.put(fit_2dfit(args[0], args[1], args[2], free=args[3], beam_fwhm_arcsec=args[4]))
    except Exception as err:  # noqa: BLE001 - a failed fit is a result too
        queue.put(f"{type(err).__name__}: {err}")


def _fit_with_timeout(mom1, pixel_scale, guess, free, beam, timeout):
    """2DFIT in a forked process: some maps make BBarolo spin for ever."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, (mom1, pixel_scale, guess, free, beam)))
    proc.start()
    try:
        return queue.get(timeout=timeout)
    except Exception:  # noqa: BLE001 - queue.Empty on timeout
        return f"no result within {timeout:g} s"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="paper")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds before a 2DFIT call is abandoned (counted as failed)")
    args = ap.parse_args(argv)
    import pyBBarolo  # noqa: F401 - load the library once, before the forked fits

    kset = kinms_sets.load_set(args.set, args.cache)
    if args.n is not None:
        kset = kset.subset(np.arange(min(args.n, len(kset))))
    n = len(kset)
    truth = kset.truth
    fixed_pa = args.set == "paper"
    free = "VROT INC VSYS" if fixed_pa else "VROT INC PA VSYS"
    fit = {k: np.full(n, np.nan) for k in ("inclination", "pa", "v_sys", "x_0", "y_0")}
    rc_err = np.full(n, np.nan)
    hw, ps = kset.half_width, kset.pixel_scale
    t_fit = 0.0
    failed = 0
    t0 = time.perf_counter()
    for i in range(n):
        mom0, mom1 = kset.mom0[i], kset.mom1[i]
        g = user_guess(mom0, mom1)
        if fixed_pa:
            g["pa"] = float(truth["pa"][i])
        beam = float(np.sqrt(kset.beam[i, 0] * kset.beam[i, 1]))
        res = _fit_with_timeout(mom1, float(ps[i]), g, free, beam, args.timeout)
        if isinstance(res, str):
            print(f"galaxy {i}: 2DFIT failed ({res})")
            failed += 1
            continue
        t_fit += res["wall_time_s"]
        ny, nx = mom0.shape
        fit["inclination"][i] = res["inclination"]
        fit["pa"][i] = res["pa"]
        fit["v_sys"][i] = res["v_sys"]
        fit["x_0"][i] = (g["x_center_pix"] - (nx - 1) / 2) * ps[i]
        fit["y_0"][i] = (g["y_center_pix"] - (ny - 1) / 2) * ps[i]
        r = np.asarray(res["radii"])
        vproj = np.asarray(res["vrot"]) * np.sin(np.radians(res["ring_inclination"]))
        if r.size:
            sel = (r >= beam) & (r <= 0.8 * hw[i])
            if sel.any():
                vt = accuracy.arctan_curve(r[sel][None, :], truth["v_max"][i:i + 1],
                                           truth["r_turn"][i:i + 1])[0]
                vt = vt * np.sin(np.radians(truth["inclination"][i]))
                rc_err[i] = float(np.sqrt(np.mean((vproj[sel] - vt) ** 2)))
    wall = time.perf_counter() - t0
    # No V_max sin i row: 2DFIT measures VROT ring by ring and has no asymptote;
    # its rotation curve is compared in the second table instead.
    names = ["inclination", "v_sys", "x_0", "y_0"] + ([] if fixed_pa else ["pa"])
    true = accuracy.report_units({k: truth[k] for k in names}, hw, ps)
    fitted = accuracy.report_units({k: fit[k] for k in names}, hw, ps)
    flagged = accuracy.resolution_flag(truth, kset.beam)
    selections = {"all": np.ones(n, bool), "unflagged": ~flagged}
    print(f"3D-Barolo 2DFIT on the {args.set} set: {n} galaxies, free = {free}; "
          f"{np.isfinite(fit['inclination']).sum()} fits converged, {failed} failed or "
          f"abandoned after {args.timeout:g} s")
    print(accuracy.format_table(
        accuracy.error_table(true, fitted, names=names, selections=selections),
        ["quantity", "unit", "sample", "n", "mean_abs", "median_abs", "rms", "bias", "paper"],
        title="Errors (fitted - true); centre = the mom0-centroid guess (held fixed)"))
    rows = []
    for sample, sel in selections.items():
        e = rc_err[sel]
        e = e[np.isfinite(e)]
        vs = (truth["v_max"] * np.sin(np.radians(truth["inclination"])))[sel]
        rows.append({"curve": "V(r) sin i", "sample": sample, "n": int(e.size),
                     "mean RMS": float(np.mean(e)), "median RMS": float(np.median(e)),
                     "RMS of RMS": float(np.sqrt(np.mean(e ** 2))),
                     "median RMS / V sin i": float(np.nanmedian(rc_err[sel] / vs))})
    print()
    print(accuracy.format_table(rows, title="Rotation-curve RMS error (km/s) at ring radii "
                                            "from 1 beam to 0.8 half-width, per galaxy"))
    done = max(n - failed, 1)
    print(f"\ntime per galaxy: {1e3 * t_fit / done:.1f} ms in 2DFIT calls that returned "
          f"(median over the set; {1e3 * wall / n:.1f} ms wall per galaxy with guesses and "
          f"process start), 1 thread")


if __name__ == "__main__":
    main()
