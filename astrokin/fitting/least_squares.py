"""Batched Levenberg-Marquardt: every row of a tensor its own least-squares problem.

Every galaxy (and every start) is one row of the same tensor operations,
with its own damping and its own stopping test. The Jacobian comes from the
residuals' own derivatives where they have them (the renderer's, exact; see
`jacobian`), else from one batched render of forward differences, and is
corrected between renders by Broyden's secant updates. Bounds are respected
by projection (`project`), with the parameters pinned at a bound left out
of a step; periodic ones (the position angle) are wrapped.
"""

import math
from dataclasses import dataclass

import torch

__all__ = ["BROYDEN_STEPS", "FD_STEP", "LINEAR_CELLS", "RENDER_CHUNK", "LMResult", "jacobian",
           "levenberg_marquardt", "project", "select", "unwrapped"]

#: Relative forward-difference step of the Jacobian (float64 renders).
FD_STEP = 1e-6
#: Secant (Broyden) updates of the Jacobian between two rendered ones.
BROYDEN_STEPS = 4
#: Renders per call of the renderer while differentiating: bounds the memory, and
#: 32 renders faster per map than 64 on a CPU (measured: they stay in the caches).
RENDER_CHUNK = 32
#: Most derivative-map pixels (problems x pixels x parameters) of one call of a
#: residual's own derivatives (`jacobian`): 32 problems of 64 x 64 maps and 8
#: parameters, one of 512 x 512 maps (its temporaries are ~10 times this in float64).
LINEAR_CELLS = 1_048_576


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
    fresh : torch.Tensor
        ``(M,)`` booleans: the Jacobian was rendered at ``theta`` (by the
        residuals, or the ``derivatives`` of `levenberg_marquardt`), with no
        secant update since.
    """

    theta: torch.Tensor
    cost: torch.Tensor
    jacobian: torch.Tensor
    residuals: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    fresh: torch.Tensor


def jacobian(residual, theta, rows, problem, scales, r0=None):
    """The Jacobian ``(M, N, P)`` of ``residual`` at ``theta``, and the residuals there.

    By the residual's own derivatives where it has them
    (``residual.linearization(theta, rows, problem)``, giving the residuals
    and the Jacobian, or None), at most `RENDER_CHUNK` problems and
    `LINEAR_CELLS` derivative pixels at a time; else by
    forward differences of steps ``FD_STEP * max(|theta|, scales)``.
    """
    m, p = theta.shape
    linear = getattr(residual, "linearization", None)
    if linear is not None:  # (residuals of maps: `MapResiduals` of a `MapProblem`)
        step = max(1, min(RENDER_CHUNK, LINEAR_CELLS // (math.prod(problem.shape) * p)))
        part = linear(theta[:step], rows[:step], problem)
    if linear is not None and part is not None:
        r_i, j_i = part
        jac = torch.empty((m,) + j_i.shape[1:], dtype=j_i.dtype, device=j_i.device)
        jac[:step], r = j_i, [r_i]
        for i in range(step, m, step):
            r_i, jac[i:i + step] = linear(theta[i:i + step], rows[i:i + step], problem)
            r.append(r_i)
        return jac, (torch.cat(r) if r0 is None else r0)
    if r0 is None:
        r0 = residual(theta, rows, problem)
    h = FD_STEP * torch.maximum(theta.abs(), scales)
    shifted = theta[:, None, :].repeat(1, p, 1)
    idx = torch.arange(p, device=theta.device)
    shifted[:, idx, idx] += h
    flat = shifted.reshape(m * p, p)
    rep = rows.repeat_interleave(p)
    parts = [residual(flat[i:i + RENDER_CHUNK], rep[i:i + RENDER_CHUNK], problem)
             for i in range(0, len(flat), RENDER_CHUNK)]
    rs = torch.cat(parts).reshape(m, p, -1)
    return ((rs - r0[:, None, :]) / h[:, :, None]).transpose(1, 2), r0


def levenberg_marquardt(residual, theta, problem, *, lower, upper, periodic, scales,
                        max_iter=40, ftol=1e-10, xtol=1e-8, atol=1e-4, start=None,
                        final_jacobian=True, derivatives=None):
    """Batched Levenberg-Marquardt: each row of ``theta`` is its own problem.

    Parameters
    ----------
    residual : callable
        ``residual(theta, rows, problem)`` gives ``(M, N)`` residuals of the
        problems ``rows`` (a tensor of row indices into ``problem``).
    theta : torch.Tensor
        ``(M, P)`` starting points; row ``i`` is a start of problem ``i``.
    problem : `MapProblem`
        With its prior, if any, part of the cost (`MapProblem.cost`).
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
        parameter by less than ``xtol`` of its scale, or when the undamped
        (Gauss-Newton) model of the cost promises less than that before a
        trial step: the step would gain nothing the errors resolve, for the
        price of a render (near its optimum, after a rejected step, further
        trials and the Jacobians they would call for gain nothing).
    start : `LMResult`, optional
        The Jacobian and residuals at ``theta`` when known (a fit continued
        with other weights), instead of rendering them. Its Jacobian is used,
        and changed, in place (it is the largest array of a fit); its
        ``fresh`` says where it is the residuals' own.
    final_jacobian : bool, optional
        Render the Jacobian at the optimum (for the errors) where it is not
        fresh; otherwise the result may hold a secant estimate (enough to
        continue from, and marked in ``fresh``).
    derivatives : callable, optional
        Residuals of the same signature whose Jacobian stands in for
        ``residual``'s (a cheaper model with the same derivatives, to within
        what the errors need): every Jacobian is then that of
        ``derivatives``, the residuals, costs and steps those of
        ``residual``.

    Returns
    -------
    result : `LMResult`
    """
    m, p = theta.shape
    theta = project(theta.clone(), lower, upper, periodic)

    def jacobian_at(theta, rows, r):
        if derivatives is None:
            return jacobian(residual, theta, rows, problem, scales[rows], r0=r)[0]
        # (Not r: the stand-in's finite differences need its own residuals.)
        return jacobian(derivatives, theta, rows, problem, scales[rows])[0]

    every_row = torch.arange(m, device=theta.device)
    if start is not None:
        jac, r = start.jacobian, start.residuals.clone()
        fresh = start.fresh.clone()
    elif derivatives is None:
        jac, r = jacobian(residual, theta, every_row, problem, scales)
    else:
        r = residual(theta, every_row, problem)
        jac = jacobian_at(theta, every_row, r)
    if start is None:
        fresh = torch.ones(m, dtype=torch.bool, device=theta.device)
    cost = problem.cost(theta, r)
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
        # (While every problem is going on, the Jacobian is used in place: a
        # copy of it is the largest array here.)
        every = active.numel() == m
        j, ra = (jac, r) if every else (jac[active], r[active])
        a = j.transpose(1, 2) @ j
        g = (j.transpose(1, 2) @ ra[:, :, None])[:, :, 0]
        if problem.prior_matrix is not None:  # a Gaussian prior: curvature and pull
            delta, prec = problem.prior_pull(theta[active], active)
            a = a + prec
            g = g + (prec @ delta[:, :, None])[:, :, 0]
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
        # Where the undamped (Gauss-Newton) model promises less than the
        # tolerances, the problem is at its optimum to within what a step could
        # gain: it stops without a trial render. (After a rejected step it is
        # made again on the next pass, with the secant-updated Jacobian.)
        gn = torch.linalg.solve(a + 1e-10 * torch.diag_embed(diag) + 1e-14 * eye,
                                g[:, :, None])[:, :, 0]
        promised = 0.5 * (g * gn).sum(dim=1)
        near = (promised <= atol) | (promised <= ftol * cost[active].clamp(min=1e-300))
        if bool(near.any()):
            done[active[near]] = True
            go = torch.nonzero(~near).flatten()
            if go.numel() == 0:
                continue
            active, every = active[go], False
            j, ra = jac[active], r[active]
            a, g, keep, diag = a[go], g[go], keep[go], diag[go]
        damped = a + lam[active][:, None, None] * torch.diag_embed(diag) + 1e-14 * eye
        step = -torch.linalg.solve(damped, g[:, :, None])[:, :, 0] * keep
        trial = project(theta[active] + step, lower[active], upper[active], periodic)
        r_try = residual(trial, active, problem)
        c_try = problem.cost(trial, r_try, active)
        moved = unwrapped(trial - theta[active], periodic)
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
            # (Every step finite: views, so that the update is in place in jac
            # while every problem goes on; otherwise copies, written back.)
            sel = slice(None) if bool(finite.all()) else finite
            j_f, dm = j[sel], moved[sel]
            dr = r_try[sel] - ra[sel] - (j_f @ dm[:, :, None])[:, :, 0]
            norm = (dm * dm).sum(dim=1).clamp(min=1e-300)
            j_f.baddbmm_(dr[:, :, None], (dm / norm[:, None])[:, None, :])
            rows_f = active[sel]
            if not (every and isinstance(sel, slice)):
                jac[rows_f] = j_f
            broyden[rows_f] += 1
            fresh[rows_f] = False
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
        finished = small_f | small_x | (lam[active] > 1e12) \
            | (iterations[active] >= max_iter)
        done[active[finished]] = True
        # A fresh Jacobian when the secant updates have been trusted long enough,
        # or the model stops predicting the cost (a poor step, or two rejections).
        stale = (broyden[active] >= BROYDEN_STEPS) | (rejected[active] >= 2)
        refresh = active[stale & ~finished]
        if refresh.numel():
            jac[refresh] = jacobian_at(theta[refresh], refresh, r[refresh])
            broyden[refresh] = 0
            rejected[refresh] = 0
            fresh[refresh] = True
    # The errors need the Jacobian at the optimum itself, not a secant estimate.
    redo = torch.nonzero(~fresh).flatten()
    if final_jacobian and redo.numel():
        jac[redo] = jacobian_at(theta[redo], redo, r[redo])
        fresh[redo] = True
    converged = (lam <= 1e12) & (iterations < max_iter)
    return LMResult(theta, cost, jac, r, iterations, converged, fresh)


def unwrapped(delta, periodic):
    """Differences of periodic columns taken the short way round."""
    wrap = periodic > 0
    if not bool(wrap.any()):
        return delta
    period = torch.where(wrap, periodic, torch.ones_like(periodic))[None, :]
    short = torch.remainder(delta + 0.5 * period, period) - 0.5 * period
    return torch.where(wrap[None, :], short, delta)


def project(theta, lower, upper, periodic):
    """Bounds by clipping; periodic columns wrapped."""
    wrap = periodic > 0
    out = torch.where(wrap[None, :], theta, torch.minimum(torch.maximum(theta, lower), upper))
    if bool(wrap.any()):
        period = torch.where(wrap, periodic, torch.ones_like(periodic))
        out = torch.where(wrap[None, :], torch.remainder(out, period[None, :]), out)
    return out


def select(result, rows):
    """The `LMResult` of the problems ``rows`` (an index tensor)."""
    return LMResult(*(getattr(result, f)[rows] for f in ("theta", "cost", "jacobian",
                                                          "residuals", "iterations",
                                                          "converged", "fresh")))
