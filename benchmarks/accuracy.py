"""Accuracy of NeuralKinematicFitter on cached KinMS sets, against the paper's figures.

Fits a set made by ``benchmarks/kinms_sets.py`` (``paper`` or ``hard``) with
`astrokin.fitting.NeuralKinematicFitter` and prints, per parameter, the mean
and median absolute error, the RMS and the bias (fitted - true), next to
Dawson et al. (2021, section 3.1.1: "average deviation" over 1739 unflagged
blind-tested galaxies: inclination 1.1 deg, V_max sin i 3.8 km/s, r_scale
0.004 and r_turn 0.02 as fractions of the 32 px half-width); the fraction of
1-sigma MC dropout intervals containing the truth (paper: ~35%, with its
sigma = mean absolute deviation of the samples, eq. 7; both that and the
standard deviation are used here); rotation-curve errors; and the fit's
throughput.

Units of the table: inclination and PA in deg (PA differences wrapped to
+-180), V_max sin i, V_max and v_sys in km/s, r_scale and r_turn as fractions
of the map's half-width (the paper's units), centre offsets in pixels.

Rotation curves: the arctan curve of the truth and of the fit, evaluated at
50 radii spaced evenly from one beam FWHM (geometric mean of the axes) to 0.8
of the half-width; per galaxy the RMS difference over those radii, for the
projected curve V(r) sin i (what the mom1 map constrains) and for the
deprojected V(r). The table gives the mean, median and RMS over galaxies of
that per-galaxy RMS, and its median relative to V_max sin i.

"Unflagged": the paper dropped galaxies "whose projected r_turn fell below
1.5 times the restoring beamsize ... to mimic the automated flagging of
poorly resolved galaxies at high inclination" (Fig. 4 caption). Projected is
taken literally as seen on the sky along the minor axis: r_turn cos i, compared
with 1.5 times the beam FWHM along the galaxy's minor axis (the FWHM for a
round beam). The paper flagged 13% of its galaxies; on Table 2's ranges this
definition flags ~30%, while r_turn < 1.5 FWHM (``--flag intrinsic``) flags
~11%. Both fractions are printed.

Modes (paper section 2.6): ``blind`` (``--network PATH`` saved by
`NeuralKinematicFitter.save`, or ``pretrained`` for
`NeuralKinematicFitter.pretrained()` when it exists: forward passes only),
``solo`` (train a fresh network on the fitted galaxies for ``--epochs``),
``combined`` (train on them plus ``--train-n`` other galaxies of the same set).
``--save-network`` keeps the network trained in solo/combined mode, e.g. to
make a quick network for a blind run on other galaxies (``--start``).

Run: ``python benchmarks/accuracy.py --set paper --mode blind --network net.pt
[--n 1000] [--mc-samples 1000]``. The table functions (`error_table`,
`rotation_curve_errors`, `rc_table`, `coverage_table`, `format_table`,
`resolution_flag`) take dicts of plain arrays so other fitters (3D-Barolo)
can be reported the same way.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kinms_sets  # noqa: E402

#: Paper's average deviations (section 3.1.1), in the units of `QUANTITIES`.
PAPER_FIGURES = {"inclination": 1.1, "vsini": 3.8, "r_scale": 0.004, "r_turn": 0.02}
#: Paper's fraction of 1-sigma MC dropout error bars that overlap the truth.
PAPER_COVERAGE = 0.35
#: Report quantities: label, unit, kind ('linear' or 'angle').
QUANTITIES = {
    "inclination": ("inclination", "deg", "linear"),
    "vsini": ("V_max sin i", "km/s", "linear"),
    "r_scale": ("r_scale/half-width", "", "linear"),
    "r_turn": ("r_turn/half-width", "", "linear"),
    "v_max": ("V_max (deproj.)", "km/s", "linear"),
    "pa": ("PA", "deg", "angle"),
    "x_0": ("x_0", "px", "linear"),
    "y_0": ("y_0", "px", "linear"),
    "centre": ("centre |offset|", "px", "distance"),
    "v_sys": ("v_sys", "km/s", "linear"),
}


# ----------------------------------------------------------------------
# Reusable table functions (plain dicts of arrays)
def report_units(params, half_width, pixel_scale):
    """Astrokin-convention parameters (deg, arcsec, km/s) to the report's units.

    Parameters
    ----------
    params : dict of array-like
        Any of ``inclination``, ``pa`` (deg), ``x_0``, ``y_0``, ``r_scale``,
        ``r_turn`` (arcsec), ``v_sys``, ``v_max``, ``vsini`` (km/s); extra
        keys are passed through. ``vsini`` is derived when missing.
    half_width, pixel_scale : array-like
        Map half-width (arcsec) and pixel scale (arcsec/px) per galaxy.

    Returns
    -------
    dict of numpy.ndarray
        r_scale, r_turn as fractions of the half-width; x_0, y_0 in pixels;
        others unchanged.
    """
    out = {k: np.asarray(v, dtype=float) for k, v in params.items()}
    hw = np.asarray(half_width, dtype=float)
    ps = np.asarray(pixel_scale, dtype=float)
    for k in ("r_scale", "r_turn"):
        if k in out:
            out[k] = out[k] / hw
    for k in ("x_0", "y_0"):
        if k in out:
            out[k] = out[k] / ps
    if "vsini" not in out and "v_max" in out and "inclination" in out:
        out["vsini"] = out["v_max"] * np.sin(np.radians(out["inclination"]))
    return out


def differences(true, fitted, kind="linear"):
    """Fitted minus true; angles wrapped to [-180, 180) deg."""
    d = np.asarray(fitted, dtype=float) - np.asarray(true, dtype=float)
    if kind == "angle":
        d = np.remainder(d + 180.0, 360.0) - 180.0
    return d


def error_stats(diff):
    """``n``, ``mean_abs``, ``median_abs``, ``rms``, ``bias`` of finite differences."""
    d = np.asarray(diff, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"n": 0, "mean_abs": np.nan, "median_abs": np.nan, "rms": np.nan, "bias": np.nan}
    return {"n": int(d.size), "mean_abs": float(np.mean(np.abs(d))),
            "median_abs": float(np.median(np.abs(d))), "rms": float(np.sqrt(np.mean(d ** 2))),
            "bias": float(np.mean(d))}


def coverage(true, fitted, sigma, kind="linear"):
    """Fraction of galaxies with ``|fitted - true| <= sigma`` (finite values only)."""
    d = np.abs(differences(true, fitted, kind))
    s = np.asarray(sigma, dtype=float)
    ok = np.isfinite(d) & np.isfinite(s)
    return float(np.mean(d[ok] <= s[ok])) if ok.any() else np.nan


def _diff_of(name, true, fitted):
    if name == "centre":
        return np.hypot(differences(true["x_0"], fitted["x_0"]),
                        differences(true["y_0"], fitted["y_0"]))
    return differences(true[name], fitted[name], QUANTITIES.get(name, ("", "", "linear"))[2])


def error_table(true, fitted, *, names=None, selections=None, paper=PAPER_FIGURES):
    """Rows of error statistics per parameter and selection.

    Parameters
    ----------
    true, fitted : dict of numpy.ndarray
        Per-galaxy values in the report's units (see `report_units`).
    names : list of str, optional
        Quantities to report (default: those of `QUANTITIES` present in both;
        ``centre`` when x_0 and y_0 are).
    selections : dict of str to bool array, optional
        Named subsets, e.g. ``{'all': ..., 'unflagged': ...}``; default all.
    paper : dict, optional
        Paper figures per quantity, shown alongside.

    Returns
    -------
    rows : list of dict
        Keys ``quantity``, ``unit``, ``sample`` and those of `error_stats`,
        plus ``paper``; a ``centre`` row has the mean/median/RMS of the
        distance and no bias.
    """
    if names is None:
        names = [k for k in QUANTITIES if k in true and k in fitted]
        if "x_0" in names and "y_0" in names:
            names.append("centre")
            names = [k for k in QUANTITIES if k in names]
    n = len(next(iter(true.values())))
    selections = selections or {"all": np.ones(n, bool)}
    rows = []
    for name in names:
        d = _diff_of(name, true, fitted)
        label, unit, kind = QUANTITIES.get(name, (name, "", "linear"))
        for sample, sel in selections.items():
            st = error_stats(d[np.asarray(sel, bool)])
            if kind == "distance":
                st["bias"] = np.nan
            rows.append({"quantity": label, "unit": unit, "sample": sample, **st,
                         "paper": paper.get(name, np.nan)})
    return rows


def coverage_table(true, fitted, sigmas, *, names=None, selections=None,
                   paper=PAPER_COVERAGE):
    """Rows of 1-sigma coverage per parameter, selection and kind of sigma.

    ``sigmas`` maps a label (e.g. ``'std'``, ``'MAD (eq. 7)'``) to a dict of
    per-galaxy sigma arrays in the report's units.
    """
    names = names or [k for k in QUANTITIES if k in true and k in fitted
                      and all(k in s for s in sigmas.values())]
    n = len(next(iter(true.values())))
    selections = selections or {"all": np.ones(n, bool)}
    rows = []
    for name in names:
        label, unit, kind = QUANTITIES.get(name, (name, "", "linear"))
        for sample, sel in selections.items():
            sel = np.asarray(sel, bool)
            row = {"quantity": label, "sample": sample, "n": int(sel.sum())}
            for slabel, sig in sigmas.items():
                row[f"cover ({slabel})"] = coverage(true[name][sel], fitted[name][sel],
                                                    sig[name][sel], kind)
                row[f"median sigma ({slabel})"] = float(np.nanmedian(sig[name][sel])) \
                    if sel.any() else np.nan
            row["paper"] = paper
            rows.append(row)
    return rows


def arctan_curve(r, v_max, r_turn):
    """``2 v_max / pi * arctan(r / r_turn)`` for ``(N,)`` parameters and ``(N, R)`` radii."""
    return 2.0 / np.pi * np.asarray(v_max)[:, None] * np.arctan(
        r / np.asarray(r_turn)[:, None])


def rotation_curve_radii(beam_fwhm, half_width, n_radii=50, outer=0.8):
    """``(N, n_radii)`` radii (arcsec) from one beam FWHM to ``outer`` x half-width."""
    lo = np.asarray(beam_fwhm, dtype=float)
    hi = outer * np.asarray(half_width, dtype=float)
    t = np.linspace(0.0, 1.0, n_radii)
    return lo[:, None] + (hi - lo)[:, None] * t[None, :]


def rotation_curve_errors(true, fitted, radii, curve=arctan_curve):
    """Per-galaxy RMS error of the rotation curve, projected and deprojected.

    Parameters
    ----------
    true, fitted : dict of numpy.ndarray
        ``v_max`` (km/s), ``r_turn`` (arcsec, same units as ``radii``) and
        ``inclination`` (deg), astrokin convention (not fractions).
    radii : numpy.ndarray
        ``(N, R)`` radii, e.g. from `rotation_curve_radii`.
    curve : callable
        ``curve(radii, v_max, r_turn)``.

    Returns
    -------
    dict
        ``projected`` (V(r) sin i) and ``deprojected`` (V(r)): ``(N,)`` RMS
        differences in km/s; ``vsini_true`` for relative errors.
    """
    vt = curve(radii, true["v_max"], true["r_turn"])
    vf = curve(radii, fitted["v_max"], fitted["r_turn"])
    st = np.sin(np.radians(true["inclination"]))[:, None]
    sf = np.sin(np.radians(fitted["inclination"]))[:, None]
    return {"projected": np.sqrt(np.mean((vf * sf - vt * st) ** 2, axis=1)),
            "deprojected": np.sqrt(np.mean((vf - vt) ** 2, axis=1)),
            "vsini_true": np.asarray(true["v_max"]) * st[:, 0]}


def rc_table(rc, selections=None):
    """Rows summarising `rotation_curve_errors` per curve and selection."""
    n = len(rc["projected"])
    selections = selections or {"all": np.ones(n, bool)}
    rows = []
    for kind in ("projected", "deprojected"):
        for sample, sel in selections.items():
            sel = np.asarray(sel, bool)
            e = rc[kind][sel]
            e = e[np.isfinite(e)]
            rel = (rc[kind][sel] / rc["vsini_true"][sel])
            rows.append({
                "curve": "V(r) sin i" if kind == "projected" else "V(r)", "sample": sample,
                "n": int(e.size), "mean RMS": float(np.mean(e)) if e.size else np.nan,
                "median RMS": float(np.median(e)) if e.size else np.nan,
                "RMS of RMS": float(np.sqrt(np.mean(e ** 2))) if e.size else np.nan,
                "median RMS / V sin i": float(np.nanmedian(rel)) if e.size else np.nan,
            })
    return rows


def beam_fwhm_along(beam, pa_deg):
    """FWHM (arcsec) of a cut through an elliptical Gaussian beam along ``pa_deg``.

    ``beam`` is ``(N, 3)``: bmaj, bmin (arcsec), bpa (deg); both angles North
    through East.
    """
    beam = np.asarray(beam, dtype=float)
    d = np.radians(np.asarray(pa_deg, dtype=float) - beam[:, 2])
    return 1.0 / np.sqrt(np.cos(d) ** 2 / beam[:, 0] ** 2 + np.sin(d) ** 2 / beam[:, 1] ** 2)


def resolution_flag(true, beam, *, factor=1.5, definition="projected"):
    """The paper's resolution flag: True where the galaxy would be dropped.

    ``definition='projected'``: ``r_turn cos(i)`` below ``factor`` times the
    beam FWHM along the galaxy's minor axis; ``'intrinsic'``: ``r_turn``
    below ``factor`` times the beam FWHM along the major axis. ``true`` holds
    ``r_turn`` (arcsec), ``inclination`` and ``pa`` (deg).
    """
    pa = np.asarray(true["pa"], dtype=float)
    if definition == "projected":
        size = true["r_turn"] * np.cos(np.radians(true["inclination"]))
        fwhm = beam_fwhm_along(beam, pa + 90.0)
    elif definition == "intrinsic":
        size = np.asarray(true["r_turn"], dtype=float)
        fwhm = beam_fwhm_along(beam, pa)
    else:
        raise ValueError(f"definition must be 'projected' or 'intrinsic', not {definition!r}")
    return size < factor * fwhm


def _fmt(value, width):
    if isinstance(value, str):
        return f"{value:>{width}}"
    if isinstance(value, (int, np.integer)):
        return f"{value:>{width}d}"
    if value is None or not np.isfinite(value):
        return f"{'-':>{width}}"
    a = abs(value)
    if a != 0 and (a < 1e-2 or a >= 1e5):
        return f"{value:>{width}.2e}"
    return f"{value:>{width}.{4 if a < 1 else 3 if a < 10 else 2 if a < 1000 else 0}f}"


def format_table(rows, columns=None, title=None):
    """Plain-text table of ``rows`` (list of dicts); columns default to the first row's keys."""
    if not rows:
        return (title + "\n" if title else "") + "(no rows)"
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c, ""), 0).strip() for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append("  ".join(f"{c:>{w}}" if j else f"{c:<{w}}"
                           for j, (c, w) in enumerate(zip(columns, widths, strict=True))))
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(f"{v:>{w}}" if j else f"{v:<{w}}"
                               for j, (v, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


# ----------------------------------------------------------------------
# Fitting the sets
def template_model(kset, fixed_names):
    """The ExponentialArctanDisk to fit: fixed parameters at their (common) true values.

    V_max bounds cover the set's design (vsini up to 500 km/s at i down to
    10 deg: up to ~2880 km/s); with one pixel scale, x_0/y_0 bounds cover the
    design's centre offsets plus a pixel.
    """
    import astropy.units as u

    from astrokin.models import ExponentialArctanDisk

    d = kset.meta["design"]
    m = ExponentialArctanDisk()
    vlo, vhi = d["vsini"]
    m.bounds["v_max"] = (vlo, vhi / np.sin(np.radians(d["inclination"][0])))
    ps = np.unique(kset.pixel_scale)
    if isinstance(d["centre_px"], list) and len(ps) == 1:
        c = (max(abs(x) for x in d["centre_px"]) + 1.0) * ps[0]
        m.bounds["x_0"] = m.bounds["y_0"] = (-c, c)
    units = {"inclination": u.deg, "pa": u.deg, "x_0": u.arcsec, "y_0": u.arcsec,
             "v_sys": u.km / u.s, "r_scale": u.arcsec, "r_turn": u.arcsec,
             "v_max": u.km / u.s, "z_scale": u.arcsec}
    for name in fixed_names:
        if name == "amplitude":
            continue
        values = np.unique(kset.truth[name])
        if len(values) != 1:
            raise ValueError(
                f"{name} is fixed in this fit but varies across the {kset.name} set; "
                "only parameters with one true value in the set can be fixed.")
        setattr(m, name, values[0] * units[name])
        m.fixed[name] = True
    for name in units:
        if name not in fixed_names and name != "z_scale":
            m.fixed[name] = False
    return m


def _maps_args(kset, index):
    import astropy.units as u

    shapes = {kset.mom0[i].shape for i in index}
    if len(shapes) == 1:
        mom0 = np.stack([kset.mom0[i] for i in index])
        mom1 = np.stack([kset.mom1[i] for i in index])
    else:
        mom0 = [kset.mom0[i] for i in index]
        mom1 = [kset.mom1[i] for i in index]
    beams = [(b[0] * u.arcsec, b[1] * u.arcsec, b[2] * u.deg) for b in kset.beam[index]]
    return mom0, mom1, {"pixel_scale": kset.pixel_scale[index] * u.arcsec, "beam": beams}


def _collect(fitter, names):
    """Fitted values, std and MAD (canonical units) from ``fitter.fit_info``."""
    import astropy.units as u

    table = fitter.fit_info["table"]
    conv = {"inclination": u.deg, "pa": u.deg, "x_0": u.arcsec, "y_0": u.arcsec,
            "v_sys": u.km / u.s, "r_scale": u.arcsec, "r_turn": u.arcsec,
            "v_max": u.km / u.s, "vsini": u.km / u.s}
    val, std, mad = {}, {}, {}
    raw = fitter.fit_info.get("std_uncalibrated") or {}
    for nm in names:
        val[nm] = np.atleast_1d(u.Quantity(table[nm]).to_value(conv[nm]))
        std[nm] = np.atleast_1d(u.Quantity(table[f"{nm}_std"]).to_value(conv[nm]))
        mad[nm] = np.atleast_1d(u.Quantity(fitter.fit_info["mad"][nm]).to_value(conv[nm]))
        # The raw (uncalibrated) MC spread rides along under a key of its own.
        if nm in raw:
            std[f"{nm}__raw"] = np.atleast_1d(u.Quantity(raw[nm]).to_value(conv[nm]))
    return val, std, mad


def fit_set(kset, fitter, model, *, batch=256, training=None):
    """Fit every galaxy of ``kset``; returns fitted values, std, MAD (canonical units), timings.

    Blind mode: chunks of ``batch`` galaxies of one shape at a time. Solo and
    combined: one call with every galaxy (one network trained on all of
    them; ``training`` is the combined mode's other `KinMSSet`).
    """
    names = ["inclination", "pa", "x_0", "y_0", "v_sys", "r_scale", "r_turn", "v_max", "vsini"]
    n = len(kset)
    out = {k: {nm: np.full(n, np.nan) for nm in names} for k in ("val", "std", "mad")}
    out["std"].update({f"{nm}__raw": np.full(n, np.nan) for nm in names})
    timings = {"preprocessing": 0.0, "training": 0.0, "mc_dropout": 0.0, "refinement": 0.0,
               "total": 0.0}
    if fitter.mode == "blind":
        chunks = [idx[s:s + batch] for idx in kset.groups().values()
                  for s in range(0, len(idx), batch)]
    else:
        chunks = [np.arange(n)]
    t0 = time.perf_counter()
    for idx in chunks:
        mom0, mom1, kw = _maps_args(kset, idx)
        if fitter.mode == "combined":
            tm0, tm1, tkw = _maps_args(training, np.arange(len(training)))
            kw["training_data"] = {"mom0": tm0, "mom1": tm1, **tkw}
        fitter(model, mom0, mom1, **kw)
        val, std, mad = _collect(fitter, names)
        for k, d in (("val", val), ("std", std), ("mad", mad)):
            for nm in d:
                out[k][nm][idx] = d[nm]
        for k in timings:
            timings[k] += fitter.fit_info["timings"].get(k, 0.0)
    timings["wall"] = time.perf_counter() - t0
    return out["val"], out["std"], out["mad"], timings


def print_calibration(fitter, model, test_set, cal_set):
    """Recalibrate ``fitter`` on ``cal_set`` (not the test set's galaxies) and print the factors."""
    same = all(test_set.meta.get(k) == cal_set.meta.get(k) for k in ("set", "seed", "clouds"))
    if same:
        raise SystemExit("--calibrate-on must name a set made with another --seed than the one "
                         "fitted: calibrating on the test galaxies would hide the real coverage.")
    if cal_set.meta.get("set") != test_set.meta.get("set"):
        print(f"note: calibrating on a {cal_set.meta.get('set')!r} set to fit a "
              f"{test_set.meta.get('set')!r} set")
    mom0, mom1, kw = _maps_args(cal_set, np.arange(len(cal_set)))
    report = fitter.calibrate(model, mom0, mom1, cal_set.truth, **kw)
    print(f"MC spreads recalibrated on {len(cal_set)} galaxies of {cal_set.meta.get('set')} "
          f"(seed {cal_set.meta.get('seed')}), not the fitted ones:")
    print(format_table([{"parameter": r["parameter"], "factor": float(r["scale"]),
                         "n": int(r["n"]), "cover before": float(r["coverage_before"]),
                         "cover after": float(r["coverage_after"])} for r in report]))
    print()


def make_fitter(args):
    from astrokin.fitting import NeuralKinematicFitter

    common = dict(mc_samples=args.mc_samples, device=args.device, seed=args.seed,
                  progress=args.progress, keep_samples=False)
    refine = dict(refine=args.refine)
    if args.mode == "blind":
        if not args.network:
            raise SystemExit("--mode blind needs --network PATH (or 'pretrained').")
        if args.network == "pretrained":
            return NeuralKinematicFitter.pretrained(**common, **refine)
        return NeuralKinematicFitter.load(args.network, **common, **refine)
    if args.warm_start:
        # Solo/combined training that starts from a pre-trained network.
        fitter = (NeuralKinematicFitter.pretrained(**common, **refine)
                  if args.warm_start == "pretrained"
                  else NeuralKinematicFitter.load(args.warm_start, **common, **refine))
        fitter.mode, fitter.warm_start = args.mode, True
        fitter.epochs, fitter.batch_size = args.epochs, args.batch_size
        fitter.learning_rate = args.learning_rate
        return fitter
    return NeuralKinematicFitter(args.mode, epochs=args.epochs, batch_size=args.batch_size,
                                 learning_rate=args.learning_rate, **common, **refine)


def report(kset, val, std, mad, *, fixed=(), flag_definition="projected"):
    """The printed tables of one fitted set (a string) and extras (flags, RC errors).

    ``val``, ``std``, ``mad``: dicts of fitted values and sigmas in astrokin's
    units (as from `fit_set`); parameters in ``fixed`` are not reported.
    """
    hw, ps = kset.half_width, kset.pixel_scale
    true_c = dict(kset.truth)
    names = [k for k in ("inclination", "vsini", "r_scale", "r_turn", "v_max", "pa", "x_0",
                         "y_0", "v_sys") if k not in fixed]
    true = report_units({k: true_c[k] for k in names}, hw, ps)
    fit = report_units({k: val[k] for k in names}, hw, ps)
    sig_std = report_units({k: std[k] for k in names}, hw, ps)
    sig_mad = report_units({k: mad[k] for k in names}, hw, ps)
    sigmas = {"std": sig_std, "MAD": sig_mad}
    if all(f"{k}__raw" in std and np.isfinite(std[f"{k}__raw"]).any() for k in names):
        # A calibrated network: "std" is calibrated, "raw std" the MC spread itself.
        sigmas = {"std (calibrated)": sig_std,
                  "raw std": report_units({k: std[f"{k}__raw"] for k in names}, hw, ps),
                  "MAD": sig_mad}
    flags = {d: resolution_flag(true_c, kset.beam, definition=d)
             for d in ("projected", "intrinsic")}
    flagged = flags[flag_definition]
    selections = {"all": np.ones(len(kset), bool), "unflagged": ~flagged}
    lines = [
        f"resolution flag ({flag_definition}, used): {flagged.sum()} of {len(kset)} galaxies "
        f"flagged ({flagged.mean():.0%}); other definition "
        f"({'intrinsic' if flag_definition == 'projected' else 'projected'}) would flag "
        f"{flags['intrinsic' if flag_definition == 'projected' else 'projected'].mean():.0%}; "
        f"paper: 261 of 2000 (13%)",
        "",
        format_table(error_table(true, fit, selections=selections),
                     ["quantity", "unit", "sample", "n", "mean_abs", "median_abs", "rms", "bias",
                      "paper"],
                     title="Errors (fitted - true); paper = its 'average deviation'"),
        "",
        format_table(coverage_table(true, fit, sigmas, selections=selections),
                     title="Fraction of 1-sigma MC dropout intervals containing the truth "
                           "(std of the samples; MAD = paper eq. 7); paper ~0.35"),
    ]
    beam_fwhm = np.sqrt(kset.beam[:, 0] * kset.beam[:, 1])
    radii = rotation_curve_radii(beam_fwhm, hw)
    rc = rotation_curve_errors(true_c, val, radii)
    lines += ["", format_table(
        rc_table(rc, selections),
        title="Rotation-curve RMS error (km/s) over 50 radii from 1 beam FWHM to 0.8 "
              "half-width, per galaxy")]
    return "\n".join(lines), {"flagged": flagged, "rc": rc}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="paper",
                        help="'paper', 'hard', or the path of a set's .npz file")
    parser.add_argument("--cache", default=None, help="cache directory of the sets")
    parser.add_argument("--mode", choices=["blind", "solo", "combined"], default="blind")
    parser.add_argument("--network", help="saved network for blind mode, or 'pretrained'")
    parser.add_argument("--epochs", type=int, default=300, help="training epochs (solo/combined)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--learning-rate", type=float, default=1e-4,
                        help="initial Adam learning rate (solo/combined)")
    parser.add_argument("--warm-start", default=None, metavar="NETWORK",
                        help="solo/combined: start from this saved network (or 'pretrained') "
                             "instead of random weights")
    parser.add_argument("--n", type=int, default=None, help="galaxies to fit (default: all)")
    parser.add_argument("--start", type=int, default=0, help="first galaxy to fit")
    parser.add_argument("--train-n", type=int, default=None,
                        help="combined mode: other galaxies of the set to train on "
                             "(default: all the others)")
    parser.add_argument("--mc-samples", type=int, default=1000)
    parser.add_argument("--refine", action="store_true",
                        help="refine each galaxy's fit to its own maps after the network (the "
                             "fitter's default; without it, the network's prediction alone)")
    parser.add_argument("--batch", type=int, default=256, help="galaxies per blind fit call")
    parser.add_argument("--fix", default=None,
                        help="comma-separated parameters to fix at their true value (must be "
                             "common to the set); default 'pa,x_0,y_0,v_sys' for the paper set "
                             "(the paper's network learned i, r_scale, r_turn, V_max sin i) "
                             "and none for the hard set; blind mode follows the network; "
                             "'none' for none")
    parser.add_argument("--flag", choices=["projected", "intrinsic"], default="projected",
                        help="definition of the paper's resolution flag (see module doc)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show a training progress bar")
    parser.add_argument("--save-network", help="save the network trained in solo/combined mode")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --save-network replace an existing file")
    parser.add_argument("--save-results", help="save truth, fits, std and MAD as .npz")
    parser.add_argument("--calibrate-on", metavar="SET",
                        help="blind mode: first recalibrate the network's MC spreads on "
                             "this other KinMS set (a .npz path, generated with another "
                             "--seed; NeuralKinematicFitter.calibrate) and print the factors")
    args = parser.parse_args(argv)
    if args.calibrate_on and args.mode != "blind":
        parser.error("--calibrate-on needs --mode blind")
    if args.save_network and os.path.lexists(args.save_network) and not args.overwrite:
        parser.error(f"{args.save_network} already exists; pass --overwrite to replace it.")

    import torch

    torch.set_num_threads(args.threads)
    full = kinms_sets.load_set(args.set, args.cache)
    stop = len(full) if args.n is None else min(len(full), args.start + args.n)
    index = np.arange(args.start, stop)
    kset = full.subset(index)
    fitter = make_fitter(args)
    # The paper gave its network the PA (and its maps were centred at v_sys = 0):
    # on that set these are fixed at the truth by default, in every mode (a blind
    # network that predicts them takes the fixed values instead). A blind
    # network's own fixed parameters stay fixed.
    if args.fix is None:
        fixed = ["pa", "x_0", "y_0", "v_sys"] if full.name == "paper" else []
    else:
        fixed = [] if args.fix.strip().lower() == "none" else \
            [s.strip() for s in args.fix.split(",") if s.strip()]
    if args.mode == "blind":
        # (The dispersion is never predicted: it is not a parameter these maps fit.)
        dispersion = fitter.layout.model_class.dispersion_parameters
        fixed = sorted(set(fixed) | {nm for nm in fitter.layout.fixed_names
                                     if nm not in ("amplitude", "z_scale", *dispersion)})
    model = template_model(kset, fixed)
    training = None
    if args.mode == "combined":
        others = np.setdiff1d(np.arange(len(full)), index)
        if args.train_n is not None:
            others = others[:args.train_n]
        if len(others) == 0:
            raise SystemExit("--mode combined needs other galaxies in the set to train on.")
        training = full.subset(others)

    print(f"astrokin accuracy benchmark: set {full.name} ({kset.meta['n']} generated, "
          f"galaxies {index[0]}-{index[-1]}: {len(kset)} fitted), mode {args.mode}"
          + (f", network {args.network}" if args.network else f", {args.epochs} epochs")
          + (f" (+{len(training)} other galaxies for training)" if training is not None else ""))
    print(f"fixed at truth: {', '.join(fixed) or 'none'}; MC samples {args.mc_samples}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}")
    print(f"machine: {kinms_sets.machine_description()}")
    if args.calibrate_on:
        print_calibration(fitter, model, full, kinms_sets.load_set(args.calibrate_on, args.cache))
    val, std, mad, timings = fit_set(kset, fitter, model, batch=args.batch, training=training)
    text, extra = report(kset, val, std, mad, fixed=fixed, flag_definition=args.flag)
    print()
    print(text)
    n = len(kset)
    print()
    print(f"Throughput: {n} galaxies in {timings['wall']:.2f} s wall = "
          f"{n / timings['wall']:.1f} galaxies/s ({timings['wall'] / n * 1e3:.2f} ms per galaxy); "
          f"training {timings['training']:.2f} s, MC dropout ({args.mc_samples} samples) "
          f"{timings['mc_dropout']:.2f} s = {timings['mc_dropout'] / n * 1e3:.2f} ms per galaxy, "
          f"preprocessing {timings['preprocessing']:.2f} s, "
          f"refinement {timings['refinement']:.2f} s"
          + (f" = {timings['refinement'] / n * 1e3:.1f} ms per galaxy" if args.refine else ""))
    if args.save_network:
        if args.mode == "blind":
            print("--save-network ignored in blind mode")
        else:
            fitter.save(args.save_network, overwrite=args.overwrite)
            print(f"network saved to {args.save_network}")
    if args.save_results:
        arrays = {f"true_{k}": v for k, v in kset.truth.items()}
        for k in val:
            arrays[f"fit_{k}"], arrays[f"std_{k}"], arrays[f"mad_{k}"] = val[k], std[k], mad[k]
        arrays.update(index=index, beam=kset.beam, pixel_scale=kset.pixel_scale,
                      half_width=kset.half_width, flagged=extra["flagged"])
        np.savez_compressed(args.save_results, **arrays)
        print(f"results saved to {args.save_results}")


if __name__ == "__main__":
    main()
