"""What a fit returns, built in one place: the fitted model, its errors, the table, ``fit_info``.

`assemble_results` turns MC-dropout summaries, which are in each galaxy's
fitting frame (`astrokin.fitting.frames`), into the input maps' frames and
builds, as astropy's fitters do, a copy of the model (a model set of length
N for N galaxies) with the MC means as parameter values, ``stds``
(`~astropy.modeling.fitting.StandardDeviations`) and ``cov_matrix``
(`~astropy.modeling.fitting.Covariance`) over the free parameters, scaled by
the calibration factors; the results `~astropy.table.QTable`; and the rest
of ``fit_info``. `add_observation_columns` adds what the observations and
distances give (rejected pixels, cut-outs, lengths in kpc) and warns about
parameters pinned at the edge of the network's range.
"""

import warnings

import numpy as np
import torch
from astropy import units as u
from astropy.modeling.fitting import Covariance, StandardDeviations
from astropy.table import QTable

from astrokin.exceptions import BoundWarning
from astrokin.fitting.data_quality import galaxy_names
from astrokin.fitting.frames import FRAMED_PARAMETERS

__all__ = ["add_observation_columns", "assemble_results", "check_distances", "fitted_amplitude"]


def assemble_results(model, layout, observations, frames, summary, names, *, std_scale=None,
                     trained=None, batch=None, inplace=False, amplitude=None, columns=None,
                     fixed=None, unfitted=()):
    """The fitted model (or model set) and ``fit_info`` of a fit.

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        The model given to the fitter (its fixed values and constraints).
    layout : `~astrokin.fitting.parameters.ParameterLayout`
        The layout of the fit.
    observations : list of `~astrokin.fitting.preprocessing.Observation`
    frames : list of `~astrokin.fitting.frames.FittingFrame`
    summary : `~astrokin.fitting.mc_dropout.MCSummary`
        In the fitting frames, canonical units.
    names : list of str
        The summarised quantities (every parameter, then ``vsini``).
    std_scale : dict, optional
        Calibration factors of the spreads.
    trained : `~astrokin.fitting.trained.TrainedNetwork`, optional
    batch : `~astrokin.fitting.batch.TensorBatch`, optional
        Needed when the amplitude is free (`fitted_amplitude`).
    inplace : bool, optional
        Set the values on ``model`` itself rather than a copy (one galaxy).
    amplitude : numpy.ndarray, optional
        ``(N,)`` the fitted mom0 scale, when known (refinement solves for
        it); else `fitted_amplitude` when the amplitude is free.
    columns : dict of numpy.ndarray, optional
        Further per-galaxy columns for the table (refinement's diagnostics).
    fixed : dict of numpy.ndarray, optional
        Per-galaxy values ``(N,)`` (canonical units) of fixed parameters the
        fit set for each galaxy (a ring disc's ``r_outer``), in place of the
        model's.
    unfitted : sequence of str, optional
        Free parameters of ``model`` the fit did not vary (the dispersion,
        without a mom2 map): reported as fixed, at the model's values.

    Returns
    -------
    fitted : `~astrokin.models.KinematicDiskModel`
    fit_info : dict
        ``table``, ``samples``, ``mean``, ``std``, ``mad``,
        ``free_parameters``, ``std_uncalibrated``, ``std_scale``.
    """
    n = len(observations)
    mean = summary.mean.copy()
    mean_frame = summary.mean.copy()  # as the network sees the maps (for rendering)
    cov = summary.cov.copy()
    samples = None if summary.samples is None else summary.samples.copy()
    # Linear per-galaxy maps from the fitting frame to the input map.
    index = [names.index(nm) for nm in FRAMED_PARAMETERS]
    ix, iy, ipa = index
    for g, frame in enumerate(frames):
        a = np.ones(len(names))
        b = np.zeros(len(names))
        for j, nm in zip(index, FRAMED_PARAMETERS, strict=True):
            a[j], b[j] = frame.affine(nm)
        mean[g] = a * mean[g] + b
        cov[g] = cov[g] * a[:, None] * a[None, :]
        if samples is not None:
            samples[g] = samples[g] * a + b
        mean[g, ipa] = np.remainder(mean[g, ipa], 360.0)
        if samples is not None:
            samples[g][:, ipa] = np.remainder(samples[g][:, ipa], 360.0)
    std_raw = np.sqrt(np.clip(np.stack([np.diagonal(c) for c in cov]), 0, None))
    if std_scale:
        f = np.array([float(std_scale.get(nm, 1.0)) for nm in names])
        cov = cov * f[None, :, None] * f[None, None, :]
    if amplitude_is_free(model, layout):
        mean[:, names.index("amplitude")] = (
            fitted_amplitude(trained, batch, mean_frame, names) if amplitude is None
            else amplitude)
    units = {nm: layout.model_class.canonical_unit(nm) for nm in layout.param_names}
    units["vsini"] = u.km / u.s
    free = [nm for nm in layout.param_names if not model.fixed[nm] and not model.tied[nm]
            and nm not in unfitted]
    fixed = {nm: np.asarray(v, dtype=float) for nm, v in (fixed or {}).items()}
    for nm, values in fixed.items():
        mean[:, names.index(nm)] = values
    held = set(unfitted) | {nm for nm in layout.param_names if model.fixed[nm]}
    held -= set(fixed)
    at_bounds = _to_bounds(model, names, mean, samples, free, units)
    fitted = _fitted_model(model, layout, mean, cov, names, free, units, inplace, held,
                           unfitted)
    with np.errstate(invalid="ignore"):
        std = np.sqrt(np.clip(np.stack([np.diagonal(c) for c in cov]), 0, None))
    table = _table(model, layout, observations, frames, mean, std, names, units, held)
    for name, values in (columns or {}).items():
        table[name] = values

    samples_out = None
    if samples is not None:
        samples_out = {}
        for nm in names:
            s = samples[:, :, names.index(nm)]
            s = s[0] if n == 1 else s
            samples_out[nm] = _with_unit(s, units[nm])
    first = (lambda x: x[0]) if n == 1 else (lambda x: x)
    fit_info = {
        "table": table,
        "samples": samples_out,
        "mean": {nm: first(_with_unit(mean[:, names.index(nm)], units[nm])) for nm in names},
        "std": {nm: first(std[:, names.index(nm)] * (units[nm] or u.one)) for nm in names},
        "mad": {nm: first(summary.mad[:, names.index(nm)] * (units[nm] or u.one))
                for nm in names},
        "free_parameters": free,
        "std_uncalibrated": {nm: first(std_raw[:, names.index(nm)] * (units[nm] or u.one))
                             for nm in names},
        "std_scale": dict(std_scale) if std_scale else None,
        "at_model_bounds": at_bounds,
    }
    return fitted, fit_info


def _to_bounds(model, names, mean, samples, free, units):
    """Clip fitted values (and samples) to the bounds of the model given; say which were.

    Refinement keeps within them; a network's prediction (``refine=False``)
    knows only the ranges it was trained on. Returns, per galaxy, the free
    parameters at (or brought to) a bound, ``name=value unit`` strings.
    """
    out = [[] for _ in range(len(mean))]
    for nm in free:
        if nm == "pa" or nm not in names:
            continue
        par = getattr(model, nm)
        lo, hi = par.bounds
        if lo is None and hi is None:
            continue
        unit = units.get(nm)
        conv = [None if b is None else float(b if par.unit is None or unit is None
                                             else (b * par.unit).to_value(unit))
                for b in (lo, hi)]
        # A lower bound of 0 is that of a positive scale (a length, a speed, a
        # brightness), which the fits vary as a logarithm: approached, not pinned.
        lo = -np.inf if conv[0] is None or conv[0] == 0 else conv[0]
        hi = np.inf if conv[1] is None else conv[1]
        k = names.index(nm)
        tol = 1e-7 * (max(hi - lo, 1.0) if np.isfinite(hi - lo) else 1.0)
        at = (mean[:, k] <= lo + tol) | (mean[:, k] >= hi - tol)
        mean[:, k] = np.clip(mean[:, k], lo, hi)
        if samples is not None:
            samples[:, :, k] = np.clip(samples[:, :, k], lo, hi)
        for g in np.flatnonzero(at):
            out[g].append(f"{nm}={mean[g, k]:.4g}{'' if unit is None else ' ' + str(unit)}")
    return out


def _fitted_model(model, layout, mean, cov, names, free, units, inplace=False, held=(),
                  unfitted=()):
    """A copy of ``model`` (a model set for several galaxies) with the fitted values and errors.

    The parameters ``held`` keep the model's values; those ``unfitted`` are
    marked fixed in the result (they were, in the fit).
    """
    n = len(mean)
    fidx = [names.index(nm) for nm in free]
    if n == 1:
        fitted = model if inplace else model.copy()
        for nm in layout.param_names:
            if nm in held:
                continue
            setattr(fitted, nm, _with_unit(mean[0, names.index(nm)], units[nm]))
        for nm in unfitted:
            fitted.fixed[nm] = True
        sub = cov[0][np.ix_(fidx, fidx)]
        fitted.cov_matrix = Covariance(sub, free)
        fitted.stds = StandardDeviations(sub, free)
        return fitted
    kwargs = {}
    for nm in layout.param_names:
        if nm in held:
            value = getattr(model, nm)
            kwargs[nm] = (np.full(n, value.value) * value.unit if value.unit is not None
                          else np.full(n, value.value))
        else:
            kwargs[nm] = _with_unit(mean[:, names.index(nm)], units[nm])
    fixed = {**dict(model.fixed), **{nm: True for nm in unfitted}}
    fitted = type(model)(**kwargs, n_models=n, fixed=fixed, tied=dict(model.tied),
                         bounds=dict(model.bounds), name=model.name)
    subs = [cov[g][np.ix_(fidx, fidx)] for g in range(n)]
    fitted.cov_matrix = [Covariance(s, free) for s in subs]
    fitted.stds = [StandardDeviations(s, free) for s in subs]
    return fitted


def _table(model, layout, observations, frames, mean, std, names, units, held=()):
    """The results table: one row per galaxy (the parameters ``held`` at the model's values)."""
    n = len(observations)
    table = QTable()
    table["galaxy"] = np.arange(n)
    for nm in names:
        j = names.index(nm)
        if nm in layout.param_names and nm in held:
            value = getattr(model, nm)
            col = np.full(n, float(value.value))
            table[nm] = col * value.unit if value.unit is not None else col
            table[f"{nm}_std"] = np.zeros(n) * (value.unit or u.one)
            continue
        table[nm] = _with_unit(mean[:, j], units[nm])
        table[f"{nm}_std"] = std[:, j] * (units[nm] or u.one)
    ix, iy = names.index("x_0"), names.index("y_0")
    xs, ys, xerr, yerr = [], [], [], []
    for g, frame in enumerate(frames):
        x, y = frame.input_pixels(mean[g, ix], mean[g, iy])
        xs.append(x)
        ys.append(y)
        xerr.append(std[g, ix] / frame.input_pixel_scale)
        yerr.append(std[g, iy] / frame.input_pixel_scale)
    table["x_center_pix"] = np.array(xs)
    table["y_center_pix"] = np.array(ys)
    table["x_center_pix_std"] = np.array(xerr)
    table["y_center_pix_std"] = np.array(yerr)
    if all(o.wcs is not None for o in observations):
        from astropy.coordinates import SkyCoord

        coords = [o.wcs.pixel_to_world(x, y)
                  for o, x, y in zip(observations, xs, ys, strict=True)]
        table["center"] = SkyCoord(coords)
    table["pixel_scale"] = np.array([f.input_pixel_scale for f in frames]) * u.arcsec
    return table


def add_observation_columns(fitted, fit_info, observations, distances, layout, std_scale=None):
    """Rejected pixels, cut-outs, distances and lengths in kpc; MC samples onto the model.

    Warns (`~astrokin.exceptions.BoundWarning`) when a free
    parameter's MC samples do not spread at all: it is pinned at the edge of
    the range the network can predict, and the table's ``at_bound`` column
    names it.
    """
    table = fit_info["table"]
    table["n_rejected"] = np.array([sum(len(v) for v in o.rejected.values())
                                    for o in observations])
    fit_info["rejected"] = [
        {reason: np.unravel_index(idx, o.reduction.input_shape)
         for reason, idx in o.rejected.items()}
        for o in observations
    ]
    fit_info["rejected_counts"] = [{r: len(i) for r, i in o.rejected.items()}
                                   for o in observations]
    fit_info["cutout"] = [o.reduction.input_slices(o.offset, o.shape) for o in observations]
    fit_info["binning"] = [o.reduction.binning for o in observations]
    free = fit_info["free_parameters"]
    pinned = [[nm for nm in free if nm in fit_info["std"] and
               float(np.ravel(fit_info["std"][nm].value)[g]) == 0.0]
              for g in range(len(observations))]
    table["at_bound"] = [",".join(p) for p in pinned]
    names = galaxy_names(observations)
    if any(pinned):
        which = "; ".join(f"{names[g]}: {', '.join(p)}" for g, p in enumerate(pinned) if p)
        warnings.warn(
            f"Parameters at the edge of the network's range, with no MC spread ({which}). "
            "The galaxy lies outside the range the network was trained on for these: treat "
            "the values as limits (see the table's 'at_bound' column).",
            BoundWarning, stacklevel=3,
        )
    bounded = fit_info.get("at_model_bounds") or [[] for _ in observations]
    table["at_model_bound"] = [",".join(b.split("=")[0] for b in p) for p in bounded]
    if any(bounded):
        which = "; ".join(f"{names[g]}: {', '.join(p)}" for g, p in enumerate(bounded) if p)
        warnings.warn(
            f"Parameters at the bounds of the model given ({which}): the maps want values "
            "beyond them. Widen the bounds, or treat these as limits (the table's "
            "'at_model_bound' column).", BoundWarning, stacklevel=3)
    fitted.mc_samples = fit_info.get("samples")
    fitted.mc_std_scale = dict(std_scale) if std_scale else None
    fitted.distance = None
    if distances is None:
        return
    fitted.distance = distances[0] if len(observations) == 1 else distances
    table["distance"] = distances
    kpc_per_arcsec = (distances * u.arcsec.to(u.rad)).to(u.kpc)
    for name in layout.param_names:
        unit = layout.model_class.canonical_unit(name)
        if unit is None or unit != u.arcsec or name in ("x_0", "y_0"):
            continue
        table[f"{name}_kpc"] = table[name].to_value(u.arcsec) * kpc_per_arcsec
        table[f"{name}_kpc_std"] = table[f"{name}_std"].to_value(u.arcsec) * kpc_per_arcsec


def amplitude_is_free(model, layout):
    """Whether the fit solves for the mom0 scale (``amplitude`` free in ``model``)."""
    return ("amplitude" in layout.param_names and not model.fixed["amplitude"]
            and not model.tied["amplitude"])


def fitted_amplitude(trained, batch, mean, names):
    """Least-squares amplitude of the rendered mom0 against the input mom0 (input units).

    Parameters
    ----------
    trained : `~astrokin.fitting.trained.TrainedNetwork`
    batch : `~astrokin.fitting.batch.TensorBatch`
        On the network's device.
    mean : numpy.ndarray
        ``(N, P)`` fitted values in the fitting frame.
    names : list of str
        The quantities of ``mean``'s last axis.
    """
    dtype = batch.mom0.dtype
    device = batch.mom0.device
    params = {nm: torch.as_tensor(mean[:, names.index(nm)], dtype=dtype, device=device)
              for nm in trained.layout.param_names}
    params["amplitude"] = torch.ones_like(params["amplitude"])
    with torch.no_grad():
        mom0, _ = trained.network.render(params, batch)
    data = batch.mom0[:, 0] * batch.peak[:, None, None]
    m = batch.mask0
    num = (m * mom0 * data).sum(dim=(-2, -1))
    den = (m * mom0 * mom0).sum(dim=(-2, -1))
    return (num / den).cpu().numpy()


def check_distances(distance, n):
    """Distances as a length Quantity of shape ``(n,)``, or None."""
    if distance is None:
        return None
    if not isinstance(distance, u.Quantity) or not distance.unit.is_equivalent(u.Mpc):
        raise u.UnitsError(f"distance must be a length Quantity (e.g. 16.5 * u.Mpc); got "
                           f"{distance!r}.")
    d = distance.to(u.Mpc)
    d = np.full(n, d.value) * u.Mpc if d.isscalar else d
    if d.shape != (n,):
        raise ValueError(f"distance has {d.size} values for {n} galaxies.")
    if not np.all(np.isfinite(d.value) & (d.value > 0)):
        raise ValueError(f"distance must be finite and positive; got {distance}.")
    return u.Quantity(d, copy=True)


def _with_unit(value, unit):
    return value * unit if unit is not None else np.asarray(value)
