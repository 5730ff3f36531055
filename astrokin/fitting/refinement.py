r"""Refinement: each galaxy's parameters fitted to its own maps, through the renderer.

The network's prediction is a first guess: the same function for every
galaxy. Refinement takes it (and other starts) and minimises, for each galaxy
separately, the misfit of the rendered maps to the galaxy's own maps, in the
frame and at the resolution of the maps as fitted (the cut-out of
`~astrokin.fitting.preprocessing.Observation`, with its pixel scale, beam
and mask): a weighted least-squares problem

.. math::

    \chi^2(\theta) = \sum_{\rm mom0} \left(\frac{d_0 - A\,m_0(\theta)}{\sigma_0}\right)^2
    + \sum_{\rm mom1} \left(\frac{d_1 - m_1(\theta)}{\sigma_1}\right)^2,

with the mom0 scale :math:`A` solved for at every step (the maps' units
are arbitrary), the noise :math:`\sigma` of `astrokin.fitting.noise`, and
mom0 pixels outside a source-finder mask (mom0 exactly 0, no velocity)
treated as upper limits: they cost only where the model is brighter than the
faintest detected emission. (Measured on KinMS cubes with smooth-and-clip
masks, this biases the disc's size least: a mask made from a smoothed cube
leaves out sightlines brighter than its edge, so a likelihood of censoring
at the edge's level, or at the faintest detection, pulls the disc in.)

The minimiser is Levenberg-Marquardt (`levenberg_marquardt`), batched: every
galaxy (and every start) is one row of the same tensor operations, with its
own damping and its own stopping test. The Jacobian comes from one batched
render of forward differences (in float64, to ~1e-9 of the derivative),
which on a CPU costs less than forward-mode differentiation of the same
renders. Bounds are respected by projection, the position angle is periodic,
fixed parameters are held and tied ones follow their ties.
"""

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from astrokin.fitting.noise import (
    correlation_kernels,
    effective_dof,
    parameter_covariance,
    residual_correlation,
)
from astrokin.fitting.parameters import tie_values

__all__ = ["LMResult", "MapProblem", "Refinement", "levenberg_marquardt", "moment_geometry",
           "prepare_problems", "refine"]

#: Relative forward-difference step of the Jacobian (float64 renders).
FD_STEP = 1e-6
#: Without noise maps: iterations before the noise is estimated from the residuals.
FIRST_PASS = 3
#: Secant (Broyden) updates of the Jacobian between two rendered ones.
BROYDEN_STEPS = 4
#: Renders per call of the renderer while differentiating (bounds the memory).
RENDER_CHUNK = 64


@dataclass
class MapProblem:
    """The maps of galaxies of one shape, ready to be fitted (float64 tensors).

    Attributes
    ----------
    index : numpy.ndarray
        Positions of these galaxies in the batch fitted.
    data0, data1 : torch.Tensor
        ``(B, ny, nx)`` mom0 (input units) and mom1 (km/s), 0 where unused.
    fit0, limit0, fit1 : torch.Tensor
        ``(B, ny, nx)`` booleans: mom0 pixels fitted, mom0 pixels that are
        upper limits (outside a source-finder mask), mom1 pixels fitted.
    threshold0 : torch.Tensor
        ``(B,)`` the level below which mom0 was not detected (for the upper
        limits): the 2nd percentile of the detected mom0.
    sigma0, sigma1 : torch.Tensor
        ``(B, ny, nx)`` the noise of each pixel.
    pixel_scale : torch.Tensor
        ``(B,)`` arcsec.
    beam : torch.Tensor or None
        ``(B, 3)`` in the map frame (NaN rows: no beam).
    offset : numpy.ndarray
        ``(B, 2)`` arcsec: where the centre of each galaxy's own map lies in
        this problem's (padded) grid, ``x`` then ``y``; a centre offset in
        the problem is that in the map plus this.
    noise_given : bool
        Whether ``sigma0``, ``sigma1`` are the user's noise maps.
    fixed : dict
        Per-galaxy values ``(B,)`` of parameters held fixed that differ from
        galaxy to galaxy (a fixed centre or PA, in this problem's frame).
    """

    index: np.ndarray
    data0: torch.Tensor
    data1: torch.Tensor
    fit0: torch.Tensor
    limit0: torch.Tensor
    fit1: torch.Tensor
    threshold0: torch.Tensor
    sigma0: torch.Tensor
    sigma1: torch.Tensor
    pixel_scale: torch.Tensor
    beam: object
    offset: np.ndarray
    noise_given: bool = False
    fixed: dict = field(default_factory=dict)

    @property
    def shape(self):
        """``(ny, nx)`` of the maps."""
        return tuple(self.data0.shape[-2:])

    def __len__(self):
        return int(self.data0.shape[0])

    def with_noise(self, sigma0, sigma1):
        """The same problem with other noise maps."""
        return replace(self, sigma0=sigma0, sigma1=sigma1)

    def rows(self, rows):
        """The problem restricted to the galaxies ``rows`` (an index tensor)."""
        sel = rows.cpu().numpy()
        return MapProblem(self.index[sel], self.data0[rows], self.data1[rows],
                          self.fit0[rows], self.limit0[rows], self.fit1[rows],
                          self.threshold0[rows], self.sigma0[rows], self.sigma1[rows],
                          self.pixel_scale[rows], None if self.beam is None else self.beam[rows],
                          self.offset[sel], self.noise_given,
                          {k: v[rows] for k, v in self.fixed.items()})


#: Map sides are padded up to a multiple of this, so that galaxies whose cut-outs
#: differ a little are fitted in one batch.
SIDE_STEP = 8


def prepare_problems(observations, *, noise_maps=None, device="cpu",
                     min_relative_intensity=1e-3):
    """Group galaxies into `MapProblem` objects of one (padded) shape each.

    Each galaxy's maps are padded, with pixels that are not fitted, up to
    sides that are multiples of `SIDE_STEP`; galaxies of the same padded
    shape, and with or without noise maps alike, form one problem.

    Parameters
    ----------
    observations : list of `~astrokin.fitting.preprocessing.Observation`
    noise_maps : list of tuple or None, optional
        Per galaxy, ``(mom0_err, mom1_err)`` on its map, or None.
    device : str or torch.device, optional
    min_relative_intensity : float, optional
        mom1 is used only where mom0 is above this fraction of its peak, as
        in `~astrokin.fitting.preprocessing.prepare_batch`.

    Returns
    -------
    problems : list of `MapProblem`
        Noise maps as given, or ones (to be set) where none are.
    """
    groups = {}
    for g, o in enumerate(observations):
        padded = tuple(int(-(-n // SIDE_STEP) * SIDE_STEP) for n in o.shape)
        given = noise_maps is not None and noise_maps[g] is not None
        # Beams under 2 pixels need the renderer's aliased (9 times dearer)
        # frequencies; they are fitted apart from the others.
        small = o.beam is None or o.beam[1] / o.pixel_scale < 2.0
        groups.setdefault((padded, given, small), []).append(g)
    out = []
    for (shape, given, _), members in groups.items():
        arrays = {k: [] for k in ("d0", "d1", "f0", "l0", "f1", "s0", "s1")}
        t0, ps, beams, offsets = [], [], [], []
        for g in members:
            o = observations[g]
            m0 = np.asarray(o.mom0, dtype=float)
            m1 = np.asarray(o.mom1, dtype=float)
            ok0 = np.isfinite(m0)
            peak = np.nanmax(np.where(ok0, m0, -np.inf))
            ok1 = np.isfinite(m1) & ok0 & (np.where(ok0, m0, 0.0)
                                           > min_relative_intensity * peak)
            s0 = s1 = np.ones(m0.shape)
            if given:
                s0, s1 = (np.asarray(e, dtype=float) for e in noise_maps[g])
                good0 = np.isfinite(s0) & (s0 > 0)
                ok0, ok1 = ok0 & good0, ok1 & good0 & np.isfinite(s1) & (s1 > 0)
                s0 = np.where(good0, s0, 1.0)
                s1 = np.where(np.isfinite(s1) & (s1 > 0), s1, 1.0)
            # Outside a source-finder mask a moment map has mom0 = 0 and no
            # velocity: an upper limit, not a measurement of zero emission.
            limit = ok0 & ~ok1 & (np.where(ok0, m0, 1.0) <= 0.0)
            detected = m0[ok1 & (m0 > 0)]
            t0.append(float(np.percentile(detected, 2.0)) if detected.size else 0.0)
            widths = [((n - k) // 2, n - k - (n - k) // 2) for n, k in zip(shape, m0.shape,
                                                                          strict=True)]
            (py0, py1), (px0, px1) = widths

            def pad(a, value, widths=widths):
                return np.pad(a, widths, constant_values=value)

            arrays["d0"].append(pad(np.where(ok0, m0, 0.0), 0.0))
            arrays["d1"].append(pad(np.where(ok1, m1, 0.0), 0.0))
            arrays["f0"].append(pad(ok0 & ~limit, False))
            arrays["l0"].append(pad(limit, False))
            arrays["f1"].append(pad(ok1, False))
            arrays["s0"].append(pad(s0, 1.0))
            arrays["s1"].append(pad(s1, 1.0))
            ps.append(o.pixel_scale)
            beams.append(o.beam if o.beam is not None else (np.nan,) * 3)
            offsets.append(((px0 - px1) / 2 * o.pixel_scale, (py0 - py1) / 2 * o.pixel_scale))

        def tensor(values, dtype=torch.float64):
            return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)

        beam = tensor(beams)
        out.append(MapProblem(
            np.asarray(members), tensor(arrays["d0"]), tensor(arrays["d1"]),
            tensor(arrays["f0"], torch.bool), tensor(arrays["l0"], torch.bool),
            tensor(arrays["f1"], torch.bool), tensor(t0), tensor(arrays["s0"]),
            tensor(arrays["s1"]), tensor(ps), None if torch.isnan(beam).all() else beam,
            np.asarray(offsets, dtype=float), bool(given)))
    return out


class MapResiduals:
    """Whitened residuals of rendered maps against a `MapProblem`.

    Parameters
    ----------
    renderer : `~astrokin.rendering.DiskRenderer`
        float64, of the problem's shape.
    names : list of str
        Every parameter of the model, in order.
    free : list of str
        The parameters varied (the columns of ``theta``).
    fixed : dict
        Values of the others (floats); those that differ per galaxy are in
        the problem (`MapProblem.fixed`).
    ties : dict
        Tie callables of the tied parameters.
    log : sequence of str, optional
        Free parameters varied as their logarithm (positive scales: lengths,
        the rotation speed), which keeps them positive and makes their
        steps relative.
    """

    def __init__(self, renderer, names, free, fixed, ties, log=()):
        self.renderer = renderer
        self.names = list(names)
        self.free = list(free)
        self.fixed = fixed
        self.ties = ties or {}
        self.log = [name in log for name in self.free]

    def parameters(self, theta, rows, problem):
        """Every parameter ``(M,)`` of the problems ``rows`` at ``theta`` ``(M, P)``.

        The columns of ``theta`` are the free parameters, or their natural
        logarithms for those listed in ``log``.
        """
        params = {}
        for name in self.names:
            if name in self.free:
                k = self.free.index(name)
                params[name] = torch.exp(theta[:, k]) if self.log[k] else theta[:, k]
                continue
            if name in problem.fixed:
                params[name] = problem.fixed[name][rows]
            else:
                params[name] = torch.full((len(rows),), float(self.fixed[name]),
                                          dtype=theta.dtype, device=theta.device)
        if self.ties:
            params.update(tie_values(self.ties, params, self.names))
        return params

    def render(self, theta, rows, problem):
        """``(mom0, mom1, amplitude)`` of the problems ``rows``, mom0 scaled to the data."""
        params = self.parameters(theta, rows, problem)
        params["amplitude"] = torch.ones_like(params["amplitude"])
        beam = None if problem.beam is None else _beam(problem.beam[rows],
                                                       problem.pixel_scale[rows])
        m0, m1 = self.renderer(params, problem.pixel_scale[rows], beam)
        w0 = problem.fit0[rows] / problem.sigma0[rows] ** 2
        num = (w0 * problem.data0[rows] * m0).sum(dim=(-2, -1))
        den = (w0 * m0 * m0).sum(dim=(-2, -1)).clamp(min=1e-300)
        amp = num / den
        return amp[:, None, None] * m0, m1, amp

    def analytic_columns(self, theta, rows, problem):
        """Jacobian columns known without rendering: ``v_sys`` only shifts mom1."""
        if "v_sys" not in self.free or self.ties or self.log[self.free.index("v_sys")]:
            return {}
        zero = torch.zeros(problem.data0[rows].shape, dtype=theta.dtype, device=theta.device)
        d1 = torch.where(problem.fit1[rows], -1.0 / problem.sigma1[rows], zero)
        return {self.free.index("v_sys"): torch.cat([zero.flatten(1), d1.flatten(1)], dim=1)}

    def __call__(self, theta, rows, problem):
        """Whitened residuals ``(M, 2 ny nx)`` of the problems ``rows`` at ``theta``."""
        m0, m1, _ = self.render(theta, rows, problem)
        s0, s1 = problem.sigma0[rows], problem.sigma1[rows]
        r0 = torch.where(problem.fit0[rows], (problem.data0[rows] - m0) / s0,
                         torch.zeros_like(m0))
        # An upper limit: a model brighter than the faintest detected emission
        # costs what it exceeds it by.
        excess = torch.relu(m0 - problem.threshold0[rows][:, None, None]) / s0
        r0 = torch.where(problem.limit0[rows], -excess, r0)
        r1 = torch.where(problem.fit1[rows], (problem.data1[rows] - m1) / s1,
                         torch.zeros_like(m1))
        return torch.cat([r0.flatten(1), r1.flatten(1)], dim=1)


def _beam(beam, pixel_scale):
    """Beams for the renderer: galaxies without one get one far below a pixel."""
    none = torch.isnan(beam).any(dim=1)
    if not bool(none.any()):
        return beam
    tiny = (1e-6 * pixel_scale)[:, None] * torch.tensor([1.0, 1.0, 0.0], dtype=beam.dtype,
                                                        device=beam.device)
    return torch.where(none[:, None], tiny, beam)


@dataclass
class LMResult:
    """Where `levenberg_marquardt` ended, per problem.

    Attributes
    ----------
    theta : torch.Tensor
        ``(M, P)`` the optimum.
    cost : torch.Tensor
        ``(M,)`` half the sum of squared residuals there.
    jacobian : torch.Tensor
        ``(M, N, P)`` the residuals' Jacobian at the optimum.
    residuals : torch.Tensor
        ``(M, N)``.
    iterations : torch.Tensor
        ``(M,)`` accepted steps.
    converged : torch.Tensor
        ``(M,)`` booleans.
    """

    theta: torch.Tensor
    cost: torch.Tensor
    jacobian: torch.Tensor
    residuals: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor


def jacobian(residual, theta, rows, problem, scales, r0=None):
    """Forward-difference Jacobian ``(M, N, P)`` of ``residual`` at ``theta``."""
    m, p = theta.shape
    if r0 is None:
        r0 = residual(theta, rows, problem)
    known = getattr(residual, "analytic_columns", lambda *a: {})(theta, rows, problem)
    cols = [k for k in range(p) if k not in known]
    h = FD_STEP * torch.maximum(theta.abs(), scales)
    jac = torch.empty((m, r0.shape[1], p), dtype=r0.dtype, device=r0.device)
    for k, column in known.items():
        jac[:, :, k] = column
    if cols:
        idx = torch.as_tensor(cols, device=theta.device)
        shifted = theta[:, None, :].repeat(1, len(cols), 1)
        shifted[:, torch.arange(len(cols)), idx] += h[:, idx]
        flat = shifted.reshape(m * len(cols), p)
        rep = rows.repeat_interleave(len(cols))
        parts = [residual(flat[i:i + RENDER_CHUNK], rep[i:i + RENDER_CHUNK], problem)
                 for i in range(0, len(flat), RENDER_CHUNK)]
        rs = torch.cat(parts).reshape(m, len(cols), -1)
        jac[:, :, idx] = ((rs - r0[:, None, :]) / h[:, idx, None]).transpose(1, 2)
    return jac, r0


def levenberg_marquardt(residual, theta, problem, *, lower, upper, periodic, scales,
                        max_iter=40, ftol=1e-10, xtol=1e-8, atol=1e-4, start=None,
                        final_jacobian=True):
    """Batched Levenberg-Marquardt: each row of ``theta`` is its own problem.

    Parameters
    ----------
    residual : callable
        ``residual(theta, rows, problem)`` gives ``(M, N)`` residuals of the
        problems ``rows`` (a tensor of row indices into ``problem``).
    theta : torch.Tensor
        ``(M, P)`` starting points; row ``i`` is a start of problem ``i``.
    problem : `MapProblem`
    lower, upper : torch.Tensor
        ``(M, P)`` bounds (``-inf``/``inf`` for none).
    periodic : torch.Tensor
        ``(P,)`` periods (0 for none): such parameters are wrapped into
        ``[0, period)`` instead of bounded.
    scales : torch.Tensor
        ``(M, P)`` typical sizes of the parameters (for the difference
        steps and the step-size test).
    max_iter : int, optional
        Jacobian evaluations at most.
    ftol, xtol, atol : float, optional
        A problem has converged when an accepted step lowers the cost by
        less than ``ftol`` of it or by less than ``atol`` (for whitened
        residuals: a step far below the statistical errors), or moves every
        parameter by less than ``xtol`` of its scale.
    start : `LMResult`, optional
        The Jacobian and residuals at ``theta`` when known (a fit continued
        with other weights), instead of rendering them.
    final_jacobian : bool, optional
        Render the Jacobian at the optimum (for the errors); otherwise the
        result may hold a secant estimate (enough to continue from).

    Returns
    -------
    result : `LMResult`
    """
    m, p = theta.shape
    theta = _project(theta.clone(), lower, upper, periodic)
    if start is None:
        jac, r = jacobian(residual, theta, torch.arange(m, device=theta.device), problem,
                          scales)
    else:
        jac, r = start.jacobian.clone(), start.residuals.clone()
    cost = 0.5 * (r * r).sum(dim=1)
    lam = torch.full((m,), 1e-3, dtype=theta.dtype, device=theta.device)
    nu = torch.full_like(lam, 2.0)
    iterations = torch.zeros(m, dtype=torch.long, device=theta.device)
    broyden = torch.zeros_like(iterations)  # secant updates since the last Jacobian
    rejected = torch.zeros_like(iterations)  # rejected steps in a row
    done = torch.zeros(m, dtype=torch.bool, device=theta.device)
    eye = torch.eye(p, dtype=theta.dtype, device=theta.device)
    for _ in range(int(max_iter) * 3):
        active = torch.nonzero(~done).flatten()
        if active.numel() == 0:
            break
        j, ra = jac[active], r[active]
        a = j.transpose(1, 2) @ j
        g = (j.transpose(1, 2) @ ra[:, :, None])[:, :, 0]
        # Parameters held at a bound that the gradient pushes against stay there
        # (the active set); the others take the step.
        th = theta[active]
        span = (upper[active] - lower[active]).clamp(max=1e300)
        pinned = ((th <= lower[active] + 1e-12 * span) & (g > 0)) \
            | ((th >= upper[active] - 1e-12 * span) & (g < 0))
        keep = (~pinned).to(a.dtype)
        a = a * keep[:, :, None] * keep[:, None, :] + torch.diag_embed(1.0 - keep)
        g = g * keep
        diag = torch.diagonal(a, dim1=1, dim2=2).clamp(min=1e-12)
        damped = a + lam[active][:, None, None] * torch.diag_embed(diag) + 1e-14 * eye
        step = -torch.linalg.solve(damped, g[:, :, None])[:, :, 0] * keep
        trial = _project(theta[active] + step, lower[active], upper[active], periodic)
        r_try = residual(trial, active, problem)
        c_try = 0.5 * (r_try * r_try).sum(dim=1)
        moved = _unwrapped(trial - theta[active], periodic)
        predicted = -(g * moved).sum(dim=1) - 0.5 * (moved[:, None, :] @ a
                                                     @ moved[:, :, None])[:, 0, 0]
        ok = torch.isfinite(c_try) & (c_try < cost[active])
        rho = (cost[active] - c_try) / predicted.clamp(min=1e-300)
        gain = cost[active] - c_try
        small_f = ok & ((gain <= ftol * cost[active].clamp(min=1e-300)) | (gain <= atol))
        small_x = (moved.abs() <= xtol * scales[active]).all(dim=1)
        # Broyden's update: the secant of this step corrects the Jacobian along
        # it, without rendering (before the point moves, so that it is J there).
        finite = torch.isfinite(r_try).all(dim=1)
        if bool(finite.any()):
            rows_f = active[finite]
            dm = moved[finite]
            dr = r_try[finite] - r[rows_f] - (jac[rows_f] @ dm[:, :, None])[:, :, 0]
            norm = (dm * dm).sum(dim=1).clamp(min=1e-300)
            jac[rows_f] += dr[:, :, None] * (dm / norm[:, None])[:, None, :]
            broyden[rows_f] += 1
        acc = active[ok]
        if acc.numel():
            theta[acc] = trial[ok]
            r[acc] = r_try[ok]
            cost[acc] = c_try[ok]
            iterations[acc] += 1
            factor = torch.clamp(1.0 - (2.0 * rho[ok] - 1.0) ** 3, min=1.0 / 3.0)
            lam[acc] = lam[acc] * factor
            nu[acc] = 2.0
            rejected[acc] = 0
        rej = active[~ok]
        if rej.numel():
            lam[rej] = lam[rej] * nu[rej]
            nu[rej] = nu[rej] * 2.0
            rejected[rej] += 1
        finished = small_f | small_x | (lam[active] > 1e12) | (iterations[active] >= max_iter)
        done[active[finished]] = True
        # A fresh Jacobian when the secant updates have been trusted long enough,
        # or the model stops predicting the cost (a poor step, or two rejections).
        stale = (broyden[active] >= BROYDEN_STEPS) | (rejected[active] >= 2)
        refresh = active[stale & ~finished]
        if refresh.numel():
            jac[refresh], _ = jacobian(residual, theta[refresh], refresh, problem,
                                       scales[refresh], r0=r[refresh])
            broyden[refresh] = 0
            rejected[refresh] = 0
    # The errors need the Jacobian at the optimum itself, not a secant estimate.
    redo = torch.nonzero(broyden > 0).flatten()
    if final_jacobian and redo.numel():
        jac[redo], _ = jacobian(residual, theta[redo], redo, problem, scales[redo],
                                r0=r[redo])
    converged = (lam <= 1e12) & (iterations < max_iter)
    return LMResult(theta, cost, jac, r, iterations, converged)


def _unwrapped(delta, periodic):
    """Differences of periodic columns taken the short way round."""
    wrap = periodic > 0
    if not bool(wrap.any()):
        return delta
    period = torch.where(wrap, periodic, torch.ones_like(periodic))[None, :]
    short = torch.remainder(delta + 0.5 * period, period) - 0.5 * period
    return torch.where(wrap[None, :], short, delta)


def _project(theta, lower, upper, periodic):
    """Bounds by clipping; periodic columns wrapped."""
    wrap = periodic > 0
    out = torch.where(wrap[None, :], theta, torch.minimum(torch.maximum(theta, lower), upper))
    if bool(wrap.any()):
        period = torch.where(wrap, periodic, torch.ones_like(periodic))
        out = torch.where(wrap[None, :], torch.remainder(out, period[None, :]), out)
    return out


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
                 "chi2_mom1", "rms_mom0", "rms_mom1", "mom1_harmonic", "mom1_structure")


def refine(model, observations, frames, starts, names, fixed, *, noise_maps=None,
           device="cpu", n_samples=0, seed=None, first_index=0, max_iter=40,
           moment_start=True):
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

    Returns
    -------
    refinement : `Refinement`
    """
    from astrokin.fitting.goodness import mom1_harmonics
    from astrokin.fitting.mc_dropout import MCSummary
    from astrokin.rendering import DiskRenderer

    cls = type(model)
    n, q = len(observations), len(names)
    if moment_start:
        starts = list(starts) + [moment_geometry(observations, frames, starts[0], names, model)]
    free = [nm for nm in cls.param_names
            if not model.fixed[nm] and not model.tied[nm] and nm != "amplitude"]
    ties = {nm: model.tied[nm] for nm in cls.param_names if model.tied[nm] and not model.fixed[nm]}
    mean = np.zeros((n, q))
    cov = np.zeros((n, q, q))
    amplitude = np.zeros(n)
    columns = {k: np.zeros(n) for k in TABLE_COLUMNS}
    columns["noise"] = np.full(n, "", dtype="<U9")
    samples = np.zeros((n, int(n_samples), q)) if n_samples else None
    for problem in prepare_problems(observations, noise_maps=noise_maps, device=device):
        rows = problem.index
        m = len(rows)
        shifts = _shifts(frames, problem, free)
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
        given = problem.noise_given
        if not given:
            problem = _start_noise(residual, start[0], problem)
        kernels = correlation_kernels(problem.shape, problem.beam, problem.pixel_scale)
        n0 = problem.fit0.sum(dim=(-2, -1)).double()
        n1 = problem.fit1.sum(dim=(-2, -1)).double()
        # Beams under 2 pixels need the renderer's aliased frequencies (9 times
        # dearer): the starts are fitted without them, the optimum then polished
        # with them.
        small = problem.beam is None or bool(
            (problem.beam[:, 1] / problem.pixel_scale < 2.0).any())
        coarse = residual if not small else MapResiduals(
            DiskRenderer(cls, problem.shape, dtype=torch.float64, device=device,
                         alias_order=0), cls.param_names, free, fixed_map, ties, log)
        best, problem = _multistart(coarse, start, problem, lower, upper, periodic, scales,
                                    max_iter, kernels, n0, n1)
        if small:
            polished = levenberg_marquardt(residual, best.theta, problem, lower=lower,
                                           upper=upper, periodic=periodic, scales=scales,
                                           max_iter=max_iter)
            best = replace(polished, iterations=polished.iterations + best.iterations)
            if not problem.noise_given:
                _, trace = parameter_covariance(best.jacobian, problem.shape, kernels)
                best, problem = _reweighted(residual, best, problem, trace, n0, n1)
        cov_t, trace = parameter_covariance(best.jacobian, problem.shape, kernels)
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
            residual_correlation(r, fitted, problem.beam, problem.pixel_scale))
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
            drawn -= _shifts(frames, problem, names)[:, None, :]
            if "pa" in names:
                drawn[..., names.index("pa")] %= 360.0
            samples[rows] = drawn
        values = values.cpu().numpy()
        values -= _shifts(frames, problem, names)  # back to the grid frame
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
    for k in ("refined", "converged", "mom1_structure"):
        columns[k] = columns[k].astype(bool)
    for k in ("n_iterations", "n_starts"):
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


def _shifts(frames, problem, names):
    """``(B, len(names))``: a value in the problem's frame less its value in the grid frame.

    The grid frame (the network's) and a galaxy's map frame differ by the
    padding of `~astrokin.fitting.frames.FittingFrame.grid_shift`; the
    problem's grid is the map padded again (`MapProblem.offset`).
    """
    out = np.zeros((len(problem), len(names)))
    for j, g in enumerate(problem.index):
        for k, nm in enumerate(names):
            if nm in ("x_0", "y_0"):
                out[j, k] = frames[g].grid_shift(nm) + problem.offset[j, 0 if nm == "x_0" else 1]
    return out


def _fixed_in_problem_frame(fixed, free, cls, frames, problem, device):
    """The values of the parameters not fitted: shared floats, and per-galaxy tensors."""
    out, per_galaxy = {}, {}
    rows = problem.index
    for nm in cls.param_names:
        if nm in free:
            continue
        value = fixed[nm]
        if isinstance(value, np.ndarray) and value.ndim:
            v = value[rows, 0] + _shifts(frames, problem, [nm])[:, 0]
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


def _reweighted(residual, best, problem, trace, n0, n1):
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
    # The residuals anew (upper limits do not scale with the noise); the
    # Jacobian rescaled, which is exact for the measured pixels.
    res = residual(best.theta, torch.arange(m, device=best.theta.device), problem)
    out = LMResult(best.theta, 0.5 * (res ** 2).sum(dim=1), jac.reshape(best.jacobian.shape),
                   res, best.iterations, best.converged)
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
        _, trace = parameter_covariance(res.jacobian[lead], problem.shape, kernels)
        f0, f1 = _noise_factors(_select(res, lead), problem, trace, n0, n1)
        problem = problem.with_noise(problem.sigma0 * f0[:, None, None],
                                     problem.sigma1 * f1[:, None, None])
        stacked = problem.rows(galaxy) if s > 1 else problem
        scale = 1.0 / torch.stack([f0, f1], dim=1)[galaxy][:, :, None, None]
        jac = res.jacobian.reshape(s * m, 2, -1, theta.shape[1]) * scale
        r0 = residual(res.theta, torch.arange(s * m, device=dev), stacked)
        res = LMResult(res.theta, 0.5 * (r0 ** 2).sum(dim=1),
                       jac.reshape(s * m, -1, theta.shape[1]), r0, res.iterations,
                       res.converged)
        # A tournament: the starts go on in rounds of a few steps, and those that
        # fall behind their galaxy's best are dropped.
        best = _galaxy_min(res.cost, galaxy, m)
        alive = torch.nonzero(res.cost <= CONTINUE_FACTOR * best[galaxy]).flatten()
        spent = torch.zeros_like(res.iterations)
        while alive.numel():
            sub = stacked.rows(alive)
            more = levenberg_marquardt(residual, res.theta[alive], sub, lower=lo[alive],
                                       upper=hi[alive], periodic=periodic, scales=sc[alive],
                                       max_iter=ROUND, start=_select(res, alive),
                                       final_jacobian=False)
            for name in ("theta", "cost", "jacobian", "residuals", "converged"):
                getattr(res, name)[alive] = getattr(more, name)
            res.iterations[alive] += more.iterations
            spent[alive] += ROUND
            best = _galaxy_min(res.cost, galaxy, m)
            lead = torch.full((m,), -1, dtype=torch.long, device=dev)
            at_best = torch.nonzero(res.cost == best[galaxy]).flatten()
            lead[galaxy[at_best]] = at_best
            # A start that has reached its galaxy's leading one is the same fit.
            gap = _unwrapped(res.theta[alive] - res.theta[lead[galaxy[alive]]], periodic)
            same = ((gap.abs() / sc[alive]).amax(dim=1) < MERGE_DISTANCE) \
                & (lead[galaxy[alive]] != alive)
            going = ~more.converged & (spent[alive] < max_iter) & ~same \
                & (res.cost[alive] <= PRUNE_FACTOR * best[galaxy[alive]])
            alive = alive[going]
    pick = res.cost.reshape(s, m).argmin(dim=0) * m + torch.arange(m, device=dev)
    best = _select(res, pick)
    rows = torch.arange(m, device=dev)
    # The errors need the Jacobian at the optimum itself, rendered.
    jac, r = jacobian(residual, best.theta, rows, problem, scales)
    best = LMResult(best.theta, 0.5 * (r * r).sum(dim=1), jac, r, best.iterations,
                    best.converged)
    if not problem.noise_given:
        _, trace = parameter_covariance(best.jacobian, problem.shape, kernels)
        best, problem = _reweighted(residual, best, problem, trace, n0, n1)
    return best, problem


def _select(result, rows):
    """The `LMResult` of the problems ``rows`` (an index tensor)."""
    return LMResult(*(getattr(result, f)[rows] for f in ("theta", "cost", "jacobian",
                                                          "residuals", "iterations",
                                                          "converged")))


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
    flat = _project(draws.reshape(m * n, p), lower.repeat_interleave(n, dim=0),
                    upper.repeat_interleave(n, dim=0), periodic)
    return flat.reshape(m, n, p)


def _median_where(values, where):
    """Per-galaxy median of ``values`` over ``where`` (1 where empty)."""
    v = torch.where(where, values, torch.full_like(values, float("nan"))).flatten(1)
    return torch.nanmedian(v, dim=1).values.nan_to_num(1.0)


def _rms(residual, fitted):
    n = fitted.sum(dim=(-2, -1)).clamp(min=1)
    return torch.sqrt((residual * residual).sum(dim=(-2, -1)) / n).cpu().numpy()
