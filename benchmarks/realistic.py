"""astrokin against 3D-Barolo on realistic mock galaxies (``realistic_mocks.py``).

Methods, on the same galaxies (the set of ``realistic_mocks.py``: rings,
holes, truncated discs, clumps, arms, bars, warps, bulge peaks, declining
curves, S/N 3-20 per channel, source-finder masks):

``network``
    the bundled network alone (``refine=False``), ExponentialArctanDisk;
``exponential``
    the network, then refinement, ExponentialArctanDisk (the default fit);
``rings``
    a TiltedRingDisk of ``--rings`` rings, started from ``exponential``;
``best``
    per galaxy, the lower BIC of ``exponential`` and ``rings``
    (``best_model`` of the ring fit: what a user gets without choosing);
``ring network``
    the bundled ring network alone (``refine=False``), TiltedRingDisk of 10
    rings, trained on `astrokin.synthetic.RealisticGenerator` galaxies;
``rings from ring net``
    the ring network, then ring refinement from its prediction alone (no
    parametric fit, so no ``best_model``);
``2DFIT``
    3D-Barolo's 2DFIT on the mom1 map (``peers/barolo.py``; free VROT INC PA
    VSYS, centre fixed at the mom0 centroid, rings one beam wide), with the
    first guesses of ``peer_2dfit.user_guess``;
``3DFIT``
    3D-Barolo's 3DFIT on the noisy cube of the first ``--cubes`` galaxies
    (free VROT VDISP INC PA VSYS, its SEARCH mask, two stages), same guesses.

Errors: inclination, PA, centre (distance, arcsec), v_sys, and the RMS of the
projected rotation curve ``V(r) sin i`` against the truth's (inner-disc
inclination) at 20 radii from one beam FWHM to 0.7 of the disc's extent;
medians and means, overall and per family; 1-sigma coverage of astrokin's
errors; time per galaxy (one process, one thread each).

Run in parts (they can run side by side) and report::

    python benchmarks/realistic.py astrokin
    python benchmarks/realistic.py 2dfit
    python benchmarks/realistic.py 3dfit
    python benchmarks/realistic.py report      # the tables, from the saved parts
"""

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realistic_mocks  # noqa: E402

QUANTITIES = ("inclination", "pa", "centre", "v_sys", "rc")
ASTROKIN_METHODS = ("network", "exponential", "rings", "best", "ring network",
                    "rings from ring net")
N_RADII = 20


#: A galaxy counts as detected (and is fitted) with at least this many mom1 pixels.
MIN_PIXELS = 20


def detected(mom0, mom1):
    """Whether the source finder found the galaxy (maps to fit)."""
    return [bool(np.isfinite(b).sum() >= MIN_PIXELS and np.any(a > 0))
            for a, b in zip(mom0, mom1, strict=True)]


def eval_radii(design):
    """The radii (arcsec) where rotation curves are compared."""
    return np.linspace(design["beam"][0], 0.7 * design["extent"], N_RADII)


def true_projected(design, curve):
    r = eval_radii(design)
    return np.interp(r, *curve) * np.sin(np.radians(design["inclination"]))


def _part_path(out, part):
    return Path(out).expanduser() / f"realistic_{part}.json"


# ----------------------------------------------------------------------
def run_astrokin(designs, mom0, mom1, args):
    import astropy.units as u
    import torch

    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk, TiltedRingDisk

    torch.set_num_threads(1)
    n = len(designs)
    out = {m: {k: [None] * n for k in ("values", "stds", "rc")} for m in ASTROKIN_METHODS}
    out["seconds"] = {"network": 0.0, "exponential+rings": 0.0, "ring network": 0.0,
                      "rings from ring net": 0.0}
    ring_plain = NeuralKinematicFitter.pretrained(model=TiltedRingDisk(), refine=False,
                                                  mc_samples=200, progress=False, seed=0)
    ring_refining = NeuralKinematicFitter.pretrained(model=TiltedRingDisk(), mc_samples=200,
                                                     progress=False, seed=0,
                                                     keep_samples=False)
    plain = NeuralKinematicFitter.pretrained(refine=False, mc_samples=200, progress=False,
                                             seed=0)
    refining = NeuralKinematicFitter.pretrained(mc_samples=200, progress=False, seed=0,
                                                keep_samples=False)
    model = ExponentialArctanDisk(bounds={"v_max": (20, 3000)})
    rings = TiltedRingDisk(n_rings=args.rings)
    step = args.batch
    found = np.flatnonzero(detected(mom0, mom1))
    for start in range(0, len(found), step):
        idx = [int(i) for i in found[start:start + step]]
        beams = [(b[0] * u.arcsec, b[1] * u.arcsec, b[2] * u.deg)
                 for b in (designs[i]["beam"] for i in idx)]
        kw = dict(pixel_scale=1 * u.arcsec, beam=beams)
        maps0, maps1 = [mom0[i] for i in idx], [mom1[i] for i in idx]
        t = time.perf_counter()
        fitted = plain(model, maps0, maps1, **kw)
        out["seconds"]["network"] += time.perf_counter() - t
        _store(out["network"], idx, fitted, plain.fit_info, designs)
        t = time.perf_counter()
        fitted = refining(rings, maps0, maps1, **kw)
        out["seconds"]["exponential+rings"] += time.perf_counter() - t
        info = refining.fit_info
        start_model, start_info = info["start_fit"]
        _store(out["exponential"], idx, start_model, start_info, designs)
        _store(out["rings"], idx, fitted, info, designs)
        best = np.asarray(info["table"]["best_model"])
        for j, i in enumerate(idx):
            pick = "rings" if best[j] != "ExponentialArctanDisk" else "exponential"
            for k in ("values", "stds", "rc"):
                out["best"][k][i] = out[pick][k][i]
        for label, fitter, ring_model in (("ring network", ring_plain, TiltedRingDisk()),
                                          ("rings from ring net", ring_refining, rings)):
            t = time.perf_counter()
            fitted = fitter(ring_model, maps0, maps1, **kw)
            out["seconds"][label] += time.perf_counter() - t
            _store(out[label], idx, fitted, fitter.fit_info, designs)
        print(f"  astrokin: {idx[-1] + 1}/{n} galaxies", file=sys.stderr, flush=True)
    return out


def _store(out, idx, fitted, info, designs):
    table = info["table"]
    cls = type(fitted)
    values = fitted.canonical_values()
    for j, i in enumerate(idx):
        d = designs[i]
        out["values"][i] = {k: float(table[k][j].value) for k in
                            ("inclination", "pa", "x_0", "y_0", "v_sys")}
        out["stds"][i] = {k: float(table[f"{k}_std"][j].value) for k in
                          ("inclination", "pa", "x_0", "y_0", "v_sys")}
        args = [np.ravel(values[nm])[j] for nm in cls.velocity_parameters]
        v = cls.rotation_velocity(np, eval_radii(d), *args)
        out["rc"][i] = list(np.asarray(v, dtype=float)
                            * np.sin(np.radians(out["values"][i]["inclination"])))


# ----------------------------------------------------------------------
def _peer_child(queue, kind, payload):
    from peers.barolo import fit_2dfit, fit_3dfit

    try:
        if kind == "2dfit":
            mom1, guess, beam = payload
            res = fit_2dfit(mom1, 1.0, guess, free="VROT INC PA VSYS", beam_fwhm_arcsec=beam)
        else:
            cube, v, guess, beam = payload
            res = fit_3dfit(cube, v, 1.0, guess, beam)
        queue.put({k: (np.asarray(x).tolist() if isinstance(x, np.ndarray) else x)
                   for k, x in res.items() if k != "log"})
    except Exception as err:  # noqa: BLE001 - a failed fit is a result too
        queue.put(f"{type(err).__name__}: {err}")


def _with_timeout(kind, payload, timeout):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peer_child, args=(queue, kind, payload))
    proc.start()
    try:
        return queue.get(timeout=timeout)
    except Exception:  # noqa: BLE001 - queue.Empty
        return f"no result within {timeout:g} s"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


def run_peer(kind, designs, mom0, mom1, cubes, args):
    import pyBBarolo  # noqa: F401 - load once, before forking
    from peer_2dfit import user_guess

    found = detected(mom0, mom1)
    index = [i for i in (range(len(designs)) if kind == "2dfit" else sorted(cubes)) if found[i]]
    out = {"values": {}, "rc": {}, "failed": {}, "seconds": 0.0, "n": 0}
    for i in index:
        d = designs[i]
        guess = user_guess(mom0[i], mom1[i])
        n = d["n"]
        if kind == "2dfit":
            res = _with_timeout(kind, (mom1[i], guess, float(np.sqrt(d["beam"][0] * d["beam"][1]))),
                                args.timeout_2d)
        else:
            res = _with_timeout(kind, (*cubes[i], guess, tuple(d["beam"])), args.timeout_3d)
        out["n"] += 1
        if isinstance(res, str) or not np.isfinite(res["inclination"]):
            out["failed"][i] = res if isinstance(res, str) else "no ring converged"
            continue
        out["seconds"] += res["wall_time_s"]
        out["values"][i] = {"inclination": res["inclination"], "pa": res["pa"],
                            "v_sys": res["v_sys"], "x_0": guess["x_center_pix"] - (n - 1) / 2,
                            "y_0": guess["y_center_pix"] - (n - 1) / 2}
        radii = np.asarray(res["radii"])
        vproj = np.asarray(res["vrot"]) * np.sin(np.radians(res["ring_inclination"]))
        r = eval_radii(d)
        inside = (r >= radii.min()) & (r <= radii.max()) if radii.size > 1 else r < 0
        out["rc"][i] = [float(x) if ok else None
                        for x, ok in zip(np.interp(r, radii, vproj) if radii.size > 1
                                         else np.zeros_like(r), inside, strict=True)]
        if kind == "3dfit" or (i + 1) % 50 == 0:
            print(f"  {kind}: galaxy {i}", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------
def errors(designs, curves, values, rc):
    """Per-galaxy absolute errors of each quantity (NaN where not fitted)."""
    n = len(designs)
    e = {q: np.full(n, np.nan) for q in QUANTITIES}
    for i in range(n):
        v = values.get(i) if isinstance(values, dict) else values[i]
        if v is None:
            continue
        d = designs[i]
        e["inclination"][i] = abs(v["inclination"] - d["inclination"])
        e["pa"][i] = abs((v["pa"] - d["pa"] + 180.0) % 360.0 - 180.0)
        e["centre"][i] = float(np.hypot(v["x_0"] - d["x_0"], v["y_0"] - d["y_0"]))
        e["v_sys"][i] = abs(v["v_sys"] - d["v_sys"])
        fit = rc.get(i) if isinstance(rc, dict) else rc[i]
        if fit is not None:
            fit = np.array([np.nan if x is None else x for x in fit], dtype=float)
            diff = fit - true_projected(d, curves[i])
            if np.isfinite(diff).any():
                e["rc"][i] = float(np.sqrt(np.nanmean(diff ** 2)))
    return e


def _fmt_row(label, errs, sel, n_total):
    cells = [f"{label:38s}"]
    for q in QUANTITIES:
        x = errs[q][sel]
        x = x[np.isfinite(x)]
        cells.append(f"{np.median(x):7.2f} {np.mean(x):7.2f}" if x.size else f"{'--':>15s}")
    n_ok = int(np.isfinite(errs["inclination"][sel]).sum())
    cells.append(f"{n_ok:4d}/{int(sel.sum()) if n_total is None else n_total}")
    return " ".join(cells)


def report(args):
    designs, mom0, mom1, curves, cubes, meta = realistic_mocks.load_realistic(args.cache)
    n = len(designs)
    parts = {}
    for part in ("astrokin", "2dfit", "3dfit"):
        path = _part_path(args.results, part)
        if path.exists():
            parts[part] = json.loads(path.read_text())
    methods = {}
    if "astrokin" in parts:
        a = parts["astrokin"]
        for m in ASTROKIN_METHODS:
            if m in a:
                methods[m] = errors(designs, curves, a[m]["values"], a[m]["rc"])
    for part, label in (("2dfit", "2DFIT"), ("3dfit", "3DFIT")):
        if part in parts:
            p = parts[part]
            methods[label] = errors(designs, curves, {int(k): v for k, v in p["values"].items()},
                                    {int(k): v for k, v in p["rc"].items()})
    found = np.array(detected(mom0, mom1))
    print(f"Realistic KinMS mocks: {n} galaxies ({meta['machine']}); {int((~found).sum())} not "
          f"detected by the smooth-and-clip mask (fewer than {MIN_PIXELS} mom1 pixels) are "
          f"left out of every method; 3DFIT on the detected of the first {meta['cubes']} cubes")
    head = (f"{'method / sample':38s} " + " ".join(f"{q:>15s}" for q in QUANTITIES)
            + "  fitted")
    sub = f"{'':38s} " + " ".join(f"{'median':>7s} {'mean':>7s}" for _ in QUANTITIES)
    units = "errors: inclination, PA (deg); centre (arcsec = px); v_sys, rotation curve RMS (km/s)"
    samples = {"all detected galaxies": found, f"the detected of the {meta['cubes']} with "
               "cubes": found & (np.arange(n) < meta["cubes"])}
    for sample, sel in samples.items():
        print(f"\n{sample}; {units}")
        print(head)
        print(sub)
        for m, e in methods.items():
            if m != "3DFIT" or sample != "all detected galaxies":
                print(_fmt_row(m, e, sel, None))
    families = [("sb_family", realistic_mocks.SB_FAMILIES),
                ("rc_family", realistic_mocks.RC_FAMILIES),
                ("texture", ("smooth", "clumpy", "arms"))]
    flags = {"warped": np.array([d["warp"] for d in designs]),
             "barred": np.array([d["bar"] for d in designs]),
             "bulge peak": np.array([d["rc"]["bulge"] for d in designs]),
             "S/N < 6": np.array([d["snr"] < 6 for d in designs]),
             "< 8 beams across": np.array([2 * d["extent"] / d["beam"][0] < 8 for d in designs])}
    show = [m for m in ("exponential", "rings", "best", "ring network", "rings from ring net",
                        "2DFIT") if m in methods]
    for key, names in families:
        print(f"\nper {key} (median errors); {units}")
        print(head)
        for name in names:
            sel = np.array([d[key] == name for d in designs]) & found
            for m in show:
                print(_fmt_row(f"{name}: {m}", methods[m], sel, None))
    print(f"\nper nuisance (median errors); {units}")
    print(head)
    for name, sel in flags.items():
        sel = sel & found
        for m in show:
            print(_fmt_row(f"{name}: {m}", methods[m], sel, None))
    if "astrokin" in parts:
        a = parts["astrokin"]
        print("\n1-sigma coverage of astrokin's errors (fraction of |error| < std; 68% ideal)")
        for m in (m for m in ASTROKIN_METHODS if m in a):
            cells = []
            for q in ("inclination", "pa", "v_sys", "x_0"):
                err, std = [], []
                for i in np.flatnonzero(found):
                    v, s = a[m]["values"][i], a[m]["stds"][i]
                    if q == "pa":
                        err.append(abs((v[q] - designs[i][q] + 180) % 360 - 180))
                    else:
                        err.append(abs(v[q] - designs[i][q]))
                    std.append(s[q])
                cells.append(f"{q} {np.mean(np.array(err) < np.array(std)):.2f}")
            print(f"  {m:20s} " + "  ".join(cells))
        s = a["seconds"]
        k = int(found.sum())
        print(f"\ntime per galaxy: network {1e3 * s['network'] / k:.0f} ms; exponential+rings "
              f"(both refined, one call) {1e3 * s['exponential+rings'] / k:.0f} ms; 1 thread")
        if "ring network" in s:
            print(f"  ring network {1e3 * s['ring network'] / k:.0f} ms; rings from ring net "
                  f"{1e3 * s['rings from ring net'] / k:.0f} ms; 1 thread")
    for part, label in (("2dfit", "2DFIT"), ("3dfit", "3DFIT")):
        if part in parts:
            p = parts[part]
            ok = len(p["values"])
            print(f"{label}: {1e3 * p['seconds'] / max(ok, 1):.0f} ms per fit that returned; "
                  f"{len(p['failed'])} of {p['n']} failed or timed out")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("astrokin", "2dfit", "3dfit", "report"))
    ap.add_argument("--cache", default=None, help="where realistic_mocks.py saved the set")
    ap.add_argument("--results", default="~/.cache/astrokin-benchmarks")
    ap.add_argument("--n", type=int, default=None, help="only the first N galaxies")
    ap.add_argument("--rings", type=int, default=8)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--timeout-2d", type=float, default=10.0)
    ap.add_argument("--timeout-3d", type=float, default=180.0)
    args = ap.parse_args(argv)
    if args.part == "report":
        return report(args)
    designs, mom0, mom1, curves, cubes, meta = realistic_mocks.load_realistic(args.cache)
    if args.n is not None:
        designs, mom0, mom1 = designs[:args.n], mom0[:args.n], mom1[:args.n]
        cubes = {i: c for i, c in cubes.items() if i < args.n}
    t = time.perf_counter()
    if args.part == "astrokin":
        out = run_astrokin(designs, mom0, mom1, args)
    else:
        out = run_peer(args.part, designs, mom0, mom1, cubes, args)
    out["wall_seconds"] = time.perf_counter() - t
    path = _part_path(args.results, args.part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, default=float))
    print(f"wrote {path} ({out['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
