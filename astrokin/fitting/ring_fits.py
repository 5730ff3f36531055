r"""Fitting a ring-by-ring disc, started from the fit of a parametric one.

A `~astrokin.models.TiltedRingDisk` has two profile values per ring: 20 or
more free parameters, where the network's own model has three or four. The
fitter first fits the network's model (the *start model*, an
`~astrokin.models.ExponentialArctanDisk` for the bundled network) with the
same geometry constraints, network and refinement as for any fit; the ring
model then starts from that optimum, its node values read off the fitted
profiles at the ring radii, and is refined to each galaxy's own maps
(`astrokin.fitting.refinement`). This is how 3D-Barolo and FAT start their
ring fits from a global first guess, with the first guess made by the
network.

Rings the maps hardly constrain (inside a central hole, beyond the detected
emission, closer together than the beam resolves) would wander: the rings'
departures from the start, in the logarithms of speed and brightness, have
a Gaussian-process prior (`node_prior`): `VELOCITY_PRIOR` and
`BRIGHTNESS_PRIOR` wide, correlated between rings over `CORRELATION_BEAMS`
beam FWHM (a squared-exponential kernel). Where the maps measure a ring the
prior is negligible (a speed measured to 3 km/s of 200 weighs ~400 times more
than a 30% prior); where they do not, or not independently of its
neighbours, the ring follows the start and its neighbours, and its error is
what the prior allows.

A ring network (the bundled ``tilted_ring``, `network_model`) predicts a ring
disc itself, its outermost radius included: its prediction is a second start
of the fit above (`fit_rings`' ``guesses``), or the only one when the
fitter's network is the ring network. The errors are the likelihood's and
the prior's times `ERROR_SCALE`, measured on independent KinMS mocks.

The outermost ring follows the map unless given: ``r_outer`` (fixed) set to
0, as it is by default, is replaced for each galaxy by the extent of its
detected velocity map along the start's major axis.
"""

from dataclasses import replace

import numpy as np

from astrokin.models import ExponentialArctanDisk, KinematicDiskModel, TiltedRingDisk
from astrokin.models.core import disc_coordinates

__all__ = ["BRIGHTNESS_PRIOR", "CORRELATION_BEAMS", "ERROR_SCALE", "EXTENT_QUANTILE", "GEOMETRY",
           "JITTER", "VELOCITY_PRIOR", "error_scale", "fit_rings", "network_model", "node_prior",
           "outer_radii", "ring_starts", "start_model"]

#: Parameters a start model takes over from the ring model (values, fixed, bounds, ties).
GEOMETRY = ("inclination", "pa", "x_0", "y_0", "v_sys", "z_scale")

#: The quantile of the detected pixels' distance along the major axis taken as r_outer.
EXTENT_QUANTILE = 0.98

#: Width of the prior on the rings' rotation speeds, in their logarithm (30%).
VELOCITY_PRIOR = 0.3
#: Width of the prior on the rings' surface brightness, in its logarithm (a factor e).
BRIGHTNESS_PRIOR = 1.0
#: Correlation length of the prior between rings, in beam FWHM.
CORRELATION_BEAMS = 1.0
#: Relative jitter added to the prior's covariance (its precision is at most 1/JITTER).
JITTER = 1e-3

#: Factors on the ring fits' errors (the likelihood's, with the prior's), per
#: quantity, so that 68% of 1-sigma intervals cover the truth on galaxies the
#: rings do not describe exactly (warps, bars, clumps, arms, KinMS's own
#: smearing): measured by ``benchmarks/ring_calibration.py`` on 300 KinMS
#: realistic mocks of another seed than the benchmark's
#: (``benchmarks/results/ring_calibration.txt``). ``v`` is every ring's speed.
#: Brightness nodes: 1 (not measured).
ERROR_SCALE = {"inclination": 1.53, "pa": 1.51, "x_0": 1.50, "y_0": 1.57, "v_sys": 1.14,
               "v": 1.18}


def node_prior(model, r_outer, resolution):
    """The Gaussian-process prior on a ring disc's free node parameters.

    Parameters
    ----------
    model : `~astrokin.models.TiltedRingDisk`
    r_outer : numpy.ndarray
        ``(N,)`` arcsec, each galaxy's outermost ring.
    resolution : numpy.ndarray
        ``(N,)`` arcsec, each galaxy's beam FWHM (major axis; a pixel without
        a beam).

    Returns
    -------
    names : list of str
        The free ``v_k``, then the free ``sb_k``.
    precision : numpy.ndarray
        ``(N, K, K)``: the inverse of the prior covariance, for each galaxy,
        in the logarithms of the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.models import TiltedRingDisk
    >>> from astrokin.fitting.ring_fits import node_prior
    >>> names, precision = node_prior(TiltedRingDisk(n_rings=3), np.array([12.0]),
    ...                               np.array([2.0]))
    >>> names, precision.shape
    (['v_1', 'v_2', 'v_3', 'sb_1', 'sb_2', 'sb_3'], (1, 6, 6))
    """
    n = model.n_rings
    k = np.arange(1, n + 1)
    groups = [(model.velocity_names(), VELOCITY_PRIOR), (model.brightness_names(),
                                                         BRIGHTNESS_PRIOR)]
    names = []
    free = [[i for i, nm in enumerate(g) if not model.fixed[nm] and not model.tied[nm]]
            for g, _ in groups]
    for (group, _), use in zip(groups, free, strict=True):
        names += [group[i] for i in use]
    out = np.zeros((len(r_outer), len(names), len(names)))
    for g, (r_out, res) in enumerate(zip(np.asarray(r_outer), np.asarray(resolution),
                                         strict=True)):
        radii = k * r_out / n
        length = max(CORRELATION_BEAMS * res, 1e-6)
        corr = np.exp(-0.5 * ((radii[:, None] - radii[None, :]) / length) ** 2)
        at = 0
        for (_, width), use in zip(groups, free, strict=True):
            c = corr[np.ix_(use, use)] * width ** 2
            c = c + JITTER * width ** 2 * np.eye(len(use))
            out[g, at:at + len(use), at:at + len(use)] = np.linalg.inv(c)
            at += len(use)
    return names, out


def start_model(model, model_class=None):
    """The parametric model a ring fit starts from, with the ring model's geometry.

    Parameters
    ----------
    model : `~astrokin.models.TiltedRingDisk`
    model_class : type, optional
        The class of the start model: a `~astrokin.models.KinematicDiskModel`
        that is not a ring disc (the class of the fitter's network); default
        `~astrokin.models.ExponentialArctanDisk`.

    Returns
    -------
    start : `~astrokin.models.KinematicDiskModel`
        With the values, ``fixed`` flags, bounds and ties of ``model``'s
        geometry (`GEOMETRY`); its profile parameters are the class defaults.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import TiltedRingDisk
    >>> from astrokin.fitting.ring_fits import start_model
    >>> rings = TiltedRingDisk(pa=30 * u.deg, fixed={"pa": True})
    >>> start = start_model(rings)
    >>> type(start).__name__, float(start.pa.value), start.fixed["pa"]
    ('ExponentialArctanDisk', 30.0, True)
    """
    model_class = ExponentialArctanDisk if model_class is None else model_class
    if not (isinstance(model_class, type) and issubclass(model_class, KinematicDiskModel)) \
            or issubclass(model_class, TiltedRingDisk):
        raise TypeError(f"A ring fit starts from a parametric disc model, not {model_class!r}.")
    start = model_class()
    _copy_geometry(model, start)
    return start


def _copy_geometry(model, other):
    """Give ``other`` the values, fixed flags, bounds and ties of ``model``'s geometry."""
    for name in GEOMETRY:
        par = getattr(model, name)
        setattr(other, name, par.quantity if par.unit is not None else par.value)
        other.fixed[name] = model.fixed[name]
        other.bounds[name] = model.bounds[name]
        if model.tied[name]:
            other.tied[name] = model.tied[name]


def outer_radii(model, observations, frames, start, names):
    """``r_outer`` of each galaxy: the model's when set, else the extent of its emission.

    The extent is the `EXTENT_QUANTILE` of the distance, along the major axis
    of the start's geometry, of the pixels with a velocity, at least one beam
    FWHM.

    Parameters
    ----------
    model : `~astrokin.models.TiltedRingDisk`
    observations : list of `~astrokin.fitting.preprocessing.Observation`
    frames : list of `~astrokin.fitting.frames.FittingFrame`
    start : numpy.ndarray
        ``(N, len(names))`` a fit's values in the grid frame.
    names : list of str

    Returns
    -------
    r_outer : numpy.ndarray
        ``(N,)`` in arcsec.
    """
    given = float(np.ravel(model.r_outer.quantity.to_value("arcsec"))[0])
    if given > 0:
        return np.full(len(observations), given)
    out = np.zeros(len(observations))
    for g, (o, frame) in enumerate(zip(observations, frames, strict=True)):
        geo = {nm: start[g, names.index(nm)] + frame.grid_shift(nm) for nm in ("x_0", "y_0", "pa")}
        m1 = np.asarray(o.mom1, dtype=float)
        ny, nx = m1.shape
        y, x = np.mgrid[:ny, :nx]
        dx = (x - (nx - 1) / 2) * o.pixel_scale - geo["x_0"]
        dy = (y - (ny - 1) / 2) * o.pixel_scale - geo["y_0"]
        major = np.abs(disc_coordinates(np, dx, dy, geo["pa"])[0])[np.isfinite(m1)]
        beam = o.pixel_scale if o.beam is None else o.beam[0]
        extent = np.quantile(major, EXTENT_QUANTILE) if major.size else 0.0
        out[g] = max(extent, beam, 2.0 * o.pixel_scale)
    return out


def ring_starts(model, start, starts, start_names, names, r_outer):
    """Starting points of the ring model from fits of the start model.

    Geometry is copied; ``v_k`` and ``sb_k`` are the start's rotation curve
    and surface brightness (relative to its centre, or to its peak when the
    centre is dark) at the ring radii.

    Parameters
    ----------
    model : `~astrokin.models.TiltedRingDisk`
    start : `~astrokin.models.KinematicDiskModel`
        The start model (`start_model`).
    starts : list of numpy.ndarray
        ``(N, len(start_names))`` each, in the grid frame.
    start_names, names : list of str
        The quantities of ``starts`` and of the ring model's starts.
    r_outer : numpy.ndarray
        ``(N,)`` arcsec.

    Returns
    -------
    ring_starts : list of numpy.ndarray
        ``(N, len(names))`` each.
    """
    cls, scls = type(model), type(start)
    n_rings = cls.n_rings
    radii = r_outer[:, None] * np.arange(1, n_rings + 1)[None, :] / n_rings
    lo_v, hi_v = (float(b) for b in cls.v_1.bounds)
    out = []
    for s in starts:
        ring = np.zeros((len(s), len(names)))
        values = {nm: s[:, start_names.index(nm)][:, None] for nm in scls.param_names}
        for nm in GEOMETRY:
            ring[:, names.index(nm)] = values[nm][:, 0]
        v = scls.rotation_velocity(np, radii, *[values[nm] for nm in scls.velocity_parameters])
        sb_args = [values[nm] for nm in scls.intensity_parameters]
        sb = scls.surface_brightness(np, radii, *sb_args)
        centre = scls.surface_brightness(np, np.zeros_like(radii[:, :1]), *sb_args)
        norm = np.maximum(centre, 1e-2 * sb.max(axis=1, keepdims=True))
        ring[:, [names.index(f"v_{k}") for k in range(1, n_rings + 1)]] = \
            np.clip(v, max(lo_v, 1.0), hi_v)
        ring[:, [names.index(f"sb_{k}") for k in range(1, n_rings + 1)]] = \
            np.clip(sb / norm, 1e-3, None)
        if "amplitude" in names:
            ring[:, names.index("amplitude")] = values["amplitude"][:, 0]
        if "r_outer" in names:
            ring[:, names.index("r_outer")] = r_outer
        out.append(ring)
    return out


def error_scale(model):
    """`ERROR_SCALE` for the parameters of a ring disc, by name.

    Examples
    --------
    >>> from astrokin.models import TiltedRingDisk
    >>> from astrokin.fitting.ring_fits import ERROR_SCALE, error_scale
    >>> scale = error_scale(TiltedRingDisk(n_rings=3))
    >>> scale["v_2"] == ERROR_SCALE["v"], scale["sb_2"]
    (True, 1.0)
    """
    out = {name: 1.0 for name in model.param_names}
    for name, factor in ERROR_SCALE.items():
        if name == "v":
            out.update({nm: float(factor) for nm in model.velocity_names()})
        elif name in out:
            out[name] = float(factor)
    return out


def network_model(model, model_class=None):
    """The ring disc a ring network predicts, with ``model``'s geometry and ``r_outer`` free.

    A ring network predicts the outermost radius with the rest;
    `ring_starts` then moves the rings to each map's own extent, and to the
    number of rings of ``model``.

    Parameters
    ----------
    model : `~astrokin.models.TiltedRingDisk`
    model_class : type, optional
        The network's ring class (default ``model``'s): the values, ``fixed``
        flags, bounds and ties of the geometry (`GEOMETRY`) are ``model``'s.

    Examples
    --------
    >>> from astrokin.models import TiltedRingDisk
    >>> from astrokin.fitting.ring_fits import network_model
    >>> net = network_model(TiltedRingDisk(n_rings=12), type(TiltedRingDisk()))
    >>> type(net).__name__, net.fixed["r_outer"]
    ('TiltedRingDisk10', False)
    """
    if model_class is None or model_class is type(model):
        out = model.copy()
    else:
        out = model_class()
        _copy_geometry(model, out)
    out.fixed["r_outer"] = False
    return out


def fit_rings(model, start, observations, frames, start_values, start_names, *,
              start_bic=None, guesses=(), **options):
    """Refine a ring disc to each galaxy's maps, from a fit of its start model.

    Parameters
    ----------
    model : `~astrokin.models.TiltedRingDisk`
    start : `~astrokin.models.KinematicDiskModel`
        The start model: a parametric one (`start_model`), refined, or the
        ring disc a ring network predicts (`network_model`).
    observations : list of `~astrokin.fitting.preprocessing.Observation`
    frames : list of `~astrokin.fitting.frames.FittingFrame`
    start_values : numpy.ndarray
        ``(N, len(start_names))``, the start's fit in the grid frame: its
        geometry sets the rings' extent, and the prior is centred on it.
    start_names : list of str
        The quantities of ``start_values``.
    start_bic : numpy.ndarray, optional
        ``(N,)`` the start model's BIC, when it was refined: the table then
        says which model fits best.
    guesses : sequence of tuple, optional
        More starts, ``(model, values)`` with ``values`` ``(N, P)`` over the
        parameters of ``model`` (e.g. a ring network's prediction): the
        refinement keeps the best optimum over all starts.
    **options
        Passed to `~astrokin.fitting.refinement.refine` (noise maps, device,
        samples, seed).

    Returns
    -------
    refined : `~astrokin.fitting.refinement.Refinement`
        The ring fit; with ``start_bic``, its table columns gain ``start_bic``
        and ``best_model`` (the class name with the lower BIC).
    names : list of str
        The ring model's parameters (the quantities of ``refined``).
    r_outer : numpy.ndarray
        ``(N,)`` each galaxy's outermost ring (arcsec).
    """
    from astrokin.fitting.frames import framed_fixed
    from astrokin.fitting.parameters import fixed_values
    from astrokin.fitting.refinement import refine

    r_outer = outer_radii(model, observations, frames, start_values, start_names)
    names = list(model.param_names)
    framed = framed_fixed(fixed_values(model), model, frames)
    framed["r_outer"] = r_outer[:, None]
    starts = ring_starts(model, start, [start_values], start_names, names, r_outer)
    for guess_model, values in guesses:
        starts += ring_starts(model, guess_model, [values], list(guess_model.param_names),
                              names, r_outer)
    resolution = np.array([o.pixel_scale if o.beam is None else o.beam[0]
                           for o in observations])
    refined = refine(model, observations, frames, starts, names, framed,
                     prior=node_prior(model, r_outer, resolution), **options)
    if start_bic is None:
        return refined, names, r_outer
    best = np.where(start_bic < refined.columns["bic"], type(start).__name__,
                    type(model).__name__)
    return replace(refined, columns=dict(refined.columns, start_bic=start_bic,
                                         best_model=best)), names, r_outer
