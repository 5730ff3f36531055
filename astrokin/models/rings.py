r"""A flat disc described ring by ring: surface brightness and rotation speed at nodes.

What astronomers publish for real discs, and what 3D-Barolo, TiRiFiC/FAT and
2DBAT give them, is a rotation curve ring by ring: no closed form can describe
rings, holes, truncated CO discs, bulge peaks or declining curves. The
`TiltedRingDisk` has the geometry of every astrokin disc and, at ``N``
equally spaced radii out to ``r_outer``, a rotation speed and a relative
surface brightness, interpolated between the nodes by a smooth cubic.

The number of rings is a constructor option: ``TiltedRingDisk(n_rings=12)``
is an instance of the class ``TiltedRingDisk12`` (made once, on first use, and
a subclass of `TiltedRingDisk`), whose parameters are ``v_1 ... v_12`` and
``sb_1 ... sb_12``; ``TiltedRingDisk()`` has 10 rings. Every such class is
reachable by name in this module (``astrokin.models.rings.TiltedRingDisk12``),
so models pickle, copy and are named in network files like any other.
"""

import inspect
import re

import numpy as np
from astropy import units as u
from astropy.modeling import Parameter
from astropy.table import QTable

from .core import LENGTH_UNIT, VELOCITY_UNIT, KinematicDiskModel

__all__ = ["DEFAULT_RINGS", "TiltedRingDisk", "catmull_rom", "ring_class"]

#: Rings of ``TiltedRingDisk()``.
DEFAULT_RINGS = 10
_MAX_RINGS = 64
_CLASSES = {}
_E1, _E2 = float(np.exp(-1.0)), float(np.exp(-2.0))


def catmull_rom(xp, t):
    r"""The Catmull-Rom cardinal cubic kernel at ``t`` (node spacings).

    It is 1 at 0 and 0 at every other integer, so that
    :math:`f(r) = \sum_k f_k K(r / \Delta r - k)` passes through the node
    values; it is continuous with its first derivative, and reproduces
    straight lines exactly. ``xp`` is `numpy` or `torch`.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.models.rings import catmull_rom
    >>> catmull_rom(np, np.array([0.0, 1.0, 2.0, 0.5]))
    array([ 1.    ,  0.    ,  0.    ,  0.5625])
    """
    a = xp.abs(t)
    inner = (1.5 * a - 2.5) * a * a + 1.0
    outer = ((-0.5 * a + 2.5) * a - 4.0) * a + 2.0
    return xp.where(a < 1.0, inner, xp.where(a < 2.0, outer, 0.0 * a))


class TiltedRingDisk(KinematicDiskModel):
    r"""Flat disc with its surface brightness and rotation speed given ring by ring.

    Parameters
    ----------
    amplitude, inclination, pa, x_0, y_0, v_sys, z_scale
        Geometry and scale, see `~astrokin.models.KinematicDiskModel`.
    r_outer : `~astropy.units.Quantity`
        Radius of the outermost ring. The rings are at
        :math:`r_k = k\, r_{\rm outer} / N`, ``k = 1 ... N``. Fixed; 0 (the
        default) lets `~astrokin.fitting.NeuralKinematicFitter` set it, for
        each galaxy, to the extent of the detected emission along the major
        axis. A model must have a positive ``r_outer`` to be evaluated or
        rendered.
    v_1 ... v_N : `~astropy.units.Quantity`
        Rotation speed (deprojected) at each ring.
    sb_1 ... sb_N : float
        Face-on surface brightness at each ring, relative to the centre's
        (which is 1, times ``amplitude``).
    v_disp_1 ... v_disp_N : `~astropy.units.Quantity`
        Intrinsic velocity dispersion at each ring (flat inside the first
        ring and beyond the last). It changes the second moment only: fitted
        when a mom2 map (or a cube) is given, otherwise left as it is.
    n_rings : int, optional
        Number of rings ``N`` (1-64, default 10); a keyword only.

    Notes
    -----
    Between nodes both profiles are the Catmull-Rom cubic through the node
    values (`catmull_rom`), smooth with its slope. At the centre the rotation
    speed is 0 and the surface brightness 1, both continued symmetrically
    (the speed as an odd function of radius, the brightness as an even one);
    beyond ``r_outer`` the speed stays at ``v_N`` and the brightness falls
    exponentially, by a factor e per ring spacing: the disc ends there, as
    sharply as its rings resolve, and the model has emission (so a velocity)
    wherever beam-smeared data can. The brightness is clipped at 0 where the
    cubic would undershoot.

    .. math::

        V(r) = \sum_{k=-1}^{N+2} v_k\, K\!\left(\frac{r}{\Delta r} - k\right),
        \qquad \Sigma(r) = A \max\left[0, \sum_{k=-1}^{N+2} s_k\,
        K\!\left(\frac{r}{\Delta r} - k\right)\right],
        \qquad \Delta r = r_{\rm outer} / N

    for :math:`r < r_{\rm outer}` and
    :math:`\Sigma = A s_N e^{-(r - r_{\rm outer}) / \Delta r}` beyond, with
    :math:`v_0 = 0, v_{-1} = -v_1, v_{N+1} = v_{N+2} = v_N` and
    :math:`s_0 = 1, s_{-1} = s_1, s_{N+1} = s_N / e, s_{N+2} = s_N / e^2`. Warps (an
    inclination and a PA per ring) are not modelled: the geometry is one for
    the whole disc.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import TiltedRingDisk
    >>> disk = TiltedRingDisk(n_rings=4, r_outer=8 * u.arcsec, inclination=60 * u.deg,
    ...                       v_1=120 * u.km / u.s, v_2=180 * u.km / u.s,
    ...                       v_3=200 * u.km / u.s, v_4=190 * u.km / u.s)
    >>> type(disk).__name__, disk.n_rings
    ('TiltedRingDisk4', 4)
    >>> disk.ring_radii
    <Quantity [2., 4., 6., 8.] arcsec>
    >>> disk.rotation_curve([4, 20] * u.arcsec)
    <Quantity [180., 190.] km / s>

    .. plot::
        :include-source:

        import astropy.units as u
        import matplotlib.pyplot as plt
        from astrokin.models import TiltedRingDisk

        # A ring of gas around a central hole, on a curve that rises and declines.
        disk = TiltedRingDisk(n_rings=6, r_outer=24 * u.arcsec, inclination=55 * u.deg,
                              pa=150 * u.deg, **{f"sb_{k}": s for k, s in
                                                 enumerate([3, 8, 6, 3, 1.5, 0.5], 1)},
                              **{f"v_{k}": v * u.km / u.s for k, v in
                                 enumerate([150, 210, 200, 185, 175, 170], 1)})
        mom0, mom1 = disk.render((64, 64), 1 * u.arcsec, beam=3 * u.arcsec)
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(8, 3.5))
        ax0.imshow(mom0.value, origin="lower")
        im = ax1.imshow(mom1.value, origin="lower", cmap="RdBu_r")
        fig.colorbar(im, ax=ax1, label="km/s")
    """

    velocity_scale_parameter = None
    #: Number of rings of this class (set on the generated subclasses).
    n_rings = 0
    #: The rotation speeds at single radii (a network predicts them as ``V sin i``).
    node_speeds = ()

    r_outer = Parameter(default=0.0, unit=u.arcsec, fixed=True, bounds=(0.0, None),
                        description="Radius of the outermost ring (0: set by the fitter)")

    def __new__(cls, *args, n_rings=None, **kwargs):
        """An instance of the subclass with ``n_rings`` rings (`ring_class`)."""
        if n_rings is not None:
            cls = ring_class(n_rings)
        elif not cls.n_rings:
            cls = ring_class(DEFAULT_RINGS)
        return super().__new__(cls)

    def __init__(self, *args, n_rings=None, **kwargs):
        if n_rings is not None and n_rings != self.n_rings:  # pragma: no cover - __new__ guards
            raise ValueError(f"n_rings={n_rings} given to a {type(self).__name__}.")
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------
    @classmethod
    def velocity_names(cls):
        """``['v_1', ..., 'v_N']``."""
        return [f"v_{k}" for k in range(1, cls.n_rings + 1)]

    @classmethod
    def brightness_names(cls):
        """``['sb_1', ..., 'sb_N']``."""
        return [f"sb_{k}" for k in range(1, cls.n_rings + 1)]

    @classmethod
    def dispersion_names(cls):
        """``['v_disp_1', ..., 'v_disp_N']``."""
        return [f"v_disp_{k}" for k in range(1, cls.n_rings + 1)]

    @property
    def ring_radii(self):
        """Radii of the rings, ``r_k = k r_outer / N`` (arcsec; per model of a set)."""
        r_out = np.asarray(self.r_outer.quantity.to_value(LENGTH_UNIT), dtype=float)
        k = np.arange(1, self.n_rings + 1)
        return (r_out[..., None] * k / self.n_rings) * LENGTH_UNIT

    def ring_table(self, stds=None):
        r"""The rings of this model (or model set) as a table, one row per ring.

        Parameters
        ----------
        stds : dict, optional
            Standard deviation of each ring parameter (``v_k`` as
            Quantities, ``sb_k`` as floats), per model of a set; default:
            those of a fitted model's ``stds`` where it has them, else 0.

        Returns
        -------
        rings : `~astropy.table.QTable`
            Columns ``galaxy`` (for a model set), ``ring``, ``radius``,
            ``v_rot`` and ``v_rot_std`` (deprojected), ``v_proj`` and
            ``v_proj_std`` (:math:`V \sin i`, the quantity the velocity map
            measures), ``surface_brightness`` and its ``_std`` (face-on,
            times ``amplitude``), ``v_disp`` and ``v_disp_std`` (the intrinsic
            dispersion).

        Examples
        --------
        >>> import astropy.units as u
        >>> from astrokin.models import TiltedRingDisk
        >>> disk = TiltedRingDisk(n_rings=2, r_outer=4 * u.arcsec, inclination=30 * u.deg,
        ...                       v_1=100 * u.km / u.s, v_2=150 * u.km / u.s)
        >>> disk.ring_table()["v_proj"].round(1)
        <Quantity [50., 75.] km / s>
        """
        n_models = len(self)
        values = self.canonical_values()
        if stds is None:
            stds = _model_stds(self)
        sin_i = np.sin(np.radians(np.atleast_1d(values["inclination"]))).reshape(n_models)
        amp = np.atleast_1d(values["amplitude"]).reshape(n_models)
        radii = np.atleast_2d(self.ring_radii.to_value(LENGTH_UNIT))
        table = QTable()
        rows = np.repeat(np.arange(n_models), self.n_rings)
        if n_models > 1:
            table["galaxy"] = rows
        table["ring"] = np.tile(np.arange(1, self.n_rings + 1), n_models)
        table["radius"] = radii.reshape(-1) * LENGTH_UNIT

        def column(names):
            v = np.stack([np.atleast_1d(values[nm]).reshape(n_models) for nm in names], axis=1)
            s = np.stack([np.atleast_1d(_plain(stds.get(nm, 0.0))).reshape(-1)
                          * np.ones(n_models) for nm in names], axis=1)
            return v.reshape(-1), s.reshape(-1)

        v, v_std = column(self.velocity_names())
        table["v_rot"] = v * VELOCITY_UNIT
        table["v_rot_std"] = v_std * VELOCITY_UNIT
        table["v_proj"] = v * sin_i[rows] * VELOCITY_UNIT
        table["v_proj_std"] = v_std * sin_i[rows] * VELOCITY_UNIT
        s, s_std = column(self.brightness_names())
        amp_unit = self.amplitude.unit or u.dimensionless_unscaled
        table["surface_brightness"] = s * amp[rows] * amp_unit
        table["surface_brightness_std"] = s_std * amp[rows] * amp_unit
        d, d_std = column(self.dispersion_names())
        table["v_disp"] = d * VELOCITY_UNIT
        table["v_disp_std"] = d_std * VELOCITY_UNIT
        table.meta["model"] = type(self).__name__
        table.meta["r_outer_note"] = "radius of ring k is k r_outer / n_rings"
        return table

    def render(self, shape, pixel_scale, beam=None, **renderer_options):
        """Moment maps of this disc (see `KinematicDiskModel.render`)."""
        _check_outer(self)
        return super().render(shape, pixel_scale, beam=beam, **renderer_options)

    def evaluate(self, x, y, *params):
        """Intensity and velocity at sky offsets ``(x, y)`` (see `KinematicDiskModel`)."""
        _check_outer(self)
        return super().evaluate(x, y, *params)


def _check_outer(model):
    if np.any(np.asarray(model.r_outer.value) <= 0):
        raise ValueError(
            f"{type(model).__name__} has r_outer = {model.r_outer.quantity}: give the radius "
            "of the outermost ring (r_outer=...) to evaluate or render it; 0 is for the "
            "fitter to set."
        )


def _plain(value):
    return value.value if isinstance(value, u.Quantity) else np.asarray(value, dtype=float)


def _model_stds(model):
    stds = getattr(model, "stds", None)
    if stds is None:
        return {}
    per_model = stds if isinstance(stds, list) else [stds]
    out = {}
    for name in model.param_names:
        try:
            out[name] = np.array([s[name] for s in per_model], dtype=float)
        except (KeyError, ValueError, TypeError):
            continue
    return out


def _profiles(n):
    """``surface_brightness`` and ``rotation_velocity`` of an ``n``-ring disc."""

    def nodes(xp, r, r_outer):
        t = r / (r_outer / n)
        return t, [catmull_rom(xp, t - k) for k in range(-1, n + 3)]

    def surface_brightness(xp, r, r_outer, *sb):
        t, kernel = nodes(xp, r, r_outer)
        # s_-1 = s_1, s_0 = 1, s_1 ... s_N, then the exponential tail's s_N/e, s_N/e^2.
        values = [sb[0], 1.0 + 0.0 * sb[0], *sb, sb[-1] * _E1, sb[-1] * _E2]
        total = sum(k * v for k, v in zip(kernel, values, strict=True))
        inside = xp.where(total > 0, total, 0.0 * total)
        beyond = xp.where(t > n, t - n, 0.0 * t)
        return xp.where(t < n, inside, sb[-1] * xp.exp(-beyond))

    def rotation_velocity(xp, r, r_outer, *v):
        t, kernel = nodes(xp, r, r_outer)
        values = [-v[0], 0.0 * v[0], *v, v[-1], v[-1]]
        total = sum(k * c for k, c in zip(kernel, values, strict=True))
        return xp.where(t < n, total, v[-1] + 0.0 * total)

    def velocity_dispersion(xp, r, r_outer, *d):
        t, kernel = nodes(xp, r, r_outer)
        # Flat inside the first ring and beyond the last.
        values = [d[0], d[0], *d, d[-1], d[-1]]
        total = sum(k * c for k, c in zip(kernel, values, strict=True))
        total = xp.where(t < n, total, d[-1] + 0.0 * total)
        return xp.where(total > 0, total, 0.0 * total)

    docs = {surface_brightness: "surface brightness, 1 at the centre.",
            rotation_velocity: "rotation speed, 0 at the centre.",
            velocity_dispersion: "intrinsic velocity dispersion, flat inside the first ring."}
    for func, prefix in ((surface_brightness, "sb"), (rotation_velocity, "v"),
                         (velocity_dispersion, "v_disp")):
        names = [f"{prefix}_{k}" for k in range(1, n + 1)]
        params = [inspect.Parameter(nm, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                  for nm in ("xp", "r", "r_outer", *names)]
        func.__signature__ = inspect.Signature(params)
        func.__doc__ = "Ring-by-ring " + docs[func]
    return (staticmethod(surface_brightness), staticmethod(rotation_velocity),
            staticmethod(velocity_dispersion))


def ring_class(n_rings):
    """The `TiltedRingDisk` subclass with ``n_rings`` rings (made once, then cached).

    Parameters
    ----------
    n_rings : int
        1 to 64.

    Returns
    -------
    cls : type
        ``TiltedRingDisk<n_rings>``, a subclass of `TiltedRingDisk`.

    Examples
    --------
    >>> from astrokin.models.rings import ring_class
    >>> ring_class(3).param_names[-9:-3]
    ('v_1', 'v_2', 'v_3', 'sb_1', 'sb_2', 'sb_3')
    """
    if isinstance(n_rings, bool) or not isinstance(n_rings, (int, np.integer)) \
            or not 1 <= n_rings <= _MAX_RINGS:
        raise ValueError(f"n_rings must be an integer from 1 to {_MAX_RINGS}; got {n_rings!r}.")
    n_rings = int(n_rings)
    if n_rings in _CLASSES:
        return _CLASSES[n_rings]
    name = f"TiltedRingDisk{n_rings}"
    members = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"`TiltedRingDisk` with {n_rings} rings (see its documentation).",
        "n_rings": n_rings,
        "node_speeds": tuple(f"v_{k}" for k in range(1, n_rings + 1)),
    }
    for k in range(1, n_rings + 1):
        members[f"v_{k}"] = Parameter(default=150.0, unit=u.km / u.s, bounds=(0.0, 1000.0),
                                      description=f"Rotation speed at ring {k}")
    for k in range(1, n_rings + 1):
        members[f"sb_{k}"] = Parameter(default=float(np.exp(-2.0 * k / n_rings)),
                                       bounds=(0.0, 1000.0),
                                       description=f"Surface brightness at ring {k}, "
                                                   "relative to the centre")
    for k in range(1, n_rings + 1):
        members[f"v_disp_{k}"] = Parameter(default=10.0, unit=u.km / u.s, bounds=(0.0, 300.0),
                                           description=f"Velocity dispersion at ring {k}")
    (members["surface_brightness"], members["rotation_velocity"],
     members["velocity_dispersion"]) = _profiles(n_rings)
    cls = type(TiltedRingDisk)(name, (TiltedRingDisk,), members)
    _CLASSES[n_rings] = cls
    return cls


def __getattr__(name):
    # Generated classes are found by name (pickle, network files) even before first use.
    match = re.fullmatch(r"TiltedRingDisk(\d+)", name)
    if match:
        return ring_class(int(match.group(1)))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
