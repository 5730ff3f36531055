"""The base class of astrokin's rotating-disc models.

A disc model is written once: its parameters (astropy `~astropy.modeling.Parameter`
class attributes with units) and two profile functions, ``surface_brightness``
and ``rotation_velocity``, written with an array namespace ``xp`` (numpy or
torch) so that the same definition serves numpy evaluation, the torch renderer
(`astrokin.rendering.DiskRenderer`) and plotting.
"""

import functools
import inspect

import numpy as np
from astropy import units as u
from astropy.modeling import Fittable2DModel, Parameter
from astropy.utils import classproperty

from astrokin._validation import check_shape, pixel_scale_arcsec, plain_value

__all__ = ["MOMENT2_THRESHOLD", "KinematicDiskModel", "disc_coordinates"]

def disc_coordinates(xp, dx, dy, pa, inclination=None):
    """Coordinates of sky offsets along a disc's major and minor axes.

    The one projection of astrokin's conventions: the receding major axis is
    along ``(-sin PA, cos PA)`` in ``(x, y)`` (North = +y, East = -x, PA North
    through East).

    Parameters
    ----------
    xp : module
        `numpy` or `torch`.
    dx, dy : array-like
        Offsets from the disc's centre, along ``+x`` (+column) and ``+y``.
    pa : array-like
        Position angle (deg).
    inclination : array-like, optional
        Inclination (deg): the minor-axis coordinate is then deprojected into
        the disc plane (divided by ``cos i``, at least 0.05), so that
        ``hypot(major, minor)`` is the radius in a thin disc. None: on the sky.

    Returns
    -------
    major, minor : array-like

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.models import disc_coordinates
    >>> [float(c) for c in disc_coordinates(np, 1.0, 2.0, 0.0, 60.0)]
    [2.0, 2.0]
    """
    pa = xp.deg2rad(pa)
    major = -dx * xp.sin(pa) + dy * xp.cos(pa)
    minor = dx * xp.cos(pa) + dy * xp.sin(pa)
    if inclination is not None:
        minor = minor / xp.clip(xp.cos(xp.deg2rad(inclination)), 0.05, None)
    return major, minor


#: Relative mom0 below which `KinematicDiskModel.render` gives no second moment
#: (there the tabulated transforms' error, ~1e-6 of the peak, times v^2 / mom0
#: exceeds ~1 km/s).
MOMENT2_THRESHOLD = 1e-3

#: Canonical units in which profile functions and the renderer receive values.
LENGTH_UNIT = u.arcsec
ANGLE_UNIT = u.deg
VELOCITY_UNIT = u.km / u.s

_GEOMETRY = ("amplitude", "inclination", "pa", "x_0", "y_0", "v_sys", "z_scale")

# Gauss-Legendre nodes of one integration panel of the line-of-sight quadrature.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


class KinematicDiskModel(Fittable2DModel):
    r"""Base class for models of a rotating gas disc seen on the sky.

    The model maps sky-plane offsets ``(x, y)`` to two outputs: the
    line-of-sight integrated ``intensity`` (what a moment-0 map records at a
    point, before any beam) and the intensity-weighted line-of-sight
    ``velocity`` (moment 1). Subclasses add their profile parameters and
    define two static methods, written with an array namespace ``xp`` that is
    either `numpy` or `torch` (use only functions both provide: ``exp``,
    ``sqrt``, ``arctan``, ``abs``, ``where``, ...):

    ``surface_brightness(xp, r, <intensity parameters>)``
        The face-on surface brightness at radius ``r`` (arcsec), relative to
        ``amplitude``.
    ``rotation_velocity(xp, r, <velocity parameters>)``
        The circular speed at radius ``r`` (arcsec) in km/s.

    Their parameter names (after ``xp, r``) must be parameters of the model;
    profile parameters with angular units are passed in arcsec, velocities in
    km/s. See :doc:`/models` for a complete example.

    Parameters
    ----------
    amplitude : float or `~astropy.units.Quantity`
        Scale of the intensity: the face-on surface brightness is
        ``amplitude * surface_brightness(r)``. Fixed by default, since the
        neural fitter works on normalised maps.
    inclination : `~astropy.units.Quantity`
        Inclination of the disc: 0 deg is face-on, 90 deg edge-on.
    pa : `~astropy.units.Quantity`
        Position angle of the receding half of the major axis, from North
        counter-clockwise through East, 0-360 deg.
    x_0, y_0 : `~astropy.units.Quantity`
        Kinematic centre, as offsets along the ``x`` (+column) and ``y``
        (+row) axes of the map from its centre.
    v_sys : `~astropy.units.Quantity`
        Systemic velocity.
    z_scale : `~astropy.units.Quantity`
        Exponential scale height of the disc, ``exp(-|z|/z_scale)``; 0 is an
        infinitely thin disc. Fixed by default.

    Notes
    -----
    With ``(x', y')`` the sky offsets from the centre along the receding major
    axis and the minor axis, a point at height :math:`z` above the disc plane
    and in-plane coordinates :math:`(X, Y)` is seen at :math:`x' = X`,
    :math:`y' = Y\cos i + z \sin i`. The intensity at a sky position is the
    line-of-sight integral

    .. math::

        I(x', y') = A \int \Sigma(R)\, \frac{e^{-|z|/h}}{2h}\, ds,
        \qquad R = \sqrt{X^2 + Y^2},

    and the velocity is its intensity-weighted mean of
    :math:`v_{\rm sys} + V(R) \sin i \, X / R`. Evaluating the model at
    points computes this integral by Gauss-Legendre quadrature; maps are
    made by `render`, which does the same physics in Fourier space with the
    beam and pixel integration (see `astrokin.rendering.DiskRenderer`).
    """

    n_inputs = 2
    n_outputs = 2
    _input_units_allow_dimensionless = True

    amplitude = Parameter(
        default=1.0, fixed=True, description="Scale of the face-on surface brightness"
    )
    inclination = Parameter(
        default=45.0, unit=u.deg, bounds=(10.0, 90.0),
        description="Inclination: 0 face-on, 90 edge-on",
    )
    pa = Parameter(
        default=0.0, unit=u.deg, bounds=(0.0, 360.0),
        description="Position angle of the receding major axis, North through East",
    )
    x_0 = Parameter(default=0.0, unit=u.arcsec, description="Centre offset along +column")
    y_0 = Parameter(default=0.0, unit=u.arcsec, description="Centre offset along +row")
    v_sys = Parameter(default=0.0, unit=u.km / u.s, description="Systemic velocity")
    z_scale = Parameter(
        default=0.0, unit=u.arcsec, fixed=True, bounds=(0.0, None),
        description="Exponential scale height of the disc",
    )

    #: The parameter the rotation curve is proportional to (``v_max`` and the
    #: like), or None. The neural fitter predicts it as the projected speed
    #: ``v sin i`` and reports ``vsini``; subclasses name it.
    velocity_scale_parameter = None

    #: ``velocity_dispersion(xp, r, <dispersion parameters>)``: the intrinsic
    #: (line-of-sight, one-dimensional) velocity dispersion in km/s at radius
    #: ``r``, a static method like the other profiles; None for a model
    #: without one (its second moment is then the beam smearing alone).
    velocity_dispersion = None

    @classproperty
    def intensity_parameters(cls):  # noqa: N805
        """Names of the parameters of ``surface_brightness``, in its order."""
        return _profile_parameters(cls, "surface_brightness")

    @classproperty
    def velocity_parameters(cls):  # noqa: N805
        """Names of the parameters of ``rotation_velocity``, in its order."""
        return _profile_parameters(cls, "rotation_velocity")

    @classproperty
    def dispersion_parameters(cls):  # noqa: N805
        """Parameters of ``velocity_dispersion`` that no other profile takes (or none).

        They change the second moment (mom2) only: a fit of mom0 and mom1
        alone leaves them as they are.
        """
        shared = cls.intensity_parameters + cls.velocity_parameters
        return tuple(n for n in cls._dispersion_arguments() if n not in shared)

    @classmethod
    def _dispersion_arguments(cls):
        """Every parameter ``velocity_dispersion`` takes (a ring disc's ``r_outer`` too)."""
        if cls.velocity_dispersion is None:
            return ()
        return _profile_parameters(cls, "velocity_dispersion")

    @classmethod
    def dispersion_profile(cls, xp, r, values):
        """The dispersion ``(B, n)`` at radii ``r`` ``(B, n)`` for values ``(B,)`` by name."""
        if cls.velocity_dispersion is None:
            return 0.0 * r
        return cls.velocity_dispersion(xp, r, *[values[n][:, None]
                                                for n in cls._dispersion_arguments()])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outputs = ("intensity", "velocity")
        # Fail early, at construction, on a profile that names a non-parameter.
        self.intensity_parameters, self.velocity_parameters, self.dispersion_parameters  # noqa: B018

    # ------------------------------------------------------------------
    # Profiles (subclasses override)
    @staticmethod
    def surface_brightness(xp, r):
        """Face-on surface brightness at radius ``r`` (arcsec), relative to amplitude."""
        raise NotImplementedError

    @staticmethod
    def rotation_velocity(xp, r):
        """Circular speed (km/s) at radius ``r`` (arcsec)."""
        raise NotImplementedError

    # ------------------------------------------------------------------
    # Units
    @classmethod
    def canonical_unit(cls, name):
        """Unit in which parameter ``name`` enters profiles and the renderer.

        Angles of the geometry (``inclination``, ``pa``) are in degrees, any
        other angle-valued parameter is a length on the sky in arcsec,
        velocities are in km/s, and everything else keeps its declared unit
        (None when dimensionless).

        Examples
        --------
        >>> from astrokin.models import ExponentialArctanDisk
        >>> ExponentialArctanDisk.canonical_unit("r_scale")
        Unit("arcsec")
        """
        unit = getattr(cls, name).unit
        if name in ("inclination", "pa"):
            return ANGLE_UNIT
        if unit is None:
            return None
        if unit.is_equivalent(LENGTH_UNIT):
            return LENGTH_UNIT
        if unit.is_equivalent(VELOCITY_UNIT):
            return VELOCITY_UNIT
        return unit

    def canonical_values(self):
        """Parameter values as plain floats (or arrays) in canonical units.

        Returns
        -------
        values : dict
            Parameter name to value in the unit given by `canonical_unit`.

        Examples
        --------
        >>> import astropy.units as u
        >>> from astrokin.models import ExponentialArctanDisk
        >>> disk = ExponentialArctanDisk(r_scale=0.1 * u.arcmin)
        >>> float(disk.canonical_values()["r_scale"])
        6.0
        """
        out = {}
        for name in self.param_names:
            par = getattr(self, name)
            unit = self.canonical_unit(name)
            if par.unit is not None and unit is not None:
                out[name] = par.quantity.to_value(unit)
            else:
                out[name] = np.asarray(par.value)
        return out

    @property
    def input_units(self):
        """Units of the inputs ``x`` and ``y``: arcsec (plain numbers are taken as arcsec)."""
        return {"x": LENGTH_UNIT, "y": LENGTH_UNIT}

    @property
    def return_units(self):
        """Units of the outputs: those of ``amplitude``, and km/s."""
        amp_unit = self.amplitude.unit
        return {"intensity": amp_unit if amp_unit is not None else u.dimensionless_unscaled,
                "velocity": VELOCITY_UNIT}

    def _parameter_units_for_data_units(self, inputs_unit, outputs_unit):
        units = {}
        for name in self.param_names:
            unit = getattr(self, name).unit
            if name == "amplitude":
                units[name] = outputs_unit["intensity"]
            elif unit is not None and unit.is_equivalent(VELOCITY_UNIT):
                units[name] = outputs_unit["velocity"]
            elif name in ("inclination", "pa"):
                units[name] = ANGLE_UNIT
            elif unit is not None and unit.is_equivalent(LENGTH_UNIT):
                units[name] = inputs_unit[self.inputs[0]]
            else:
                units[name] = unit
        return units

    # ------------------------------------------------------------------
    # Evaluation at points
    def evaluate(self, x, y, *params):
        """Intensity and velocity at sky offsets ``(x, y)`` (see the class notes)."""
        values = {}
        for name, value in zip(self.param_names, params, strict=True):
            unit = self.canonical_unit(name)
            if isinstance(value, u.Quantity):
                value = value.to_value(unit) if unit is not None else value.value
            values[name] = np.asarray(value, dtype=float)
        quantity = isinstance(x, u.Quantity) or isinstance(y, u.Quantity)
        x = plain_value(x, LENGTH_UNIT)
        y = plain_value(y, LENGTH_UNIT)
        intensity, velocity = self._evaluate_values(x, y, values)
        if quantity:
            amp_unit = self.amplitude.unit or u.dimensionless_unscaled
            return intensity * amp_unit, velocity * VELOCITY_UNIT
        return intensity, velocity

    def _evaluate_values(self, x, y, values, second=False):
        arrays = np.broadcast_arrays(x, y, *[values[n] for n in self.param_names])
        shape = arrays[0].shape
        flat = {n: a.ravel() for n, a in zip(("x", "y") + self.param_names, arrays, strict=True)}
        sums = np.empty((3 if second else 2, flat["x"].size))
        chunk = 4096
        for start in range(0, sums.shape[1], chunk):
            sl = slice(start, start + chunk)
            part = {k: v[sl] for k, v in flat.items()}
            sums[:, sl] = self._line_of_sight(part, second)
        intensity, num = sums[0], sums[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = num / intensity
            out = [intensity.reshape(shape), (flat["v_sys"] + mean).reshape(shape)]
            if second:
                out.append(np.sqrt(np.clip(sums[2] / intensity - mean ** 2, 0, None)))
        for a in out[1:]:
            a.reshape(-1)[~(intensity > 0)] = np.nan
        return tuple(a.reshape(shape) for a in out)

    def line_of_sight_dispersion(self, x, y):
        """The intensity-weighted spread of velocities along the sight lines ``(x, y)``.

        What a cube's second moment would record at a point before any beam
        or pixel: the intrinsic dispersion, and the spread of rotation
        velocities along the line of sight through a thick disc.

        Parameters
        ----------
        x, y : `~astropy.units.Quantity` or array-like
            Sky offsets (arcsec when plain), as for ``evaluate``.

        Returns
        -------
        sigma : `~astropy.units.Quantity`
            km/s; NaN where there is no emission.

        Examples
        --------
        >>> import astropy.units as u
        >>> from astrokin.models import ExponentialArctanDisk
        >>> disk = ExponentialArctanDisk(v_disp=12 * u.km / u.s)
        >>> disk.line_of_sight_dispersion(3 * u.arcsec, 1 * u.arcsec).round(6)
        <Quantity 12. km / s>
        """
        x = plain_value(x, LENGTH_UNIT)
        y = plain_value(y, LENGTH_UNIT)
        values = {k: np.asarray(v, dtype=float) for k, v in self.canonical_values().items()}
        return self._evaluate_values(x, y, values, second=True)[2] * VELOCITY_UNIT

    def _line_of_sight(self, p, second=False):
        """Line-of-sight integrals of intensity and intensity x velocity (1D arrays).

        With ``second``, also that of intensity x (dispersion^2 + velocity^2),
        velocities about ``v_sys``.
        """
        inc = np.deg2rad(p["inclination"])
        sin_i, cos_i = np.sin(inc), np.cos(inc)
        xm, ym = disc_coordinates(np, p["x"] - p["x_0"], p["y"] - p["y_0"], p["pa"])
        sb_args = [p[n] for n in self.intensity_parameters]
        v_args = [p[n] for n in self.velocity_parameters]
        d_args = [p[n] for n in self._dispersion_arguments()]
        h = p["z_scale"]
        thin = (h <= 0) | (sin_i < 1e-9)
        intensity = np.zeros_like(xm)
        num = np.zeros_like(xm)
        num2 = np.zeros_like(xm)
        if np.any(thin):
            t = thin
            cos_t = np.maximum(cos_i[t], 1e-300)
            yd = ym[t] / cos_t
            r = np.hypot(xm[t], yd)
            sb = self.surface_brightness(np, r, *[a[t] for a in sb_args]) / cos_t
            vel = self.rotation_velocity(np, r, *[a[t] for a in v_args])
            with np.errstate(invalid="ignore", divide="ignore"):
                cphi = np.where(r > 0, xm[t] / r, 0.0)
            intensity[t] = p["amplitude"][t] * sb
            num[t] = p["amplitude"][t] * sb * vel * sin_i[t] * cphi
            if second:
                disp = self._dispersion(r, [a[t] for a in d_args])
                num2[t] = intensity[t] * (disp ** 2 + (vel * sin_i[t] * cphi) ** 2)
        if not np.all(thin):
            k = ~thin
            intensity[k], num[k], num2[k] = self._thick_los(
                xm[k], ym[k], sin_i[k], cos_i[k], h[k], p["amplitude"][k],
                [a[k] for a in sb_args], [a[k] for a in v_args], p,
                [a[k] for a in d_args],
            )
        return (intensity, num, num2) if second else (intensity, num)

    def _dispersion(self, r, args):
        if self.velocity_dispersion is None:
            return np.zeros_like(r)
        return self.velocity_dispersion(np, r, *args)

    def _thick_los(self, xm, ym, sin_i, cos_i, h, amp, sb_args, v_args, p, d_args=()):
        # Integrate over the in-plane coordinate Y along each sight line:
        # z = (y' - Y cos i) / sin i, ds = dY / sin i. The vertical factor peaks
        # at Y0 = y'/cos i with width h tan i; the disc extends to ~40 of its
        # largest length parameters. Panels split at both features so the
        # Gauss-Legendre rule only sees smooth pieces.
        lengths = [np.abs(p[n]) for n in self.intensity_parameters + self.velocity_parameters
                   if self.canonical_unit(n) == LENGTH_UNIT]
        scale = np.maximum(sum(lengths) if lengths else 1.0, h)
        rmax = 40.0 * scale + np.hypot(xm, ym)
        cos_c = np.maximum(cos_i, 1e-12)
        y0 = np.clip(ym / cos_c, -rmax, rmax)
        w = np.minimum(h * sin_i / cos_c, rmax)
        offsets = np.array([-40.0, -8.0, -1.0, 0.0, 1.0, 8.0, 40.0])
        edges = np.concatenate(
            [y0[:, None] + w[:, None] * offsets, np.stack([-rmax, np.zeros_like(rmax), rmax], 1)],
            axis=1,
        )
        edges = np.sort(np.clip(edges, -rmax[:, None], rmax[:, None]), axis=1)
        a, b = edges[:, :-1, None], edges[:, 1:, None]
        half = 0.5 * (b - a)
        yd = a + half * (_GL_NODES + 1.0)
        wts = half * _GL_WEIGHTS
        xb = xm[:, None, None]
        r = np.hypot(xb, yd)
        z = (ym[:, None, None] - yd * cos_i[:, None, None]) / sin_i[:, None, None]
        hb = h[:, None, None]
        vert = np.exp(-np.abs(z) / hb) / (2.0 * hb * sin_i[:, None, None])
        sb = self.surface_brightness(np, r, *[s[:, None, None] for s in sb_args])
        vel = self.rotation_velocity(np, r, *[s[:, None, None] for s in v_args])
        with np.errstate(invalid="ignore", divide="ignore"):
            cphi = np.where(r > 0, xb / r, 0.0)
        f = sb * vert * wts
        intensity = amp * f.sum(axis=(1, 2))
        num = amp * sin_i * (f * vel * cphi).sum(axis=(1, 2))
        disp = self._dispersion(r, [s[:, None, None] for s in d_args])
        vlos = vel * cphi * sin_i[:, None, None]
        num2 = amp * (f * (disp ** 2 + vlos ** 2)).sum(axis=(1, 2))
        return intensity, num, num2

    # ------------------------------------------------------------------
    # Profiles as Quantities
    def _profile(self, func, names, r, unit):
        r, per_model = self._radii_arcsec(r)
        values = self.canonical_values()
        args = [values[n] for n in names]
        if len(self) > 1:
            args = [np.asarray(a)[(...,) + (None,) * _model_axes(r, per_model)] for a in args]
        return func(np, r, *args) * unit

    def _radii_arcsec(self, r):
        """``(radii in arcsec, per_model)``; lengths are converted with ``self.distance``.

        Plain numbers are arcsec. With one distance per model of a set, the radii
        get a leading model axis and ``per_model`` is True. Radii must be finite,
        not negative, and a number or a 1D sequence.
        """
        values = r.value if isinstance(r, u.Quantity) else r
        try:
            check = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"r must be radii: numbers or a length or angle Quantity; got "
                            f"{r!r}.") from None
        if check.ndim > 1:
            raise ValueError(f"r must be a radius or a 1D sequence of radii; got shape "
                             f"{check.shape}.")
        if not np.all(np.isfinite(check)) or np.any(check < 0):
            raise ValueError(f"r must be finite radii >= 0; got {r}.")
        if isinstance(r, u.Quantity) and r.unit.is_equivalent(u.kpc):
            distance = getattr(self, "distance", None)
            if distance is None:
                raise u.UnitsError(
                    f"Radii in {r.unit} need a distance: fit with distance= (or set "
                    "model.distance), or give radii as angles."
                )
            d = np.asarray(u.Quantity(distance).to_value(u.kpc))
            kpc = r.to_value(u.kpc)
            if d.ndim:
                return kpc[None, ...] / d[(...,) + (None,) * kpc.ndim] * u.rad.to(u.arcsec), True
            return kpc / d * u.rad.to(u.arcsec), False
        return np.asarray(plain_value(r, LENGTH_UNIT, "r"), dtype=float), False

    def rotation_curve(self, r, band=None):
        """Circular rotation speed at radii ``r``, with its MC band after a fit.

        Parameters
        ----------
        r : `~astropy.units.Quantity` or array-like
            Radii in the disc plane, as angles on the sky (arcsec when plain
            numbers), or lengths (e.g. kpc) when the model has a
            ``distance`` (set by `~astrokin.fitting.NeuralKinematicFitter`
            when fitting with ``distance=``).
        band : bool or None, optional
            Whether to return the Monte Carlo band of a fitted model (one
            returned by `~astrokin.fitting.NeuralKinematicFitter`, which
            carries its MC-dropout samples in ``mc_samples``). None (the
            default): the band when the model carries samples, else the
            curve alone.

        Returns
        -------
        v : `~astropy.units.Quantity` or `~astropy.table.QTable`
            Without a band: the deprojected rotation speed in km/s (for a
            model set, one row per model). With one: a QTable with one row
            per radius (and per galaxy, with a ``galaxy`` column, for a model
            set) and columns ``radius`` (as given), ``radius_arcsec``,
            ``v_rot`` (the curve of the fitted parameters), ``v_rot_median``,
            ``v_rot_lower`` and ``v_rot_upper`` (the 15.9th and 84.1st
            percentiles over the MC samples: the 1-sigma band) and
            ``v_rot_std``. When the fitter's MC spreads are calibrated, each
            parameter's samples are scaled about their mean by the same
            factor first, so the band is calibrated too.

        Examples
        --------
        >>> import astropy.units as u
        >>> from astrokin.models import ExponentialArctanDisk
        >>> disk = ExponentialArctanDisk(r_turn=1 * u.arcsec, v_max=200 * u.km / u.s)
        >>> disk.rotation_curve(1 * u.arcsec)
        <Quantity 100. km / s>
        """
        samples = getattr(self, "mc_samples", None)
        if band is None:
            band = samples is not None
        if not band:
            return self._profile(self.rotation_velocity, self.velocity_parameters, r,
                                 VELOCITY_UNIT)
        if samples is None:
            raise ValueError(
                "This model carries no Monte Carlo samples: band=True needs a model returned "
                "by NeuralKinematicFitter (with keep_samples=True)."
            )
        return self._rotation_band(r, samples)

    def _rotation_band(self, r, samples):
        return self._profile_band(r, samples, self.rotation_velocity, self.velocity_parameters,
                                  self.rotation_curve, "v_rot")

    def _profile_band(self, r, samples, func, names, curve, prefix):
        """The MC band of a profile ``func`` of parameters ``names`` (see `rotation_curve`)."""
        from astropy.table import QTable

        r_in = u.Quantity(r) if isinstance(r, u.Quantity) else np.asarray(r, dtype=float) * \
            u.arcsec
        r_in = np.atleast_1d(r_in)
        r_arc = np.atleast_1d(self._radii_arcsec(r_in)[0])
        values = self.canonical_values()
        scale = getattr(self, "mc_std_scale", None) or {}
        n_models = len(self)
        curves = []
        for g in range(n_models):
            args = []
            for name in names:
                if name in samples and not self.fixed[name]:
                    s = np.asarray(u.Quantity(samples[name]).value, dtype=float)
                    s = s if n_models == 1 else s[g]
                    f = float(scale.get(name, 1.0))
                    if f != 1.0:
                        s = s.mean() + f * (s - s.mean())
                else:
                    s = np.full(1, float(np.ravel(values[name])[g]))
                args.append(s[:, None])
            rr = r_arc if r_arc.ndim == 1 else r_arc[g]
            v = func(np, rr[None, :], *args)
            v = np.broadcast_to(v, (max(a.shape[0] for a in args), rr.size))
            curves.append(v)
        mean_curve = np.atleast_2d(curve(r_in, band=False).to_value(VELOCITY_UNIT))
        table = QTable()
        rows = []
        for g, v in enumerate(curves):
            lo, med, hi = np.percentile(v, [15.865, 50.0, 84.135], axis=0)
            rr = r_arc if r_arc.ndim == 1 else r_arc[g]
            rows.append((np.full(rr.size, g), r_in, rr, mean_curve[g], med, lo, hi,
                         v.std(axis=0)))
        cols = list(zip(*rows, strict=True))
        if n_models > 1:
            table["galaxy"] = np.concatenate(cols[0])
        table["radius"] = np.concatenate([np.atleast_1d(c) for c in cols[1]])
        table["radius_arcsec"] = np.concatenate(cols[2]) * u.arcsec
        for name, col in zip(("", "_median", "_lower", "_upper", "_std"), cols[3:],
                             strict=True):
            table[prefix + name] = np.concatenate(col) * VELOCITY_UNIT
        table.meta["band"] = "15.9-84.1 percentiles of the MC-dropout samples"
        table.meta["calibrated"] = bool(scale)
        return table

    def dispersion_curve(self, r, band=None):
        """Intrinsic velocity dispersion at radii ``r``, with its MC band after a fit.

        Parameters
        ----------
        r : `~astropy.units.Quantity` or array-like
            Radii in the disc plane, as for `rotation_curve`.
        band : bool or None, optional
            As for `rotation_curve`: the band of a fitted model's samples
            (of a fit with mom2), with columns ``v_disp``,
            ``v_disp_median``, ``v_disp_lower``, ``v_disp_upper`` and
            ``v_disp_std``. A ring disc's dispersions at neighbouring rings
            are correlated, so the band at a radius is narrower than the
            rings' own errors.

        Returns
        -------
        sigma : `~astropy.units.Quantity` or `~astropy.table.QTable`
            km/s (for a model set, one row per model), or the band's table.

        Raises
        ------
        TypeError
            If the model has no ``velocity_dispersion``.

        Examples
        --------
        >>> import astropy.units as u
        >>> from astrokin.models import ExponentialArctanDisk
        >>> ExponentialArctanDisk(v_disp=15 * u.km / u.s).dispersion_curve([1, 5] * u.arcsec)
        <Quantity [15., 15.] km / s>
        """
        if self.velocity_dispersion is None:
            raise TypeError(f"{type(self).__name__} has no velocity_dispersion profile.")
        samples = getattr(self, "mc_samples", None)
        names = self._dispersion_arguments()
        if band is None:
            band = samples is not None and any(
                nm in samples and not self.fixed[nm] for nm in self.dispersion_parameters)
        if not band:
            return self._profile(self.velocity_dispersion, names, r, VELOCITY_UNIT)
        if samples is None:
            raise ValueError(
                "This model carries no Monte Carlo samples: band=True needs a model returned "
                "by NeuralKinematicFitter (with keep_samples=True).")
        return self._profile_band(r, samples, self.velocity_dispersion, names,
                                  self.dispersion_curve, "v_disp")

    def intensity_profile(self, r):
        """Face-on surface brightness at radii ``r``, including ``amplitude``.

        Parameters
        ----------
        r : `~astropy.units.Quantity` or array-like
            Radii in the disc plane, as angles on the sky (arcsec when plain
            numbers).

        Returns
        -------
        intensity : `~astropy.units.Quantity`
            In the unit of ``amplitude`` (dimensionless when it has none).

        Examples
        --------
        >>> import astropy.units as u
        >>> from astrokin.models import ExponentialArctanDisk
        >>> disk = ExponentialArctanDisk(amplitude=2.0, r_scale=3 * u.arcsec)
        >>> disk.intensity_profile(0 * u.arcsec)
        <Quantity 2.>
        """
        amp = self.amplitude.quantity if self.amplitude.unit is not None else \
            self.amplitude.value * u.dimensionless_unscaled
        if len(self) > 1:
            amp = amp[(...,) + (None,) * _model_axes(*self._radii_arcsec(r))]
        shape = self._profile(self.surface_brightness, self.intensity_parameters, r,
                              u.dimensionless_unscaled)
        return amp * shape

    # ------------------------------------------------------------------
    def render(self, shape, pixel_scale, beam=None, moment2=False, **renderer_options):
        """Moment maps of this disc as an observer would record them.

        Parameters
        ----------
        shape : tuple of int
            ``(ny, nx)`` of the maps. The map centre is at 0-based pixel
            ``((nx - 1) / 2, (ny - 1) / 2)``; ``x_0``/``y_0`` offset the disc
            from there along +column/+row.
        pixel_scale : `~astropy.units.Quantity`
            Angular size of a (square) pixel, e.g. ``0.1 * u.arcsec`` (or
            ``u.arcsec / u.pixel``).
        beam : `radio_beam.Beam`, `~astropy.units.Quantity`, tuple, or None
            Restoring beam (see `astrokin.beams.to_beam`); None for none.
        moment2 : bool, optional
            Also return the second moment (the observed line width).
        **renderer_options
            Passed to `astrokin.rendering.DiskRenderer` (e.g. ``alias_order``).

        Returns
        -------
        mom0 : `~astropy.units.Quantity`
            Pixel-averaged, beam-convolved intensity, in the unit of
            ``amplitude``; shape ``(ny, nx)``, or ``(n_models, ny, nx)`` for a
            model set.
        mom1 : `~astropy.units.Quantity`
            Intensity-weighted line-of-sight velocity in km/s, NaN where the
            model has no emission.
        mom2 : `~astropy.units.Quantity`
            With ``moment2=True``: the intensity-weighted velocity dispersion
            in km/s (the intrinsic ``velocity_dispersion`` and the rotation
            smeared by the beam, the pixel and the disc's thickness), NaN
            where mom1 is and where mom0 is below `MOMENT2_THRESHOLD` of
            its peak.

        Raises
        ------
        TypeError
            If ``shape`` is not two integers or ``pixel_scale`` not a Quantity.
        ValueError
            If a size is below 2, ``pixel_scale`` is not finite and positive,
            a parameter value is not finite, or the beam is invalid (see
            `astrokin.beams.to_beam`).
        astropy.units.UnitsError
            If ``pixel_scale`` or the beam is not an angle.

        Examples
        --------
        >>> import numpy as np
        >>> import astropy.units as u
        >>> from astrokin.models import ExponentialArctanDisk
        >>> disk = ExponentialArctanDisk(inclination=60 * u.deg, pa=90 * u.deg,
        ...                              r_scale=4 * u.arcsec, r_turn=2 * u.arcsec,
        ...                              v_max=200 * u.km / u.s, v_sys=1000 * u.km / u.s)
        >>> mom0, mom1 = disk.render((32, 32), 1 * u.arcsec, beam=2 * u.arcsec)
        >>> mom0.shape, mom1.unit
        ((32, 32), Unit("km / s"))
        >>> bool(mom1[16, 5] > 1000 * u.km / u.s)  # PA 90: receding side to the East (left)
        True
        """
        import torch

        from astrokin.beams import beam_parameters
        from astrokin.rendering import DiskRenderer

        ps = pixel_scale_arcsec(pixel_scale)
        shape = check_shape(shape)
        renderer = DiskRenderer(type(self), shape, dtype=torch.float64, **renderer_options)
        values = self.canonical_values()
        bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
        if bad:
            raise ValueError(
                f"Cannot render {type(self).__name__}: parameters {bad} are not finite "
                f"({', '.join(f'{k}={values[k]}' for k in bad)})."
            )
        # Sizes and speeds that cannot be negative (bounded below by 0) are not.
        negative = [k for k, v in values.items() if k not in ("x_0", "y_0", "v_sys", "pa")
                    and getattr(self, k).bounds[0] is not None
                    and getattr(self, k).bounds[0] >= 0 and np.any(np.asarray(v) < 0)]
        if negative:
            raise ValueError(
                f"Cannot render {type(self).__name__}: parameters {negative} are negative "
                f"({', '.join(f'{k}={values[k]}' for k in negative)}); they are sizes or "
                "speeds, bounded below by 0."
            )
        n = len(self)
        params = {k: torch.as_tensor(np.broadcast_to(v, (n,)).copy(), dtype=torch.float64)
                  for k, v in values.items()}
        bp = beam_parameters(beam)
        beam_t = None if bp is None else torch.tensor([bp] * n, dtype=torch.float64)
        with torch.no_grad():
            maps = renderer(params, torch.full((n,), ps, dtype=torch.float64), beam_t,
                            moment2=bool(moment2))
        mom0 = maps[0].numpy()
        peak = np.max(np.abs(mom0), axis=(-2, -1), keepdims=True)
        empty = ~(mom0 > renderer.emission_threshold * peak)
        velocities = []
        for k, m in enumerate(maps[1:]):
            m = m.numpy().copy()
            # The second moment is a small difference of large ones: below
            # MOMENT2_THRESHOLD of the peak it is not accurate (see /rendering).
            m[empty | ((mom0 < MOMENT2_THRESHOLD * peak) if k else False)] = np.nan
            velocities.append((m[0] if n == 1 else m) * VELOCITY_UNIT)
        amp_unit = self.amplitude.unit or u.dimensionless_unscaled
        return ((mom0[0] if n == 1 else mom0) * amp_unit, *velocities)


def _model_axes(r, per_model):
    """Axes to add to a model set's per-model values to broadcast them against radii ``r``."""
    return np.ndim(r) - (1 if per_model else 0)


@functools.lru_cache(maxsize=1024)  # (read at every render: a signature costs ~50 us)
def _profile_parameters(cls, func):
    names = tuple(inspect.signature(getattr(cls, func)).parameters)[2:]
    missing = [n for n in names if n not in cls.param_names]
    if missing:
        raise TypeError(
            f"{cls.__name__}.{func} takes {missing}, which are not parameters of the "
            f"model (parameters: {cls.param_names})."
        )
    return names
