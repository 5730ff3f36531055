r"""A batch of galaxies' own maps as a least-squares problem, and its residuals.

`prepare_problems` groups the galaxies of a fit by (padded) map shape into
`MapProblem` objects: each galaxy's maps as fitted (the cut-out of
`~astrokin.fitting.preprocessing.Observation`), which pixels are fitted and
which are upper limits, their noise, pixel scale and beam. `MapResiduals`
renders a model for any rows of a problem and returns the whitened residuals

.. math::

    r = \left(\frac{d_0 - A\,m_0(\theta)}{\sigma_0},\;
              \frac{d_1 - m_1(\theta)}{\sigma_1}\right),

with the mom0 scale :math:`A` solved for (the maps' units are arbitrary);
mom0 pixels outside a source-finder mask (mom0 exactly 0, no velocity) are
upper limits: they cost only where the model is brighter than the faintest
detected emission. (Measured on KinMS cubes with smooth-and-clip masks, this
biases the disc's size least: a mask made from a smoothed cube leaves out
sightlines brighter than its edge, so a likelihood of censoring at the edge's
level, or at the faintest detection, pulls the disc in.)
"""

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from astrokin.fitting.parameters import tie_values

__all__ = ["MOM2_MIN_RELATIVE_INTENSITY", "SIDE_STEP", "SMEARING_CLIP", "SMEARING_STEPS",
           "DispersionResiduals", "MapProblem", "MapResiduals", "frame_shifts",
           "prepare_problems", "smearing_weights", "truncated_width"]


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
    prior_centre, prior_matrix : torch.Tensor or None
        A Gaussian prior on the fitted parameters (in the fitter's variables:
        logarithms for positive scales): its centre ``(B, P)`` and precision
        (inverse covariance) ``(B, P, P)``, zero for parameters without one;
        None for none. It adds ``0.5 * delta @ precision @ delta``,
        ``delta = theta - centre``, to the cost.
    weights : torch.Tensor or None
        ``(B, ny, nx)`` data weights of the beam smearing (`smearing_weights`):
        the model's velocity map is weighted by its intensity times these;
        None: by its own intensity.
    data2, fit2, sigma2 : torch.Tensor or None
        ``(B, ny, nx)`` the second moment (km/s), the pixels of it fitted
        (see `MOM2_MIN_RELATIVE_INTENSITY`) and its noise (the user's
        ``mom2_err``, or ones); None when no galaxy of the problem has one.
    low2, high2 : torch.Tensor or None
        ``(B, ny, nx)`` the velocity range (km/s, in this problem's frame:
        as observed) the cube's mask kept on each sightline, ``-inf`` and
        ``inf`` where none was given; None when no galaxy has one.
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
    prior_centre: object = None
    prior_matrix: object = None
    weights: object = None
    data2: object = None
    fit2: object = None
    sigma2: object = None
    low2: object = None
    high2: object = None

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
                          {k: v[rows] for k, v in self.fixed.items()},
                          None if self.prior_centre is None else self.prior_centre[rows],
                          None if self.prior_matrix is None else self.prior_matrix[rows],
                          *(None if a is None else a[rows] for a in (
                              self.weights, self.data2, self.fit2, self.sigma2, self.low2,
                              self.high2)))

    def cost(self, theta, residuals, rows=None):
        """``(M,)`` the cost at ``theta``: half the squared residuals, plus the prior's part.

        ``rows`` (an index tensor) says which of the problems ``theta`` and
        ``residuals`` belong to; default all, in order.
        """
        cost = 0.5 * (residuals * residuals).sum(dim=1)
        if self.prior_matrix is None:
            return cost
        delta, lam = self.prior_pull(theta, rows)
        return cost + 0.5 * (delta * (lam @ delta[:, :, None])[:, :, 0]).sum(dim=1)

    def prior_pull(self, theta, rows=None):
        """``(delta, precision)``: ``theta`` less the prior's centre, and its precision."""
        c, lam = self.prior_centre, self.prior_matrix
        if rows is not None:
            c, lam = c[rows], lam[rows]
        return theta - c, lam


#: The second moment is fitted only where mom0 is above this fraction of its
#: peak: fainter, the line's wings are lost in the noise and the moment is
#: biased low (and the model's is not accurate below 1e-3, see /rendering).
MOM2_MIN_RELATIVE_INTENSITY = 0.01

#: Map sides are padded up to a multiple of this, so that galaxies whose cut-outs
#: differ a little are fitted in one batch.
SIDE_STEP = 8


def prepare_problems(observations, *, noise_maps=None, device="cpu",
                     min_relative_intensity=1e-3, beam_classes=(2.0,)):
    """Group galaxies into `MapProblem` objects of one (padded) shape each.

    Each galaxy's maps are padded, with pixels that are not fitted, up to
    sides that are multiples of `SIDE_STEP`; galaxies of the same padded
    shape, with or without noise maps alike, and in the same class of beam
    (``beam_classes``) form one problem.

    Parameters
    ----------
    observations : list of `~astrokin.fitting.preprocessing.Observation`
    noise_maps : list of tuple or None, optional
        Per galaxy, ``(mom0_err, mom1_err)`` on its map, or None.
    device : str or torch.device, optional
    min_relative_intensity : float, optional
        mom1 is used only where mom0 is above this fraction of its peak, as
        in `~astrokin.fitting.preprocessing.prepare_batch`.
    beam_classes : sequence of float, optional
        Beam minor axes (FWHM, pixels) that separate problems: galaxies
        under a different number of them (no beam: under all) are fitted
        apart, so that what a problem's beams decide for it (the renderer's
        aliased orders under 2 pixels, see `~astrokin.rendering.DiskRenderer`)
        is the same for a galaxy whatever else is in its batch.

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
        beam_class = len(beam_classes) if o.beam is None else sum(
            bool(o.beam[1] / o.pixel_scale < b) for b in beam_classes)
        groups.setdefault((padded, given, beam_class), []).append(g)
    out = []
    for (shape, given, _), members in groups.items():
        arrays = {k: [] for k in ("d0", "d1", "f0", "l0", "f1", "s0", "s1", "d2", "f2", "s2",
                                  "lo2", "hi2")}
        with_mom2 = any(getattr(observations[g], "mom2", None) is not None for g in members)
        with_window = any(getattr(observations[g], "mom2_low", None) is not None
                          for g in members)
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
            if with_mom2:
                m2, e2 = getattr(o, "mom2", None), getattr(o, "mom2_err", None)
                m2 = np.full(m0.shape, np.nan) if m2 is None else np.asarray(m2, dtype=float)
                s2 = np.ones(m0.shape) if e2 is None else np.asarray(e2, dtype=float)
                ok2 = ok1 & np.isfinite(m2) & (m2 > 0) & np.isfinite(s2) & (s2 > 0) & (
                    np.where(ok0, m0, 0.0) > MOM2_MIN_RELATIVE_INTENSITY * peak)
                arrays["d2"].append(pad(np.where(ok2, m2, 0.0), 0.0))
                arrays["f2"].append(pad(ok2, False))
                arrays["s2"].append(pad(np.where(ok2, s2, 1.0), 1.0))
                lo2, hi2 = getattr(o, "mom2_low", None), getattr(o, "mom2_high", None)
                lo2 = np.full(m0.shape, -np.inf) if lo2 is None else np.where(
                    np.isfinite(lo2), lo2, -np.inf)
                hi2 = np.full(m0.shape, np.inf) if hi2 is None else np.where(
                    np.isfinite(hi2), hi2, np.inf)
                arrays["lo2"].append(pad(lo2, -np.inf))
                arrays["hi2"].append(pad(hi2, np.inf))
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
            np.asarray(offsets, dtype=float), bool(given),
            **({} if not with_mom2 else dict(data2=tensor(arrays["d2"]),
                                              fit2=tensor(arrays["f2"], torch.bool),
                                              sigma2=tensor(arrays["s2"]))),
            **({} if not (with_mom2 and with_window) else dict(low2=tensor(arrays["lo2"]),
                                                                high2=tensor(arrays["hi2"])))))
    return out


def frame_shifts(frames, problem, names):
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
        weights = None if problem.weights is None else problem.weights[rows]
        m0, m1 = self.renderer(params, problem.pixel_scale[rows], beam, weights=weights)
        amp, _ = self._amplitude(m0, rows, problem)
        return amp[:, None, None] * m0, m1, amp

    @staticmethod
    def _amplitude(m0, rows, problem):
        """The mom0 scale fitting ``m0`` to the data best, and the weights' sum of ``m0 ** 2``."""
        w0 = problem.fit0[rows] / problem.sigma0[rows] ** 2
        num = (w0 * problem.data0[rows] * m0).sum(dim=(-2, -1))
        den = (w0 * m0 * m0).sum(dim=(-2, -1)).clamp(min=1e-300)
        return num / den, den

    def linearization(self, theta, rows, problem):
        """The residuals at ``theta`` and their Jacobian ``(M, N, P)`` (the renderer's derivatives).

        The maps' derivatives are those of `~astrokin.rendering.DiskRenderer.linearize`
        (exact, where a finite difference errs by its step), taken through
        the logarithms, ties and fitted mom0 scale of the residuals. None
        where the renderer cannot give them (data-weighted smearing): the
        caller then differentiates by finite differences.
        """
        if problem.weights is not None:
            return None
        params = self.parameters(theta, rows, problem)
        params["amplitude"] = torch.ones_like(params["amplitude"])
        wrt, dp = self._parameter_derivatives(theta, rows, problem)
        ps = problem.pixel_scale[rows]
        beam = None if problem.beam is None else _beam(problem.beam[rows], ps)
        m0, m1, d0, d1 = self.renderer.linearize(params, ps, beam, wrt=wrt)
        # By the fitted parameters: (M, P, ny, nx).
        d0 = torch.einsum("mkyx,mkp->mpyx", d0, dp)
        d1 = torch.einsum("mkyx,mkp->mpyx", d1, dp)
        amp, den = self._amplitude(m0, rows, problem)
        w0 = problem.fit0[rows] / problem.sigma0[rows] ** 2
        # d amp = (sum w d0 dm - 2 amp sum w m dm) / sum w m^2, amp = sum w d0 m / sum w m^2
        pull = (w0 * (problem.data0[rows] - 2.0 * amp[:, None, None] * m0))[:, None]
        d_amp = (pull * d0).sum(dim=(-2, -1)) / den[:, None]
        model0 = amp[:, None, None] * m0
        r = self._whitened(model0, m1, rows, problem)
        # d r0 = -(amp dm0 + d_amp m0) / s0 where fitted, or where an upper limit is
        # exceeded; d r1 = -dm1 / s1 where fitted (factor maps, then one pass each).
        s0, s1 = problem.sigma0[rows], problem.sigma1[rows]
        above = model0 > problem.threshold0[rows][:, None, None]
        counted = torch.where(problem.limit0[rows], above, problem.fit0[rows])
        f0 = torch.where(counted, -1.0 / s0, torch.zeros_like(s0))
        f1 = torch.where(problem.fit1[rows], -1.0 / s1, torch.zeros_like(s1))
        dr0 = torch.addcmul(d_amp[:, :, None, None] * (m0 * f0)[:, None], d0,
                            (amp[:, None, None] * f0)[:, None])
        jac = torch.cat([dr0.flatten(2), (d1 * f1[:, None]).flatten(2)], dim=2)
        return r, jac.transpose(1, 2)

    def _parameter_derivatives(self, theta, rows, problem):
        """The parameters that vary with ``theta`` and their derivatives ``(M, K, P)`` by it.

        A free parameter varies with its own column (by ``exp`` where it is
        a logarithm); a tied one with those its tie uses, by central
        differences of the tie (arithmetic on the parameters: to ~1e-10).
        """
        m, n_free = theta.shape
        tied = [nm for nm in self.names if nm in self.ties]
        wrt = list(self.free) + tied
        dp = torch.zeros((m, len(wrt), n_free), dtype=theta.dtype, device=theta.device)
        for k in range(n_free):
            dp[:, k, k] = torch.exp(theta[:, k]) if self.log[k] else 1.0
        if tied:
            h = 1e-5 * theta.abs().clamp(min=1.0)
            for k in range(n_free):
                up, down = theta.clone(), theta.clone()
                up[:, k] += h[:, k]
                down[:, k] -= h[:, k]
                pu = self.parameters(up, rows, problem)
                pd = self.parameters(down, rows, problem)
                for j, nm in enumerate(tied):
                    dp[:, n_free + j, k] = (pu[nm] - pd[nm]) / (2.0 * h[:, k])
        return wrt, dp

    def _whitened(self, model0, m1, rows, problem):
        """Whitened residuals ``(M, 2 ny nx)`` of the (scaled) model maps."""
        s0, s1 = problem.sigma0[rows], problem.sigma1[rows]
        r0 = torch.where(problem.fit0[rows], (problem.data0[rows] - model0) / s0,
                         torch.zeros_like(model0))
        # An upper limit: a model brighter than the faintest detected emission
        # costs what it exceeds it by.
        excess = torch.relu(model0 - problem.threshold0[rows][:, None, None]) / s0
        r0 = torch.where(problem.limit0[rows], -excess, r0)
        r1 = torch.where(problem.fit1[rows], (problem.data1[rows] - m1) / s1,
                         torch.zeros_like(m1))
        return torch.cat([r0.flatten(1), r1.flatten(1)], dim=1)

    def __call__(self, theta, rows, problem):
        """Whitened residuals ``(M, 2 ny nx)`` of the problems ``rows`` at ``theta``."""
        m0, m1, _ = self.render(theta, rows, problem)
        return self._whitened(m0, m1, rows, problem)


def truncated_width(centre, width, low, high):
    r"""The second moment of a Gaussian line cut to the velocities ``[low, high]``.

    A line of mean :math:`c` and dispersion :math:`\sigma` that a mask cuts
    to :math:`[l, h]` has the variance

    .. math:: \sigma^2 \left[1 + \frac{a\phi(a) - b\phi(b)}{Z}
              - \left(\frac{\phi(a) - \phi(b)}{Z}\right)^2\right],
              \quad a = \frac{l - c}{\sigma},\ b = \frac{h - c}{\sigma},\
              Z = \Phi(b) - \Phi(a).

    Parameters
    ----------
    centre, width, low, high : torch.Tensor
        Broadcastable; ``low``/``high`` may be infinite (no cut).

    Returns
    -------
    width : torch.Tensor
        The cut line's second moment (its square root), where the window
        holds any of the line; ``width`` elsewhere.

    Examples
    --------
    >>> import torch
    >>> from astrokin.fitting.map_problems import truncated_width
    >>> w = truncated_width(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(-2.0),
    ...                     torch.tensor(2.0))
    >>> round(float(w), 4)  # N(0, 1) cut at +-2 sigma
    0.8796
    """
    sigma = width.clamp(min=1e-6)
    a = ((low - centre) / sigma).clamp(-30.0, 30.0)
    b = ((high - centre) / sigma).clamp(-30.0, 30.0)
    root2 = 2.0 ** 0.5
    z = 0.5 * (torch.erf(b / root2) - torch.erf(a / root2))
    pa = torch.exp(-0.5 * a * a) / (2.0 * torch.pi) ** 0.5
    pb = torch.exp(-0.5 * b * b) / (2.0 * torch.pi) ** 0.5
    ok = z > 1e-6
    zs = torch.where(ok, z, torch.ones_like(z))
    factor = 1.0 + (a * pa - b * pb) / zs - ((pa - pb) / zs) ** 2
    cut = sigma * torch.sqrt(factor.clamp(min=1e-12))
    return torch.where(ok, cut, width)


class DispersionResiduals:
    """Whitened residuals of the rendered second moment against a `MapProblem`'s mom2.

    Every parameter but ``free`` keeps the value it has in ``values`` (a
    galaxy's fit of mom0 and mom1, in the problem's frame), so that the
    residuals are those of the second moment as the dispersion, or any
    other ``free`` parameters, move about that fit. Where the problem has
    the mask's velocity range (``low2``, ``high2``), the model's second
    moment is that of its line cut to it (`truncated_width`).

    Parameters
    ----------
    renderer : `~astrokin.rendering.DiskRenderer`
        float64, of the problem's shape.
    names : list of str
        Every parameter of the model, in order.
    free : list of str
        The parameters varied (the columns of ``theta``).
    values : dict of torch.Tensor
        ``(B,)`` the value of every parameter for each galaxy of the problem.
    """

    def __init__(self, renderer, names, free, values):
        self.renderer = renderer
        self.names = list(names)
        self.free = list(free)
        self.values = values

    def moments(self, theta, rows, problem):
        """``(mom1, mom2)``, each ``(B, ny, nx)``, of the problems ``rows`` at ``theta``, uncut."""
        params = {nm: self.values[nm][rows] for nm in self.names}
        for k, nm in enumerate(self.free):
            params[nm] = theta[:, k]
        params["amplitude"] = torch.ones_like(params["amplitude"])
        beam = None if problem.beam is None else _beam(problem.beam[rows],
                                                       problem.pixel_scale[rows])
        weights = None if problem.weights is None else problem.weights[rows]
        _, mom1, mom2 = self.renderer(params, problem.pixel_scale[rows], beam, weights=weights,
                                      moment2=True)
        return mom1, mom2

    def render(self, theta, rows, problem):
        """``(B, ny, nx)`` the model's second moment of the problems ``rows`` at ``theta``."""
        mom1, mom2 = self.moments(theta, rows, problem)
        if problem.low2 is None:
            return mom2
        return truncated_width(mom1, mom2, problem.low2[rows], problem.high2[rows])

    def __call__(self, theta, rows, problem):
        """Whitened residuals ``(M, ny nx)`` of the problems ``rows`` at ``theta``."""
        m2 = self.render(theta, rows, problem)
        r2 = torch.where(problem.fit2[rows], (problem.data2[rows] - m2) / problem.sigma2[rows],
                         torch.zeros_like(m2))
        return r2.flatten(1)


#: Richardson-Lucy steps of `smearing_weights`.
SMEARING_STEPS = 3
#: The range the smearing weights are clipped to.
SMEARING_CLIP = (0.1, 10.0)


def smearing_weights(residual, theta, problem, steps=SMEARING_STEPS):
    r"""Data weights of the beam smearing: the model's intensity made to follow the observed.

    A clumpy disc's velocity map is weighted by its clumpy intensity, not by
    the axisymmetric one of a model: within a beam, a bright clump pulls the
    velocity towards its own (``benchmarks/texture_smearing.py``: 2-4 km/s
    RMS on discs of the realistic prior, comparable to the noise). Weights
    :math:`w` with :math:`B * (w I) = ` the observed mom0, found by
    Richardson-Lucy steps from :math:`w = 1`, :math:`w \leftarrow w\, d_0 /
    (A\, B * (w I))` on the detected pixels (1 elsewhere, clipped to
    `SMEARING_CLIP`), make the model's mom1 :math:`B * (w I v) / B * (w I)`,
    as the disc's own intensity would (3D-Barolo normalises its model cubes
    to the observed intensity likewise). The mom0 model stays axisymmetric:
    it is what constrains the inclination.

    Parameters
    ----------
    residual : `MapResiduals`
    theta : torch.Tensor
        ``(B, P)`` the fit the weights are made for (the optimum without them).
    problem : `MapProblem`
    steps : int, optional

    Returns
    -------
    weights : torch.Tensor or None
        ``(B, ny, nx)``; None where the problem has no beam.
    """
    if problem.beam is None:
        return None
    rows = torch.arange(len(problem), device=theta.device)
    params = residual.parameters(theta, rows, problem)
    params["amplitude"] = torch.ones_like(params["amplitude"])
    beam = _beam(problem.beam, problem.pixel_scale)
    render = residual.renderer
    with torch.no_grad():
        _, _, amp = residual.render(theta, rows, replace(problem, weights=None))
        weights = torch.ones_like(problem.data0)
        lo, hi = SMEARING_CLIP
        for _ in range(int(steps)):
            model0, _ = render(params, problem.pixel_scale, beam, weights=weights,
                               weighted_mom0=True)
            model0 = amp[:, None, None] * model0
            peak = model0.amax(dim=(-2, -1), keepdim=True)
            use = problem.fit1 & problem.fit0 & (model0 > 1e-3 * peak)
            ratio = torch.where(use, problem.data0 / torch.where(use, model0, 1.0), 1.0)
            weights = torch.clamp(weights * ratio, lo, hi)
    return weights


def _beam(beam, pixel_scale):
    """Beams for the renderer: galaxies without one get one far below a pixel."""
    none = torch.isnan(beam).any(dim=1)
    if not bool(none.any()):
        return beam
    tiny = (1e-6 * pixel_scale)[:, None] * torch.tensor([1.0, 1.0, 0.0], dtype=beam.dtype,
                                                        device=beam.device)
    return torch.where(none[:, None], tiny, beam)
