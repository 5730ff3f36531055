r"""Refinement: each galaxy's parameters fitted to its own maps, through the renderer.

The network's prediction is a first guess: the same function for every
galaxy. `refine` takes it and other starts (the geometry of the maps'
moments, `moment_geometry`; in solo fits the bundled network's prediction)
and minimises, for each galaxy separately, the misfit of the rendered maps to
its own maps, in the frame and at the resolution of the maps as fitted
(`astrokin.fitting.map_problems`), with the noise of
`astrokin.fitting.noise`, by the batched Levenberg-Marquardt of
`astrokin.fitting.least_squares`. The starts go on in a tournament, a few
steps at a time; without noise maps, the noise is measured on the residuals
and the fit continued with it. The result has the form of MC dropout's
summary (optimum, covariance, samples), in the network's frame, so that
`astrokin.fitting.results` builds the fitted model from either.
"""

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from astrokin.fitting.least_squares import (
    LMResult,
    jacobian,
    levenberg_marquardt,
    project,
    select,
    unwrapped,
)
from astrokin.fitting.map_problems import (
    MapResiduals,
    frame_shifts,
    prepare_problems,
    smearing_weights,
)
from astrokin.fitting.noise import (
    correlation_kernels,
    effective_dof,
    parameter_covariance,
    residual_correlation,
)
from astrokin.fitting.threads import cpu_workers, thread_map

__all__ = ["COARSE_DERIVATIVES_BEAM", "FIRST_PASS", "MIN_PART", "TABLE_COLUMNS", "Refinement",
           "bundled_guesses", "moment_geometry", "refine"]

#: Without noise maps: iterations before the noise is estimated from the residuals.
FIRST_PASS = 3
#: Beams under 2 pixels are fitted with the renderer's aliased orders (see
#: `refine`); where every beam of a problem is at least this wide (minor FWHM,
#: pixels), the polish's Jacobians are those of the renders without them, 9
#: times cheaper. Measured on exponential discs of 64 x 64 pixels
#: (``benchmarks/aliased_derivatives.py``), the errors from those Jacobians
#: differ from the aliased ones' by at most 1.6% at a 1-pixel beam (80 deg
#: inclined, a 3-pixel scale length; under 0.3% at 60 deg and less), under
#: 0.2% from 1.5 pixels; without a beam or with narrower ones, by up to 15%.
COARSE_DERIVATIVES_BEAM = 1.0


@dataclass
class Refinement:
    """What `refine` found, per galaxy, in each galaxy's grid (fitting) frame.

    Attributes
    ----------
    summary : `~astrokin.fitting.mc_dropout.MCSummary`
        ``mean`` (the optimum), ``cov`` and ``std`` (its covariance), ``mad``
        (of a Gaussian of that covariance) and ``samples`` (drawn from it),
        over the quantities ``names``: what `~astrokin.fitting.results`
        turns into the fitted model.
    amplitude : numpy.ndarray
        ``(N,)`` the mom0 scale at the optimum, in the input's units.
    columns : dict of numpy.ndarray
        Per-galaxy diagnostics for the results table (`TABLE_COLUMNS`).
    """

    summary: object
    amplitude: np.ndarray
    columns: dict


#: The diagnostics `refine` adds to the results table.
TABLE_COLUMNS = ("refined", "converged", "n_iterations", "n_starts", "noise", "chi2_mom0",
                 "chi2_mom1", "rms_mom0", "rms_mom1", "mom1_harmonic", "mom1_structure",
                 "n_free", "bic")


def refine(model, observations, frames, starts, names, fixed, *, noise_maps=None,
           device="cpu", n_samples=0, seed=None, first_index=0, max_iter=40,
           moment_start=True, prior=None, data_weighted=False):
    """Refine the fits of galaxies to their own maps (see the module notes).

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        The model fitted: its free, fixed and tied parameters and its bounds.
    observations : list of `~astrokin.fitting.preprocessing.Observation`
    frames : list of `~astrokin.fitting.frames.FittingFrame`
    starts : list of numpy.ndarray
        Starting points, each ``(N, len(names))`` in the grid frame (the
        network's mean first); the best optimum over them is kept.
    names : list of str
        The quantities of ``starts`` (the model's parameters, then
        ``vsini`` when there is one).
    fixed : dict
        Values of the parameters not fitted, in the grid frame (per-galaxy
        ``(N, 1)`` arrays for framed ones, see
        `~astrokin.fitting.frames.framed_fixed`).
    noise_maps : list of tuple or None, optional
        Per galaxy, ``(mom0_err, mom1_err)`` on its map (None where not
        given): the noise is then estimated from the residuals.
    device : str or torch.device, optional
    n_samples : int, optional
        Samples to draw from each galaxy's covariance (0: none).
    seed : int, optional
        Seed of those samples: galaxy ``i`` draws from the stream
        ``(seed, first_index + i)``, whatever else is in the batch.
    first_index : int, optional
        Position of the first galaxy in a larger catalogue.
    max_iter : int, optional
        Levenberg-Marquardt iterations at most.
    moment_start : bool, optional
        Also start from the geometry the maps' moments give (`moment_geometry`)
        with the first start's profile: a start that does not depend on the
        network, for galaxies the network is wrong about.
    prior : tuple, optional
        ``(names, precision)``: a Gaussian prior centred on the first start
        on the free parameters ``names``, with per-galaxy precision matrices
        ``(N, K, K)`` in the fitter's variables (logarithms for positive
        scales). It keeps what the maps hardly constrain (the rings of a
        ring disc without emission, or closer than the beam) near the start,
        and enters the errors (`astrokin.fitting.ring_fits.node_prior`).
    data_weighted : bool, optional
        Then weight the model's beam smearing by the observed intensity
        (`~astrokin.fitting.map_problems.smearing_weights`, made at the
        optimum) and polish the fit with it: for clumpy discs, arms, bars.

    Returns
    -------
    refinement : `Refinement`
    """
    from astrokin.beams import beam_area_pixels
    from astrokin.fitting.goodness import mom1_harmonics
    from astrokin.fitting.mc_dropout import MCSummary
    from astrokin.fitting.model_choice import information_criterion
    from astrokin.rendering import DiskRenderer

    cls = type(model)
    n, q = len(observations), len(names)
    if moment_start:
        starts = list(starts) + [moment_geometry(observations, frames, starts[0], names, model)]
    # The dispersion changes mom2 only (astrokin.fitting.dispersion fits it).
    free = [nm for nm in cls.param_names if not model.fixed[nm] and not model.tied[nm]
            and nm != "amplitude" and nm not in cls.dispersion_parameters]
    ties = {nm: model.tied[nm] for nm in cls.param_names if model.tied[nm] and not model.fixed[nm]}
    mean = np.zeros((n, q))
    cov = np.zeros((n, q, q))
    amplitude = np.zeros(n)
    columns = {k: np.zeros(n) for k in TABLE_COLUMNS}
    columns["noise"] = np.full(n, "", dtype="<U9")
    samples = np.zeros((n, int(n_samples), q)) if n_samples else None
    # (Galaxies whose polish may take coarse derivatives fitted apart from those
    # whose may not, so that a galaxy's fit does not depend on its batch.)
    problems = prepare_problems(observations, noise_maps=noise_maps, device=device,
                                beam_classes=(2.0, COARSE_DERIVATIVES_BEAM))
    workers = cpu_workers(device, n)
    parts = _shared_out(problems, workers)

    def fit(problem):
        """Refine the galaxies of one problem; their rows of the results are written."""
        rows = problem.index
        m = len(rows)
        shifts = frame_shifts(frames, problem, free)
        fixed_map, per_galaxy = _fixed_in_problem_frame(fixed, free, cls, frames, problem,
                                                        device)
        problem = replace(problem, fixed=per_galaxy)
        renderer = DiskRenderer(cls, problem.shape, dtype=torch.float64, device=device)
        lower, upper, periodic, scales, log = _limits(model, free, frames, rows, problem,
                                                      device)
        residual = MapResiduals(renderer, cls.param_names, free, fixed_map, ties, log)
        start = [_inside(torch.as_tensor(s[rows][:, [names.index(nm) for nm in free]] + shifts,
                                         dtype=torch.float64, device=device), lower, upper,
                         periodic, residual.log) for s in starts]
        if prior is not None:
            problem = _with_prior(problem, prior, free, start[0])
        given = problem.noise_given
        if not given:
            problem = _start_noise(residual, start[0], problem)
        kernels = correlation_kernels(problem.shape, problem.beam, problem.pixel_scale)
        n0 = problem.fit0.sum(dim=(-2, -1)).double()
        n1 = problem.fit1.sum(dim=(-2, -1)).double()
        # Beams under 2 pixels need the renderer's aliased frequencies (9 times
        # dearer): the starts are fitted without them, the optimum then polished
        # with them (prepare_problems puts such galaxies in problems of their own).
        # Their derivatives hardly change with those orders: from beams of
        # COARSE_DERIVATIVES_BEAM pixels, the polish takes its Jacobians from the
        # coarse renders.
        minor = None if problem.beam is None else problem.beam[:, 1] / problem.pixel_scale
        small = minor is None or bool((minor < 2.0).any())
        coarse = residual if not small else MapResiduals(
            DiskRenderer(cls, problem.shape, dtype=torch.float64, device=device,
                         alias_order=0), cls.param_names, free, fixed_map, ties, log)
        best, problem = _multistart(coarse, start, problem, lower, upper, periodic, scales,
                                    max_iter, kernels, n0, n1)
        if small:
            stand_in = minor is not None and bool((minor >= COARSE_DERIVATIVES_BEAM).all())
            best = _polished(residual, best, problem, lower=lower, upper=upper,
                             periodic=periodic, scales=scales, max_iter=max_iter,
                             derivatives=coarse if stand_in else None)
            if not problem.noise_given:
                _, trace = parameter_covariance(best.jacobian, problem.shape, kernels,
                                                prior_precision=problem.prior_matrix)
                best, problem = _reweighted(best, problem, trace, n0, n1)
        if data_weighted and problem.beam is not None:
            problem = replace(problem, weights=smearing_weights(residual, best.theta, problem))
            polished = levenberg_marquardt(residual, best.theta, problem, lower=lower,
                                           upper=upper, periodic=periodic, scales=scales,
                                           max_iter=max_iter)
            best = replace(polished, iterations=polished.iterations + best.iterations)
        cov_t, trace = parameter_covariance(best.jacobian, problem.shape, kernels,
                                            prior_precision=problem.prior_matrix)
        all_rows = torch.arange(m, device=device)
        m0, m1, amp = residual.render(best.theta, all_rows, problem)
        res0 = torch.where(problem.fit0, problem.data0 - m0, torch.zeros_like(m0))
        res1 = torch.where(problem.fit1, problem.data1 - m1, torch.zeros_like(m1))
        r = best.residuals.reshape(m, 2, *problem.shape)
        r = torch.stack([torch.where(problem.fit0, r[:, 0], torch.zeros_like(r[:, 0])),
                         r[:, 1]], dim=1)
        share = trace / (n0 + n1).clamp(min=1.0)
        chi0 = (r[:, 0] ** 2).sum(dim=(-2, -1)) / effective_dof(n0, share * n0)
        chi1 = (r[:, 1] ** 2).sum(dim=(-2, -1)) / effective_dof(n1, share * n1)
        # The errors count measurements as the residuals are correlated: over the
        # beam for noise, over more where the model misses structure.
        fitted = torch.stack([problem.fit0, problem.fit1], dim=1)
        cov_t, _ = parameter_covariance(
            best.jacobian, problem.shape,
            residual_correlation(r, fitted, problem.beam, problem.pixel_scale),
            prior_precision=problem.prior_matrix)
        if given:
            # Known noise: a misfit beyond it (chi2 > 1) widens the errors.
            cov_t = cov_t * torch.clamp(0.5 * (chi0 + chi1), min=1.0)[:, None, None]
        values_of = _values_of(residual, names, cls, problem)
        values, grad = _with_gradient(values_of, best.theta)
        c_all = _capped(grad @ cov_t @ grad.transpose(1, 2), model, names)
        if n_samples:
            draws = _theta_samples(best.theta, cov_t, lower, upper, periodic, int(n_samples),
                                   seed, first_index + rows)
            flat = values_of(draws.reshape(-1, draws.shape[-1]),
                             torch.arange(m, device=device).repeat_interleave(int(n_samples)))
            drawn = flat.reshape(m, int(n_samples), -1).cpu().numpy()
            drawn -= frame_shifts(frames, problem, names)[:, None, :]
            if "pa" in names:
                drawn[..., names.index("pa")] %= 360.0
            samples[rows] = drawn
        values = values.cpu().numpy()
        values -= frame_shifts(frames, problem, names)  # back to the grid frame
        mean[rows] = values
        cov[rows] = c_all.cpu().numpy()
        amplitude[rows] = amp.cpu().numpy()
        geometry = residual.parameters(best.theta, all_rows, problem)
        harmonic, structure = mom1_harmonics(
            res1, problem.fit1, {nm: geometry[nm] for nm in ("inclination", "pa", "x_0", "y_0")},
            problem.pixel_scale, problem.beam, _median_where(problem.sigma1, problem.fit1),
            torch.as_tensor(values[:, names.index("vsini")]) if "vsini" in names else None)
        columns["refined"][rows] = 1
        columns["converged"][rows] = best.converged.cpu().numpy()
        columns["n_iterations"][rows] = best.iterations.cpu().numpy()
        columns["n_starts"][rows] = len(starts)
        columns["noise"][rows] = "given" if given else "residuals"
        columns["chi2_mom0"][rows] = chi0.cpu().numpy() if given else np.nan
        columns["chi2_mom1"][rows] = chi1.cpu().numpy() if given else np.nan
        columns["rms_mom0"][rows] = _rms(res0, problem.fit0)
        columns["rms_mom1"][rows] = _rms(res1, problem.fit1)
        columns["mom1_harmonic"][rows] = harmonic.cpu().numpy()
        columns["mom1_structure"][rows] = structure.cpu().numpy()
        area = torch.as_tensor([beam_area_pixels(observations[g].beam, observations[g].pixel_scale)
                                for g in rows.tolist()], dtype=torch.float64, device=device)
        noise = dict(sigma0=problem.sigma0, sigma1=problem.sigma1) if given else {}
        columns["n_free"][rows] = len(free) + 1  # the mom0 scale too
        columns["bic"][rows] = information_criterion(
            res0, res1, problem.fit0, problem.fit1, len(free) + 1, area, **noise).cpu().numpy()
    # The problems are independent: on a CPU, side by side in threads (the rows
    # they write are their own).
    thread_map(fit, parts, workers)
    for k in ("refined", "converged", "mom1_structure"):
        columns[k] = columns[k].astype(bool)
    for k in ("n_iterations", "n_starts", "n_free"):
        columns[k] = columns[k].astype(int)
    std = np.sqrt(np.clip(np.stack([np.diagonal(c) for c in cov]), 0, None))
    if samples is None:
        mad = std * math.sqrt(2.0 / math.pi)
    else:
        dev = samples - mean[:, None, :]
        if "pa" in names:
            k = names.index("pa")
            dev[..., k] = (dev[..., k] + 180.0) % 360.0 - 180.0
        mad = np.abs(dev).mean(axis=1)
    summary = MCSummary(mean=mean, std=std, mad=mad, cov=cov, samples=samples,
                        n_samples=int(n_samples))
    return Refinement(summary, amplitude, columns)


#: A refinement problem is split into parts of at least this many galaxies so
#: that the CPU's threads share the work (`_shared_out`): fewer would lose more
#: to smaller batches than the threads gain.
MIN_PART = 32


def _shared_out(problems, workers):
    """The problems in parts the ``workers`` threads can share, the largest first.

    A problem with more than a ``1 / (2 workers)`` share of the galaxies (and
    at least twice `MIN_PART`) is split into parts of equal size; each
    galaxy's fit is its own whatever its part (every row of the
    least-squares problems is independent).
    """
    if workers == 1:
        return list(problems)
    share = max(MIN_PART, -(-sum(len(p) for p in problems) // (2 * workers)))
    parts = []
    for problem in problems:
        k = -(-len(problem) // share)
        bounds = np.linspace(0, len(problem), k + 1).round().astype(int)
        parts += [problem if k == 1 else
                  problem.rows(torch.arange(a, b, device=problem.data0.device))
                  for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return sorted(parts, key=lambda p: -len(p) * math.prod(p.shape))


def bundled_guesses(model, batch, framed):
    """The bundled networks' predictions, as more starts for refining a fit from scratch.

    Refining a solo or combined fit must never end worse than refining the
    blind guess: where a bundled network predicts the model being fitted,
    its prediction (MC mean, grid frame) is a start too.

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
    batch : `~astrokin.fitting.batch.PreparedBatch`
    framed : dict
        The fixed values in the grid frame (`~astrokin.fitting.frames.framed_fixed`).

    Returns
    -------
    starts : list of numpy.ndarray
        ``(N, P)`` each; empty when no bundled network fits ``model``.
    """
    from astrokin.fitting.persistence import bundled_networks

    out = []
    for trained in bundled_networks():
        try:
            layout = trained.layout.check_compatible(model)
        except ValueError:
            continue
        summary, _ = trained.mc_summary(batch, 100, fixed=framed, ties=layout.ties,
                                        overrides=layout.overrides, seed=0)
        out.append(summary.mean)
    return out


def moment_geometry(observations, frames, start, names, model):
    r"""A start whose geometry comes from the maps' moments, not from the network.

    Centre: the mom0-weighted centroid. Inclination: the axis ratio of the
    mom0 second moments, less the beam's (``cos i = b / a``). PA: the
    direction of the velocity-weighted centroid of ``mom1 - v_sys`` (the
    receding side). Systemic velocity: the mom0-weighted median of mom1.
    The other parameters are those of ``start``, with the velocity scale
    keeping ``start``'s :math:`V \sin i`. Parameters the model fixes keep
    their values.

    Parameters
    ----------
    observations : list of `~astrokin.fitting.preprocessing.Observation`
    frames : list of `~astrokin.fitting.frames.FittingFrame`
    start : numpy.ndarray
        ``(N, len(names))`` in the grid frame.
    names : list of str
    model : `~astrokin.models.KinematicDiskModel`

    Returns
    -------
    start : numpy.ndarray
        ``(N, len(names))`` in the grid frame.
    """
    out = np.array(start, dtype=float, copy=True)
    free = {nm for nm in type(model).param_names if not model.fixed[nm] and not model.tied[nm]}
    lo_i, hi_i = (float(b) for b in model.inclination.bounds)
    vname = type(model).velocity_scale_parameter
    for g, (o, frame) in enumerate(zip(observations, frames, strict=True)):
        m0 = np.asarray(o.mom0, dtype=float)
        m1 = np.asarray(o.mom1, dtype=float)
        ok0 = np.isfinite(m0) & (m0 > 0)
        ok1 = ok0 & np.isfinite(m1)
        if ok1.sum() < 8:
            continue
        ny, nx = m0.shape
        y, x = np.mgrid[:ny, :nx]
        x = (x - (nx - 1) / 2) * o.pixel_scale
        y = (y - (ny - 1) / 2) * o.pixel_scale
        w = np.where(ok0, m0, 0.0)
        xc, yc = (np.sum(w * c) / w.sum() for c in (x, y))
        dx, dy = x - xc, y - yc
        cov = np.array([[np.sum(w * dx * dx), np.sum(w * dx * dy)],
                        [np.sum(w * dx * dy), np.sum(w * dy * dy)]]) / w.sum()
        beam2 = 0.0 if o.beam is None else (o.beam[0] * o.beam[1]) / (8 * np.log(2))
        lam = np.clip(np.linalg.eigvalsh(cov) - beam2, 1e-6, None)
        inc = np.degrees(np.arccos(np.sqrt(lam[0] / lam[1])))
        vw = np.where(ok1, m0, 0.0)
        v = m1[ok1]
        order = np.argsort(v)
        cum = np.cumsum(vw[ok1][order])
        v_sys = float(v[order][np.searchsorted(cum, 0.5 * cum[-1])])
        dv = np.where(ok1, m1 - v_sys, 0.0) * vw
        px, py = np.sum(dv * dx), np.sum(dv * dy)
        pa = float(np.degrees(np.arctan2(-px, py))) % 360.0
        geometry = {"x_0": xc, "y_0": yc, "pa": pa, "v_sys": v_sys,
                    "inclination": float(np.clip(inc, lo_i + 1.0, min(hi_i, 88.0)))}
        for nm, value in geometry.items():
            if nm in free and nm in names:
                shift = frame.grid_shift(nm) if nm in ("x_0", "y_0", "pa") else 0.0
                out[g, names.index(nm)] = value - shift
        if vname in free and "vsini" in names:
            sin_i = np.sin(np.radians(geometry["inclination"]))
            out[g, names.index(vname)] = abs(out[g, names.index("vsini")]) / max(sin_i, 0.05)
    return out


def _with_prior(problem, prior, free, centre):
    """The problem with a Gaussian prior on the parameters ``prior[0]``, at ``centre``."""
    names, precision = prior
    rows = problem.index
    full = torch.zeros((len(rows), len(free), len(free)), dtype=torch.float64,
                       device=centre.device)
    cols = [free.index(nm) for nm in names if nm in free]
    keep = [k for k, nm in enumerate(names) if nm in free]
    lam = torch.as_tensor(np.asarray(precision)[rows][:, keep][:, :, keep], dtype=torch.float64,
                          device=centre.device)
    idx = torch.as_tensor(cols, device=centre.device)
    full[:, idx[:, None], idx[None, :]] = lam
    return replace(problem, prior_centre=centre.clone(), prior_matrix=full)


def _fixed_in_problem_frame(fixed, free, cls, frames, problem, device):
    """The values of the parameters not fitted: shared floats, and per-galaxy tensors."""
    out, per_galaxy = {}, {}
    rows = problem.index
    for nm in cls.param_names:
        if nm in free:
            continue
        value = fixed[nm]
        if isinstance(value, np.ndarray) and value.ndim:
            v = value[rows, 0] + frame_shifts(frames, problem, [nm])[:, 0]
            per_galaxy[nm] = torch.as_tensor(v, dtype=torch.float64, device=device)
            out[nm] = float("nan")
        else:
            out[nm] = float(value)
    return out, per_galaxy


def _limits(model, free, frames, rows, problem, device):
    """Bounds, periods, scales and log-varied names of the fitted parameters (map frame).

    Positive scales (lengths, the rotation speed, anything bounded below by
    0 that is not geometry) are varied as logarithms; their bounds and
    scales are given for the logarithm.
    """
    cls = type(model)
    m, p = len(rows), len(free)
    lower = np.full((m, p), -np.inf)
    upper = np.full((m, p), np.inf)
    periodic = np.zeros(p)
    scales = np.ones((m, p))
    log = []
    ps = problem.pixel_scale.cpu().numpy()
    ny, nx = problem.shape
    for k, nm in enumerate(free):
        par = getattr(model, nm)
        unit = cls.canonical_unit(nm)
        lo, hi = (None if b is None else float(b if par.unit is None or unit is None else
                                                (b * par.unit).to_value(unit))
                  for b in par.bounds)
        if unit is not None and unit.physical_type == "angle" and nm not in ("inclination",
                                                                           "pa"):
            scales[:, k] = ps
        if nm == "pa" and (lo is None or hi is None or hi - lo >= 360.0):
            periodic[k] = 360.0
            continue
        for j, g in enumerate(rows):
            a, c = frames[g].map_affine(nm) if nm in ("x_0", "y_0", "pa") else (1.0, 0.0)
            off = problem.offset[j, 0 if nm == "x_0" else 1] if nm in ("x_0", "y_0") else 0.0
            bl = -np.inf if lo is None else (lo - c) / a + off
            bh = np.inf if hi is None else (hi - c) / a + off
            lower[j, k], upper[j, k] = min(bl, bh), max(bl, bh)
        if nm in ("x_0", "y_0"):
            half = 0.5 * (nx if nm == "x_0" else ny) * ps
            lower[:, k] = np.maximum(lower[:, k], -half)
            upper[:, k] = np.minimum(upper[:, k], half)
        elif unit is not None and unit.physical_type == "angle" and nm != "inclination":
            # Lengths: positive, and at most a few times the map.
            lower[:, k] = np.maximum(lower[:, k], 1e-3 * ps)
            upper[:, k] = np.minimum(upper[:, k], 4.0 * max(ny, nx) * ps)
        if nm not in ("inclination", "pa", "x_0", "y_0", "v_sys") and lo is not None \
                and lo >= 0.0:
            log.append(nm)
            # (A hair inside, so that exp(log(bound)) is never past the bound.)
            lower[:, k] = np.log(np.maximum(lower[:, k], 1e-6 * scales[:, k])) + 1e-12
            upper[:, k] = np.log(upper[:, k]) - 1e-12
            scales[:, k] = 1.0
    t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
    return t(lower), t(upper), t(periodic), t(scales), log


def _inside(theta, lower, upper, periodic, log):
    """Starting values (logarithms where varied so) a little inside their bounds.

    A start on a bound can be a stationary point (the maps of an edge-on
    disc do not change to first order in the inclination).
    """
    theta = theta.clone()
    for k, is_log in enumerate(log):
        if is_log:
            theta[:, k] = torch.log(theta[:, k].clamp(min=1e-300))
    finite = torch.isfinite(lower) & torch.isfinite(upper)
    margin = torch.where(finite, 1e-3 * (upper - lower), torch.zeros_like(lower))
    inner = torch.minimum(torch.maximum(theta, lower + margin), upper - margin)
    return torch.where(periodic[None, :] > 0, theta, inner)


#: Without noise maps, the mom1 noise is taken to grow as (mom0 / peak) ** -MOM1_NOISE_POWER
#: towards the faint edge (a moment map's velocity error goes as 1 / S/N), up to
#: MOM1_NOISE_CAP times its level at the peak.
MOM1_NOISE_POWER = 1.0
MOM1_NOISE_CAP = 30.0


def _start_noise(residual, theta, problem):
    """Noise maps for a first fit without given ones, from the residuals at the start.

    mom0: one level per galaxy. mom1: a level times the shape
    (`MOM1_NOISE_POWER`) of the starting model's mom0, so that the faint
    edge, where velocities are noisiest, weighs less.
    """
    rows = torch.arange(len(problem), device=theta.device)
    m0, m1, _ = residual.render(theta, rows, problem)
    peak_model = m0.abs().amax(dim=(-2, -1), keepdim=True).clamp(min=1e-300)
    relative = (m0 / peak_model).clamp(min=1.0 / MOM1_NOISE_CAP ** (1.0 / MOM1_NOISE_POWER))
    shape1 = relative ** -MOM1_NOISE_POWER
    r0 = torch.where(problem.fit0, problem.data0 - m0, torch.zeros_like(m0))
    r1 = torch.where(problem.fit1, (problem.data1 - m1) / shape1, torch.zeros_like(m1))
    n0 = problem.fit0.sum(dim=(-2, -1)).clamp(min=1)
    n1 = problem.fit1.sum(dim=(-2, -1)).clamp(min=1)
    peak = problem.data0.abs().amax(dim=(-2, -1)).clamp(min=1e-300)
    s0 = torch.maximum(torch.sqrt((r0 * r0).sum(dim=(-2, -1)) / n0), 1e-12 * peak)
    s1 = torch.sqrt((r1 * r1).sum(dim=(-2, -1)) / n1).clamp(min=1e-9)
    return problem.with_noise(s0[:, None, None].expand_as(problem.sigma0).clone(),
                              s1[:, None, None] * shape1)


def _polished(residual, best, problem, **options):
    """``best`` fitted on from its optimum with ``residual`` (`levenberg_marquardt` ``options``).

    The polish starts from the Jacobian already at hand (of the coarser
    renders: the aliased orders change the maps, and hardly their
    derivatives) and ends with one rendered at its optimum (by
    ``derivatives``, when given, see `COARSE_DERIVATIVES_BEAM`).
    """
    r = residual(best.theta, torch.arange(len(problem), device=best.theta.device), problem)
    # (The Jacobian at hand is the coarse renders': a stand-in's where those
    # give the polish's derivatives, not the residuals' own otherwise.)
    own = best.fresh if options.get("derivatives") is not None else torch.zeros_like(best.fresh)
    start = replace(best, cost=problem.cost(best.theta, r), residuals=r, fresh=own)
    more = levenberg_marquardt(residual, best.theta, problem, start=start, **options)
    return replace(more, iterations=more.iterations + best.iterations)


def _rescaled(residuals, f0, f1):
    """Whitened residuals ``(M, 2 N)`` for noise levels ``f0``, ``f1`` times those they had.

    Exact: the mom0 scale fitted does not change with a common factor on
    the noise, and every residual (upper limits too) is divided by it.
    """
    m = residuals.shape[0]
    factor = torch.stack([f0, f1], dim=1)[:, :, None]
    return (residuals.reshape(m, 2, -1) / factor).reshape(m, -1)


def _noise_factors(best, problem, trace, n0, n1):
    """Per galaxy, the RMS of each map's whitened residuals (degrees of freedom counted)."""
    m = len(problem)
    r = best.residuals.reshape(m, 2, -1)
    share = trace / (n0 + n1).clamp(min=1.0)
    # The measured pixels only (upper limits are not noise samples).
    r0 = torch.where(problem.fit0.flatten(1), r[:, 0], torch.zeros_like(r[:, 0]))
    f0 = torch.sqrt((r0 ** 2).sum(dim=1) / effective_dof(n0, share * n0)).clamp(min=1e-12)
    f1 = torch.sqrt((r[:, 1] ** 2).sum(dim=1) / effective_dof(n1, share * n1)).clamp(min=1e-12)
    return f0, f1


def _reweighted(best, problem, trace, n0, n1):
    """Noise levels from the residuals at the optimum; the result re-whitened with them.

    Each map's noise is scaled by the RMS of its whitened residuals (with
    the degrees of freedom the fit took subtracted). Returns the rescaled
    result and the problem with the new noise.
    """
    m = len(problem)
    f0, f1 = _noise_factors(best, problem, trace, n0, n1)
    scale = 1.0 / torch.stack([f0, f1], dim=1)[:, :, None]
    jac = best.jacobian.reshape(m, 2, -1, best.jacobian.shape[-1]) * scale[..., None]
    problem = problem.with_noise(problem.sigma0 * f0[:, None, None],
                                 problem.sigma1 * f1[:, None, None])
    # The residuals and the Jacobian rescaled (exact, see _rescaled).
    res = _rescaled(best.residuals, f0, f1)
    cost = problem.cost(best.theta, res)
    out = LMResult(best.theta, cost, jac.reshape(best.jacobian.shape),
                   res, best.iterations, best.converged, best.fresh)
    return out, problem


#: Starts whose cost after the first iterations is within this factor of the
#: galaxy's best go on (in rounds of ROUND steps) while within PRUNE_FACTOR of
#: it; the lowest optimum is kept.
CONTINUE_FACTOR = 10.0
ROUND = 4
PRUNE_FACTOR = 2.0
#: Two starts of a galaxy closer than this (in the parameters' scales: deg,
#: pixels, or relative for positive scales) are one: only the better goes on.
MERGE_DISTANCE = 0.3


def _galaxy_min(cost, galaxy, m):
    """Per galaxy, the lowest cost of its rows."""
    out = torch.full((m,), float("inf"), dtype=cost.dtype, device=cost.device)
    return out.scatter_reduce(0, galaxy, cost, reduce="amin")


def _merged(res, alive, galaxy, best, periodic, scales):
    """Which starts ``alive`` have reached their galaxy's leading start (`MERGE_DISTANCE`).

    The leading start itself is not merged; ``best`` is each galaxy's lowest cost.
    """
    lead = torch.full((len(best),), -1, dtype=torch.long, device=best.device)
    at_best = torch.nonzero(res.cost == best[galaxy]).flatten()
    lead[galaxy[at_best]] = at_best
    ahead = lead[galaxy[alive]]
    gap = unwrapped(res.theta[alive] - res.theta[ahead], periodic)
    return ((gap.abs() / scales[alive]).amax(dim=1) < MERGE_DISTANCE) & (ahead != alive)


def _multistart(residual, starts, problem, lower, upper, periodic, scales, max_iter, kernels,
                n0, n1):
    """Levenberg-Marquardt from every start; each galaxy's lowest optimum, and its noise.

    With noise maps, every start is fitted to convergence. Without, every
    start takes `FIRST_PASS` steps; the residuals of each galaxy's best
    start then set its noise levels (common to its starts, so that their
    costs compare); the starts within `CONTINUE_FACTOR` of the best go on,
    a few steps at a time, while within `PRUNE_FACTOR` of it; and the noise
    is measured once more at the optimum kept.
    """
    m, s = len(problem), len(starts)
    dev = lower.device
    galaxy = torch.arange(m, device=dev).repeat(s)
    stacked = problem.rows(galaxy) if s > 1 else problem
    lo, hi, sc = lower[galaxy], upper[galaxy], scales[galaxy]
    theta = torch.cat(starts)
    first = max_iter if problem.noise_given else min(FIRST_PASS, max_iter)
    res = levenberg_marquardt(residual, theta, stacked, lower=lo, upper=hi, periodic=periodic,
                              scales=sc, max_iter=first, final_jacobian=False)
    if not problem.noise_given:
        lead = res.cost.reshape(s, m).argmin(dim=0) * m + torch.arange(m, device=dev)
        _, trace = parameter_covariance(res.jacobian[lead], problem.shape, kernels,
                                        prior_precision=problem.prior_matrix)
        f0, f1 = _noise_factors(select(res, lead), problem, trace, n0, n1)
        problem = problem.with_noise(problem.sigma0 * f0[:, None, None],
                                     problem.sigma1 * f1[:, None, None])
        stacked = problem.rows(galaxy) if s > 1 else problem
        scale = 1.0 / torch.stack([f0, f1], dim=1)[galaxy][:, :, None, None]
        jac = res.jacobian.reshape(s * m, 2, -1, theta.shape[1]) * scale
        r0 = _rescaled(res.residuals, f0[galaxy], f1[galaxy])
        res = LMResult(res.theta, stacked.cost(res.theta, r0),
                       jac.reshape(s * m, -1, theta.shape[1]), r0, res.iterations,
                       res.converged, res.fresh)
        # A tournament: the starts go on in rounds of a few steps, and those that
        # fall behind their galaxy's best, or have reached its leading start, are
        # dropped (the first time right after the first pass).
        best = _galaxy_min(res.cost, galaxy, m)
        alive = torch.nonzero(res.cost <= CONTINUE_FACTOR * best[galaxy]).flatten()
        alive = alive[~_merged(res, alive, galaxy, best, periodic, sc)]
        spent = torch.zeros_like(res.iterations)
        while alive.numel():
            # (Every start going on: the result itself is continued, its Jacobian
            # in place, without copies of it.)
            every = alive.numel() == len(galaxy)
            sub = stacked if every else stacked.rows(alive)
            more = levenberg_marquardt(residual, res.theta[alive], sub, lower=lo[alive],
                                       upper=hi[alive], periodic=periodic, scales=sc[alive],
                                       max_iter=ROUND, start=res if every else select(res, alive),
                                       final_jacobian=False)
            for name in ("theta", "cost", "jacobian", "residuals", "converged", "fresh"):
                if getattr(more, name) is not getattr(res, name):
                    getattr(res, name)[alive] = getattr(more, name)
            res.iterations[alive] += more.iterations
            spent[alive] += ROUND
            best = _galaxy_min(res.cost, galaxy, m)
            going = ~more.converged & (spent[alive] < max_iter) \
                & ~_merged(res, alive, galaxy, best, periodic, sc) \
                & (res.cost[alive] <= PRUNE_FACTOR * best[galaxy[alive]])
            alive = alive[going]
    pick = res.cost.reshape(s, m).argmin(dim=0) * m + torch.arange(m, device=dev)
    best = select(res, pick)
    # The errors need the Jacobian at the optimum itself, rendered (where the last
    # one was not rendered there).
    stale = torch.nonzero(~best.fresh).flatten()
    if stale.numel():
        best.jacobian[stale] = jacobian(residual, best.theta[stale], stale, problem,
                                        scales[stale], r0=best.residuals[stale])[0]
        best.fresh[stale] = True
    best = replace(best, cost=problem.cost(best.theta, best.residuals))
    if not problem.noise_given:
        _, trace = parameter_covariance(best.jacobian, problem.shape, kernels,
                                        prior_precision=problem.prior_matrix)
        best, problem = _reweighted(best, problem, trace, n0, n1)
    return best, problem


def _values_of(residual, names, cls, problem):
    """``values(theta, rows)``: the quantities ``names`` of the problems ``rows`` at ``theta``."""
    vname = cls.velocity_scale_parameter

    def values(theta, rows):
        params = residual.parameters(theta, rows, problem)
        cols = [params[nm] for nm in names if nm != "vsini"]
        if "vsini" in names:
            cols.append(params[vname] * torch.sin(torch.deg2rad(params["inclination"])))
        return torch.stack(cols, dim=-1)

    return values


def _with_gradient(values_of, theta):
    """The quantities at ``theta`` and their derivatives ``(M, Q, P)`` (forward differences)."""
    rows = torch.arange(theta.shape[0], device=theta.device)
    v = values_of(theta, rows)
    h = 1e-6 * torch.maximum(theta.abs(), torch.ones_like(theta))
    grads = []
    for k in range(theta.shape[1]):
        moved = theta.clone()
        moved[:, k] += h[:, k]
        grads.append((values_of(moved, rows) - v) / h[:, k:k + 1])
    return v, torch.stack(grads, dim=-1)


def _capped(cov, model, names):
    """Covariances whose errors are no wider than a uniform spread over the bounds.

    An unconstrained parameter (the inclination of a barely resolved disc)
    has a curvature near zero; its error is at most that of knowing only
    that it lies within its bounds, ``(high - low) / sqrt(12)``.
    """
    limit = torch.full((len(names),), float("inf"), dtype=cov.dtype, device=cov.device)
    cls = type(model)
    for k, nm in enumerate(names):
        if nm not in cls.param_names or nm == "pa":
            continue
        par = getattr(model, nm)
        unit = cls.canonical_unit(nm)
        lo, hi = par.bounds
        if lo is None or hi is None:
            continue
        if par.unit is not None and unit is not None:
            lo, hi = ((b * par.unit).to_value(unit) for b in (lo, hi))
        limit[k] = (float(hi) - float(lo)) / math.sqrt(12.0)
    std = torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2).clamp(min=0.0))
    f = torch.clamp(limit / std.clamp(min=1e-300), max=1.0)
    return cov * f[:, :, None] * f[:, None, :]


def _theta_samples(theta, cov, lower, upper, periodic, n, seed, streams):
    """``(M, n, P)`` draws of the fitted parameters from their Gaussian, within bounds.

    Drawn in the coordinates fitted (logarithms of positive scales), so that
    they stay positive; clipped to the bounds; galaxy ``i`` draws from the
    stream ``(seed, streams[i])``.
    """
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    m, p = theta.shape
    c = 0.5 * (cov + cov.transpose(1, 2)).cpu().numpy()
    out = np.empty((m, n, p))
    for j in range(m):
        w, v = np.linalg.eigh(c[j])
        root = v * np.sqrt(np.clip(w, 0, None))
        rng = np.random.default_rng([int(seed) % 2**63, int(streams[j])])
        out[j] = rng.standard_normal((n, p)) @ root.T
    draws = theta[:, None, :] + torch.as_tensor(out, dtype=theta.dtype, device=theta.device)
    flat = project(draws.reshape(m * n, p), lower.repeat_interleave(n, dim=0),
                    upper.repeat_interleave(n, dim=0), periodic)
    return flat.reshape(m, n, p)


def _median_where(values, where):
    """Per-galaxy median of ``values`` over ``where`` (1 where empty)."""
    v = torch.where(where, values, torch.full_like(values, float("nan"))).flatten(1)
    return torch.nanmedian(v, dim=1).values.nan_to_num(1.0)


def _rms(residual, fitted):
    n = fitted.sum(dim=(-2, -1)).clamp(min=1)
    return torch.sqrt((residual * residual).sum(dim=(-2, -1)) / n).cpu().numpy()
