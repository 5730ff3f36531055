r"""The velocity dispersion: each galaxy's second moment fitted about its fit of mom0 and mom1.

A disc's second moment (mom2) is its intrinsic dispersion :math:`\sigma(r)`
added in quadrature to the spread of rotation velocities within the beam
(`astrokin.rendering.DiskRenderer` with ``moment2=True``):

.. math::

    \sigma_{\rm obs}^2 = \frac{B * [I(\sigma^2 + v^2)]}{B * I} - \bar v^2 .

The geometry and the rotation curve are what mom0 and mom1 measure, and the
beam-smearing term depends on them alone; so `fit_dispersion` takes each
galaxy's fit of mom0 and mom1 (refined or the network's), holds it, and
fits the dispersion parameters (``model.dispersion_parameters``: one
``v_disp``, or one per ring) to the observed mom2 by the batched
Levenberg-Marquardt of `astrokin.fitting.least_squares`, from the closed
form of a constant dispersion: :math:`\sigma^2 = {\rm median}(\sigma_{\rm
obs}^2 - \sigma_{\rm smear}^2)`.

**Errors.** The noise of mom2 is the given ``mom2_err`` map (its scale set
by the residuals' reduced chi^2: a cube's map is a linear propagation with a
floor of half a channel), or measured on the residuals (with the beam's correlation of the pixels,
`astrokin.fitting.noise`). The errors of the geometry and rotation curve
enter too: with :math:`J_\sigma` and :math:`J_\theta` the Jacobians of the
whitened mom2 residuals with respect to the dispersion and to the other
fitted parameters, the optimum moves by :math:`G\,\delta\theta`,
:math:`G = -(J_\sigma^T J_\sigma)^{-1} J_\sigma^T J_\theta`, so the
covariance gains :math:`G C_\theta G^T` and the cross terms
:math:`G C_\theta`; MC samples of the dispersion follow the samples of the
other parameters along :math:`G`. A ring disc's dispersions at rings with
little emission are held near the constant start by a weak Gaussian prior
(`RING_PRIOR` km/s), and neighbouring rings' dispersions are tied by a
prior on their difference (`RING_STEP_PRIOR` km/s); both enter the errors.
"""

import math
from dataclasses import replace

import numpy as np
import torch

from astrokin.fitting.least_squares import jacobian, levenberg_marquardt, project
from astrokin.fitting.map_problems import DispersionResiduals, frame_shifts, prepare_problems
from astrokin.fitting.noise import (
    correlation_kernels,
    effective_dof,
    parameter_covariance,
    residual_correlation,
)
from astrokin.fitting.threads import cpu_workers, thread_map

__all__ = ["MIN_PIXELS", "RING_PRIOR", "RING_STEP_PRIOR", "TABLE_COLUMNS", "WINDOW_KEEP",
           "fit_dispersion", "fitted_dispersion"]

#: Width (km/s) of the Gaussian prior that holds a ring's dispersion near the
#: constant one where the rings' mom2 says little.
RING_PRIOR = 30.0
#: Width (km/s) of the Gaussian prior on the change of the dispersion from one
#: ring to the next: rings closer than the beam are not told apart by mom2.
RING_STEP_PRIOR = 8.0
#: Fewest fitted mom2 pixels for a galaxy's dispersion to be fitted.
MIN_PIXELS = 8
#: With a cube's mask ranges: mom2 pixels are fitted where the mask keeps the
#: model line's width to this fraction (see `fit_dispersion`).
WINDOW_KEEP = 0.97
#: The diagnostics `fit_dispersion` adds to the results table.
TABLE_COLUMNS = ("n_mom2", "rms_mom2", "chi2_mom2")


def fitted_dispersion(model):
    """The dispersion parameters of ``model`` that a fit of mom2 varies (not fixed or tied).

    Examples
    --------
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.fitting.dispersion import fitted_dispersion
    >>> fitted_dispersion(ExponentialArctanDisk())
    ['v_disp']
    """
    return [nm for nm in type(model).dispersion_parameters
            if not model.fixed[nm] and not model.tied[nm]]


def fit_dispersion(model, observations, frames, summary, names, *, device="cpu", n_samples=0,
                   seed=None, first_index=0, max_iter=30):
    """Fit the dispersion of galaxies to their mom2 maps (see the module notes).

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        The model fitted: which dispersion parameters are free, and bounds.
    observations : list of `~astrokin.fitting.preprocessing.Observation`
        Those with a ``mom2`` map are fitted; the others keep the model's
        values (with NaN errors).
    frames : list of `~astrokin.fitting.frames.FittingFrame`
    summary : `~astrokin.fitting.mc_dropout.MCSummary`
        The fit of mom0 and mom1 (grid frame) over ``names``.
    names : list of str
        Every parameter of the model, then ``vsini`` when there is one.
    device : str or torch.device, optional
    n_samples : int, optional
        Draws of the dispersion to go with ``summary.samples`` (0: none).
    seed : int, optional
        Galaxy ``i`` draws from the stream ``(seed, first_index + i)``.
    first_index : int, optional
    max_iter : int, optional
        Levenberg-Marquardt iterations at most.

    Returns
    -------
    summary : `~astrokin.fitting.mc_dropout.MCSummary`
        ``summary`` with the dispersion's values, covariance (and its cross
        terms with the other parameters) and samples.
    columns : dict of numpy.ndarray
        `TABLE_COLUMNS` per galaxy: fitted mom2 pixels, the RMS of the mom2
        residuals (km/s) and, with ``mom2_err`` given, their reduced chi^2.
    """
    from astrokin.rendering import DiskRenderer

    cls = type(model)
    n = len(observations)
    disp = fitted_dispersion(model)
    columns = {"n_mom2": np.zeros(n, dtype=int), "rms_mom2": np.full(n, np.nan),
               "chi2_mom2": np.full(n, np.nan)}
    mean, cov = summary.mean.copy(), summary.cov.copy()
    samples = None if summary.samples is None else summary.samples.copy()
    idx_d = [names.index(nm) for nm in disp]
    # Galaxies without mom2 keep the model's value, not measured.
    for g, o in enumerate(observations):
        if getattr(o, "mom2", None) is None:
            cov[g][idx_d, :] = np.nan
            cov[g][:, idx_d] = np.nan
    if not disp:
        return summary, columns
    others = [nm for nm in names if nm in cls.param_names and nm not in disp
              and nm != "amplitude" and not model.fixed[nm] and not model.tied[nm]
              and summary.std[:, names.index(nm)].max() > 0]
    idx_o = [names.index(nm) for nm in others]
    lo_d, hi_d = _bounds(model, disp)
    problems = [p for p in prepare_problems(observations, device=device) if p.data2 is not None]

    def fit(problem):
        """Fit the dispersion of one problem's galaxies; their rows of the results are written."""
        rows = problem.index
        m, ny, nx = len(rows), *problem.shape
        enough = (problem.fit2.flatten(1).sum(dim=1) >= max(MIN_PIXELS, len(disp) + 2)).cpu()
        if not bool(enough.any()):
            for g in rows:
                cov[g][idx_d, :] = cov[g][:, idx_d] = np.nan
            return
        t = lambda a: torch.as_tensor(np.array(a), dtype=torch.float64, device=device)  # noqa: E731
        values = mean[rows] + frame_shifts(frames, problem, names)
        params = {nm: t(values[:, names.index(nm)]) for nm in cls.param_names}
        renderer = DiskRenderer(cls, problem.shape, dtype=torch.float64, device=device)
        residual = DispersionResiduals(renderer, cls.param_names, disp, params)
        all_rows = torch.arange(m, device=device)
        start = _start(residual, problem, len(disp), lo_d, hi_d)
        if problem.low2 is not None:
            problem = _uncut(residual, start, problem)
        lower = t(np.broadcast_to(lo_d, (m, len(disp))))
        upper = t(np.broadcast_to(hi_d, (m, len(disp))))
        periodic = torch.zeros(len(disp), dtype=torch.float64, device=device)
        scales = torch.full((m, len(disp)), 10.0, dtype=torch.float64, device=device)
        prior = None
        if len(disp) > 1:
            k = len(disp)
            step = torch.diff(torch.eye(k, dtype=torch.float64, device=device), dim=0)
            prior = (torch.eye(k, dtype=torch.float64, device=device) / RING_PRIOR ** 2
                     + step.T @ step / RING_STEP_PRIOR ** 2).expand(m, -1, -1)
            problem = replace(problem, prior_centre=start.clone(), prior_matrix=prior.clone())
        options = dict(lower=lower, upper=upper, periodic=periodic, scales=scales,
                       max_iter=max_iter)
        best = levenberg_marquardt(residual, start, problem, **options)
        n2 = problem.fit2.flatten(1).sum(dim=1).double()
        given = all(getattr(observations[g], "mom2_err", None) is not None for g in rows)
        if not given:
            # One noise level per galaxy, from the residuals, and the fit again with it
            # (it moves only through the ring prior's weight).
            kernels = correlation_kernels(problem.shape, problem.beam, problem.pixel_scale)
            _, trace = parameter_covariance(best.jacobian, problem.shape, kernels, prior)
            rms = torch.sqrt((best.residuals ** 2).sum(dim=1) / effective_dof(n2, trace))
            problem = replace(problem, sigma2=problem.sigma2 * rms.clamp(min=1e-6)[:, None, None])
            best = levenberg_marquardt(residual, best.theta, problem, **options)
        r = best.residuals.reshape(m, 1, ny, nx)
        kernel = residual_correlation(r, problem.fit2[:, None], problem.beam,
                                      problem.pixel_scale)
        cov_d, trace = parameter_covariance(best.jacobian, problem.shape, kernel, prior)
        chi2 = (best.residuals ** 2).sum(dim=1) / effective_dof(n2, trace)
        if given:
            # A cube's mom2 noise map is a linear propagation with a floor (half a
            # channel): good weights, but its scale is checked against the residuals.
            cov_d = cov_d * chi2[:, None, None]
        gain = None
        if others:
            # How the optimum moves with the other parameters (implicit function).
            fitted = {**params, **{nm: best.theta[:, k] for k, nm in enumerate(disp)}}
            moved = DispersionResiduals(renderer, cls.param_names, others, fitted)
            theta_o = torch.stack([fitted[nm] for nm in others], dim=1)
            scale_o = torch.ones_like(theta_o)
            j_o, _ = jacobian(moved, theta_o, all_rows, problem, scale_o, r0=best.residuals)
            j_d = best.jacobian
            h = j_d.transpose(1, 2) @ j_d + (0 if prior is None else prior)
            gain = -torch.linalg.solve(h, j_d.transpose(1, 2) @ j_o)
            c_o = t(cov[rows][:, idx_o][:, :, idx_o])
            c_o = torch.nan_to_num(c_o)
            cov_d_total = cov_d + gain @ c_o @ gain.transpose(1, 2)
            cross = gain @ c_o
        else:
            cov_d_total = cov_d
        res_kms = torch.where(problem.fit2, (problem.data2 - residual.render(
            best.theta, all_rows, problem)), torch.zeros_like(problem.data2))
        theta = best.theta.cpu().numpy()
        for j, g in enumerate(rows):
            if not bool(enough[j]):
                cov[g][idx_d, :] = cov[g][:, idx_d] = np.nan
                continue
            mean[g, idx_d] = theta[j]
            cov[g][np.ix_(idx_d, idx_d)] = cov_d_total[j].cpu().numpy()
            if gain is not None:
                cov[g][np.ix_(idx_d, idx_o)] = cross[j].cpu().numpy()
                cov[g][np.ix_(idx_o, idx_d)] = cross[j].cpu().numpy().T
            columns["n_mom2"][g] = int(n2[j])
            columns["rms_mom2"][g] = float(torch.sqrt((res_kms[j] ** 2).sum() / n2[j]))
            if given:
                columns["chi2_mom2"][g] = float(chi2[j])
            if samples is not None and samples.shape[1]:
                samples[g][:, idx_d] = _draws(
                    theta[j], cov_d[j].cpu().numpy(),
                    None if gain is None else gain[j].cpu().numpy(),
                    summary.samples[g][:, idx_o] - summary.mean[g, idx_o],
                    [nm == "pa" for nm in others], lo_d, hi_d, seed, first_index + int(g))

    # The problems are independent: on a CPU, side by side in threads (see
    # astrokin.fitting.threads; the rows they write are their own).
    thread_map(fit, sorted(problems, key=lambda p: -len(p) * math.prod(p.shape)),
               cpu_workers(device, len(problems)))
    std = np.sqrt(np.clip(np.stack([np.diagonal(c) for c in cov]), 0, None))
    std[np.isnan(np.stack([np.diagonal(c) for c in cov]))] = np.nan
    mad = summary.mad.copy()
    mad[:, idx_d] = std[:, idx_d] * np.sqrt(2.0 / np.pi)
    if samples is not None and samples.shape[1]:
        mad[:, idx_d] = np.abs(samples[:, :, idx_d] - mean[:, None, idx_d]).mean(axis=1)
    return replace(summary, mean=mean, cov=cov, std=std, mad=mad, samples=samples), columns


def _bounds(model, names):
    """Lower and upper bounds (km/s) of the dispersion parameters (0 and inf for none)."""
    cls = type(model)
    lo, hi = [], []
    for nm in names:
        par = getattr(model, nm)
        unit = cls.canonical_unit(nm)
        b = [None if v is None else float(v if par.unit is None or unit is None
                                           else (v * par.unit).to_value(unit))
             for v in par.bounds]
        lo.append(0.0 if b[0] is None else max(b[0], 0.0))
        hi.append(np.inf if b[1] is None else b[1])
    return np.array(lo), np.array(hi)


def _start(residual, problem, k, lo, hi):
    """The constant dispersion of the closed form, for every dispersion parameter."""
    m = len(problem)
    rows = torch.arange(m, device=problem.data2.device)
    zero = torch.zeros((m, k), dtype=torch.float64, device=problem.data2.device)
    smear = residual.render(zero, rows, problem)
    excess = torch.where(problem.fit2, problem.data2 ** 2 - smear ** 2,
                         torch.full_like(smear, float("nan"))).flatten(1)
    level = torch.nanmedian(excess, dim=1).values.nan_to_num(1.0)
    start = torch.sqrt(level.clamp(min=1.0))[:, None].expand(m, k).clone()
    lower = torch.as_tensor(lo, dtype=start.dtype, device=start.device)[None].expand(m, k)
    upper = torch.as_tensor(hi, dtype=start.dtype, device=start.device)[None].expand(m, k)
    return project(start, lower, upper, torch.zeros(k, dtype=start.dtype, device=start.device))


def _uncut(residual, theta, problem):
    """Which mom2 pixels to fit, and where to model the cube's mask cutting the line.

    Where the model's line is mostly its intrinsic dispersion (the beam
    smearing below it: a near-Gaussian line), the mask's cut is modelled
    (`~astrokin.fitting.map_problems.truncated_width`). Where the smearing
    dominates, the line is not Gaussian and its cut is not known: those
    pixels are fitted uncut where the mask keeps the line's width to
    `WINDOW_KEEP`, and left out where it does not. Decided once, at the
    start.
    """
    from astrokin.fitting.map_problems import truncated_width

    rows = torch.arange(len(problem), device=theta.device)
    mom1, mom2 = residual.moments(theta, rows, problem)
    sigma = theta.mean(dim=1)[:, None, None]
    gaussian = mom2 * mom2 < 2.0 * sigma * sigma
    cut = truncated_width(mom1, mom2, problem.low2, problem.high2)
    kept = gaussian | (cut >= WINDOW_KEEP * mom2)
    inf = torch.full_like(mom2, float("inf"))
    return replace(problem, fit2=problem.fit2 & kept,
                   low2=torch.where(gaussian, problem.low2, -inf),
                   high2=torch.where(gaussian, problem.high2, inf))


def _draws(theta, cov, gain, deviations, periodic, lo, hi, seed, stream):
    """Samples of one galaxy's dispersion that follow its other parameters' samples."""
    dev = np.array(deviations, dtype=float)
    for k, wrap in enumerate(periodic):
        if wrap:
            dev[:, k] = (dev[:, k] + 180.0) % 360.0 - 180.0
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    rng = np.random.default_rng([int(seed) % 2**63, int(stream), 2])
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    root = v * np.sqrt(np.clip(w, 0, None))
    out = theta + rng.standard_normal((dev.shape[0], theta.size)) @ root.T
    if gain is not None:
        out = out + dev @ gain.T
    return np.clip(out, lo, hi)
