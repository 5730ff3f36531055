"""Mapping between a disc model's parameters and the encoders' outputs.

The encoders end in a Hardtanh, so every network output ``u`` lies in
[-1, 1]. `ParameterLayout` decides, from an astrokin disc model, which
parameters the network predicts, which encoder predicts each, and how each
output maps onto a physical value:

- **Fixed** parameters are not predicted; their values come from the model.
  So are the dispersion parameters (``model.dispersion_parameters``): they
  change the second moment only, which the networks do not read.
- **Tied** parameters are not predicted; their tie is evaluated on the
  predicted parameters (see `tie_values`), so ties must be arithmetic on the
  model's parameter attributes, e.g. ``lambda m: 0.5 * m.r_scale``.
- **Free** parameters get a linear map ``value = lo + (u + 1) (hi - lo) / 2``
  from their bounds.
- A free position angle whose bounds span the full circle (the default
  0-360 deg) is predicted as a pair ``(c, s)`` of outputs and recovered as
  ``atan2(s, c)``: a single bounded scalar would put the wrap-around of the
  angle at the edge of the Hardtanh, where a galaxy at PA 359 deg and one at
  1 deg would need opposite extreme outputs. The pair has no such edge.
  Narrower PA bounds use the plain linear map.

**Which encoder predicts what.** Following the paper (section 2.3), the
mom0 ("intensity") encoder predicts the inclination and the surface
brightness parameters (``model.intensity_parameters``), and the mom1
("velocity") encoder the rotation-curve parameters
(``model.velocity_parameters``). Of the geometry the paper did not learn,
the velocity encoder predicts the position angle (only the velocity field
tells the receding half of the major axis from the approaching one: a mom0
map is symmetric under a 180 deg turn), the systemic velocity, and the
centre ``x_0, y_0`` (the table calls it the *kinematic* centre: the point of
symmetry of the velocity field, which the steep velocity gradient across the
nucleus pins down even for discs with a central hole in mom0). The
inclination stays with mom0: the axis ratio of the intensity distribution is
what constrains it, while mom1 alone only constrains ``V sin i``. A free
``z_scale`` or other unlisted intensity-like parameter also goes to mom0.
``encoder_assignment=`` overrides any of these choices.

**Bounds that are None.** Some parameters have no natural absolute range,
so ranges are derived from each map (and so differ per galaxy, with the
network predicting positions within them):

- lengths on the sky with an upper bound of None: fractions of the map's
  half-width in arcsec, from the paper's Table 2 where it gives them
  (``r_scale`` 0.1-0.35, ``r_turn`` 0.01-0.8), see `LENGTH_FRACTIONS`; a
  given lower bound is kept when it is above the derived one;
- ``x_0``, ``y_0`` without bounds: within +-15% of the half-width (+-4.8 px
  on a 64-pixel map);
- ``v_sys`` without bounds: within +-25% of the map's velocity half-range
  about the median of the mom1 map;
- other velocities without an upper bound: 0 to twice the half-range.

The ``amplitude`` is never predicted: the maps are normalised to their peak,
so it does not change the loss. When it is free the fitter sets it afterwards
by a linear least-squares scaling of the rendered map to the input map.
"""

import numpy as np
from astropy import units as u

__all__ = ["LENGTH_FRACTIONS", "NODE_FRACTION", "ParameterLayout", "check_model", "fixed_values",
           "select_fixed", "tie_values"]

#: Default ranges of sky lengths, as fractions of the map half-width.
LENGTH_FRACTIONS = {
    "r_scale": (0.1, 0.35),
    "r_turn": (0.01, 0.8),
    "r_ring": (0.0, 0.8),
    "ring_width": (0.02, 0.5),
    "r_outer": (0.05, 0.85),
}
#: Fractions used for a length parameter not in `LENGTH_FRACTIONS`.
DEFAULT_LENGTH_FRACTION = (0.01, 1.0)
#: Half-range of the centre offsets, as a fraction of the map half-width.
CENTRE_FRACTION = 0.15
#: Half-range of v_sys about the median of mom1, as a fraction of the velocity half-range.
VSYS_FRACTION = 0.25
#: Range of the projected speed ``v sin i`` of the velocity-scale parameter, as a
#: fraction of the map's velocity half-range ``v_half``.
PROJECTED_FRACTION = (0.3, 4.0)
#: Upper end of the projected speed at one radius (``v_k sin i`` of a ring disc's
#: ``node_speeds``), as a fraction of ``v_half``: linear from 0.
NODE_FRACTION = 2.0

_DEFAULT_ENCODER = {
    "inclination": "intensity",
    "z_scale": "intensity",
    "pa": "velocity",
    "x_0": "velocity",
    "y_0": "velocity",
    "v_sys": "velocity",
}
_ENCODERS = ("intensity", "velocity")


def _to_canonical(value, par_unit, canonical):
    if value is None or par_unit is None or canonical is None:
        return None if value is None else float(value)
    return float((value * par_unit).to_value(canonical))


class ParameterLayout:
    """Which parameters a network predicts and how its outputs map onto them.

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        The model being fitted: its ``fixed``, ``tied`` and ``bounds`` set what
        is predicted and over which ranges. Must be a single model.
    encoder_assignment : dict, optional
        Parameter name to ``'intensity'`` (mom0 encoder) or ``'velocity'``
        (mom1 encoder), overriding the defaults described in the module
        docstring.

    Attributes
    ----------
    slots : list of dict
        One per free parameter, in the model's parameter order: ``name``,
        ``encoder``, ``kind`` (``'linear'`` or ``'angle'``), ``rule``
        (``'absolute'``, ``'half_width'``, ``'v_sys'`` or ``'v_half'``), and the
        ``lo``/``hi`` of the range (absolute values in canonical units, or
        fractions for the map-relative rules). JSON-serialisable.
    n_outputs : dict
        Number of outputs of each encoder.

    Examples
    --------
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.fitting.parameters import ParameterLayout
    >>> layout = ParameterLayout(ExponentialArctanDisk())
    >>> layout.free_names
    ['inclination', 'pa', 'x_0', 'y_0', 'v_sys', 'r_scale', 'r_turn', 'v_max']
    >>> layout.n_outputs
    {'intensity': 2, 'velocity': 7}
    """

    def __init__(self, model, encoder_assignment=None):
        if len(model) != 1:
            raise ValueError(
                f"The model to fit must be a single model, not a model set of {len(model)}; "
                "the fitter returns a model set when given several galaxies."
            )
        self.model_class = type(model)
        self.param_names = list(model.param_names)
        # The dispersion changes mom2 only, which the networks do not see: it is
        # never predicted (refinement fits it to a mom2 map, see
        # astrokin.fitting.dispersion).
        dispersion = getattr(model, "dispersion_parameters", ())
        self.fixed_names = [n for n in self.param_names if model.fixed[n] or n in dispersion]
        self.tied_names = [n for n in self.param_names if model.tied[n] and not model.fixed[n]]
        self.ties = {n: model.tied[n] for n in self.tied_names}
        assignment = dict(_DEFAULT_ENCODER)
        for name in getattr(model, "intensity_parameters", ()):
            assignment.setdefault(name, "intensity")
        for name in getattr(model, "velocity_parameters", ()):
            assignment.setdefault(name, "velocity")
        for name, enc in (encoder_assignment or {}).items():
            if name not in self.param_names:
                raise ValueError(f"encoder_assignment names {name!r}, not a model parameter.")
            if enc not in _ENCODERS:
                raise ValueError(
                    f"encoder_assignment values must be one of {_ENCODERS}; got {enc!r}."
                )
            assignment[name] = enc
        self.slots = []
        for name in self.param_names:
            if name in self.fixed_names or name in self.tied_names or name == "amplitude":
                continue
            par = getattr(model, name)
            canonical = self.model_class.canonical_unit(name)
            lo, hi = (_to_canonical(b, par.unit, canonical) for b in par.bounds)
            slot = {"name": name, "encoder": assignment.get(name, "intensity")}
            if name == self.model_class.velocity_scale_parameter \
                    and "inclination" in self.param_names:
                # The mom1 map constrains the projected speed v sin i, and only as a
                # multiple of its own velocity half-range (the network sees normalised
                # maps): predict that multiple, deproject with the inclination, and
                # clip to the parameter's bounds.
                slot.update(kind="log", rule="projected", lo=PROJECTED_FRACTION[0],
                            hi=PROJECTED_FRACTION[1], bounds=[lo, hi])
            elif name in getattr(self.model_class, "node_speeds", ()) \
                    and "inclination" in self.param_names:
                # A rotation speed at one radius (a ring's): the same, on a linear
                # scale that includes 0 (the inner rings of a slowly rising curve).
                slot.update(kind="linear", rule="projected", lo=0.0, hi=NODE_FRACTION,
                            bounds=[lo, hi])
            else:
                slot.update(_range_rule(name, lo, hi, canonical))
            self.slots.append(slot)
        self._finish()

    def _finish(self):
        self.free_names = [s["name"] for s in self.slots]
        self.n_outputs = {
            enc: sum(2 if s["kind"] == "angle" else 1 for s in self.slots if s["encoder"] == enc)
            for enc in _ENCODERS
        }
        for enc, n in self.n_outputs.items():
            if n == 0:
                raise ValueError(
                    f"No free parameter is predicted by the {enc} encoder; free one of its "
                    "parameters or reassign one with encoder_assignment=."
                )
        self.periods = [360.0 if s["kind"] == "angle" else None for s in self.slots]

    # ------------------------------------------------------------------
    def to_metadata(self):
        """JSON-serialisable description (ties, being callables, are not included)."""
        return {
            "model_class": f"{self.model_class.__module__}:{self.model_class.__qualname__}",
            "param_names": self.param_names,
            "fixed_names": self.fixed_names,
            "tied_names": self.tied_names,
            "slots": self.slots,
        }

    @classmethod
    def from_metadata(cls, meta, model_class):
        """Rebuild a layout saved with `to_metadata` (without ties)."""
        self = cls.__new__(cls)
        self.model_class = model_class
        self.param_names = list(meta["param_names"])
        self.fixed_names = list(meta["fixed_names"])
        self.tied_names = list(meta["tied_names"])
        self.ties = {}
        self.slots = [dict(s) for s in meta["slots"]]
        self._finish()
        return self

    def check_compatible(self, model):
        """Check that a trained network can fit ``model``; return ``model``'s layout.

        The model must be of this layout's class, and its free parameters a
        subset of the ones the network predicts. Parameters the network
        predicts but ``model`` fixes (say a PA known from elsewhere) take the
        model's values: the returned layout lists them in ``overrides``.
        Raises ValueError otherwise.
        """
        other = ParameterLayout(model)
        extra = [n for n in other.free_names if n not in self.free_names]
        if other.model_class is not self.model_class or extra:
            raise ValueError(
                f"This network was trained for {self.model_class.__name__} with free parameters "
                f"{self.free_names}; got {type(model).__name__} with free parameters "
                f"{other.free_names}."
            )
        other.overrides = [n for n in self.free_names
                           if n not in other.free_names and n not in other.tied_names]
        return other

    # ------------------------------------------------------------------
    def ranges(self, context):
        """Per-galaxy ``(lo, hi)`` tensors of each free parameter.

        Parameters
        ----------
        context : dict of `torch.Tensor`
            ``half_width`` (arcsec), ``v_ref`` and ``v_half`` (km/s), each of
            a shape that broadcasts against the outputs' leading shape.

        Returns
        -------
        ranges : dict
            Name to ``(lo, hi)``.
        """
        out = {}
        for s in self.slots:
            lo, hi = s["lo"], s["hi"]
            rule = s["rule"]
            if rule == "absolute":
                out[s["name"]] = (lo, hi)
            elif rule == "half_width":
                hw = context["half_width"]
                out[s["name"]] = (lo * hw, hi * hw)
            elif rule == "v_sys":
                vr, vh = context["v_ref"], context["v_half"]
                out[s["name"]] = (vr + lo * vh, vr + hi * vh)
            elif rule in ("v_half", "projected"):
                vh = context["v_half"]
                out[s["name"]] = (lo * vh, hi * vh)
            else:  # pragma: no cover - guarded at construction
                raise ValueError(f"Unknown range rule {rule!r}.")
        return out

    def to_parameters(self, outputs, context, fixed_values, ties=None, overrides=()):
        """Physical values of all model parameters from encoder outputs.

        Parameters
        ----------
        outputs : dict of `torch.Tensor`
            ``{'intensity': (..., n_i), 'velocity': (..., n_v)}`` in [-1, 1].
        context : dict of `torch.Tensor`
            See `ranges`.
        fixed_values : dict
            Values (canonical units) of the parameters that are not free:
            the fixed ones, ``amplitude``, and starting values of tied ones
            (dispersion parameters left out take their class defaults).
        ties : dict, optional
            Name to tie callable; default the ties of the model this layout
            was built from.
        overrides : sequence of str, optional
            Predicted parameters that take their value from ``fixed_values``
            instead (see `check_compatible`).

        Returns
        -------
        params : dict of `torch.Tensor`
            Every model parameter, broadcast to the outputs' leading shape,
            in canonical units (deg, arcsec, km/s).
        """
        import torch

        ranges = self.ranges(context)
        ref = outputs["intensity"]
        shape = ref.shape[:-1]
        cursor = {enc: 0 for enc in _ENCODERS}
        params = {}
        for s in self.slots:
            out = outputs[s["encoder"]]
            i = cursor[s["encoder"]]
            lo, hi = ranges[s["name"]]
            if s["kind"] == "angle":
                c, sn = out[..., i], out[..., i + 1]
                cursor[s["encoder"]] += 2
                angle = torch.rad2deg(torch.atan2(sn, c))
                params[s["name"]] = lo + torch.remainder(angle - lo, 360.0)
            elif s["kind"] == "log":
                # Geometric interpolation: a scale quantity spanning a decade is as
                # easy to move by a factor at either end, and u = 0 is the geometric
                # middle of the range.
                cursor[s["encoder"]] += 1
                params[s["name"]] = lo * (hi / lo) ** ((out[..., i] + 1.0) * 0.5)
            else:
                cursor[s["encoder"]] += 1
                params[s["name"]] = lo + (out[..., i] + 1.0) * (0.5 * (hi - lo))
        dispersion = self.model_class.dispersion_parameters
        for name in self.param_names:
            if name not in params or name in overrides:
                if name not in fixed_values and name in dispersion:
                    # No map the network sees depends on it: the class default.
                    given = getattr(self.model_class, name).default
                else:
                    given = fixed_values[name]
                value = torch.as_tensor(
                    np.asarray(given, dtype=float), dtype=ref.dtype, device=ref.device
                )
                if value.ndim:
                    # one value per galaxy (first axis), shared by any sample axis
                    value = value.reshape((value.shape[0],) + (1,) * (len(shape) - 1))
                params[name] = value.expand(shape)
        for s in self.slots:
            if s["rule"] == "projected":
                sin_i = torch.sin(torch.deg2rad(params["inclination"])).clamp(min=1e-3)
                lo, hi = s["bounds"]
                raw = params[s["name"]] / sin_i
                # Clip to the bounds only when predicting. While training, a clip would
                # make the rendered mom1 amplitude (bound x sin i) depend on the
                # inclination and pull it to wherever that amplitude fits, against
                # the mom0 axis ratio; unclipped, mom1 fixes v sin i and mom0 the
                # inclination, as the data do.
                params[s["name"]] = raw if raw.requires_grad else torch.clamp(
                    raw, min=lo if lo is not None else 0.0, max=hi)
        ties = self.ties if ties is None else ties
        if ties:
            params.update(tie_values(ties, params, self.param_names))
        return {name: params[name].expand(shape) for name in self.param_names}


    def to_outputs(self, params, context):
        """Encoder outputs that would give ``params``: the inverse of `to_parameters`.

        Used to pre-train a network with labels on synthetic galaxies, whose
        parameters are known. Values outside a range are clipped to [-1, 1].

        Parameters
        ----------
        params : dict of `torch.Tensor`
            Values (canonical units) of at least the free parameters, ``(B,)``.
        context : dict of `torch.Tensor`
            See `ranges`.

        Returns
        -------
        outputs : dict of `torch.Tensor`
            ``{'intensity': (B, n_i), 'velocity': (B, n_v)}``.

        Examples
        --------
        >>> import torch
        >>> from astrokin.models import ExponentialArctanDisk
        >>> from astrokin.fitting.parameters import ParameterLayout
        >>> layout = ParameterLayout(ExponentialArctanDisk())
        >>> ctx = {"half_width": torch.tensor([32.0]), "v_ref": torch.tensor([0.0]),
        ...        "v_half": torch.tensor([200.0])}
        >>> truth = {"inclination": torch.tensor([50.0]), "pa": torch.tensor([120.0]),
        ...          "x_0": torch.tensor([1.0]), "y_0": torch.tensor([-2.0]),
        ...          "v_sys": torch.tensor([10.0]), "r_scale": torch.tensor([5.0]),
        ...          "r_turn": torch.tensor([3.0]), "v_max": torch.tensor([250.0])}
        >>> out = layout.to_outputs(truth, ctx)
        >>> back = layout.to_parameters(out, ctx, {"amplitude": 1.0, "z_scale": 0.0})
        >>> round(float(back["inclination"]), 4), round(float(back["v_max"]), 3)
        (50.0, 250.0)
        """
        import torch

        ranges = self.ranges(context)
        cols = {enc: [] for enc in _ENCODERS}
        for s in self.slots:
            name = s["name"]
            value = params[name]
            lo, hi = ranges[name]
            if s["kind"] == "angle":
                rad = torch.deg2rad(value)
                cols[s["encoder"]] += [torch.cos(rad), torch.sin(rad)]
                continue
            if s["rule"] == "projected":
                value = value * torch.sin(torch.deg2rad(params["inclination"]))
            if s["kind"] == "log":
                t = torch.log(value / lo) / torch.log(torch.as_tensor(hi / lo))
            else:
                t = (value - lo) / (hi - lo)
            cols[s["encoder"]].append(torch.clamp(2.0 * t - 1.0, -1.0, 1.0))
        return {enc: torch.stack(c, dim=-1) for enc, c in cols.items()}


class _TieProxy:
    """Stands in for a model inside a tie: attribute access gives parameter tensors."""

    def __init__(self, params):
        object.__setattr__(self, "_params", params)

    def __getattr__(self, name):
        try:
            return self._params[name]
        except KeyError:
            raise AttributeError(
                f"A tie asked for {name!r}; ties are evaluated on the predicted parameters, "
                "so they may only use parameter attributes of the model."
            ) from None


def tie_values(ties, params, order):
    """Evaluate tie callables on a mapping of parameter tensors.

    Parameters
    ----------
    ties : dict
        Name to callable ``tie(model)``, as in astropy's ``model.tied``.
    params : dict of `torch.Tensor`
        Current parameter values (canonical units).
    order : sequence of str
        Parameter order; ties are evaluated in it, so a tie may use a tied
        parameter listed earlier.

    Returns
    -------
    tied : dict of `torch.Tensor`

    Examples
    --------
    >>> import torch
    >>> from astrokin.fitting.parameters import tie_values
    >>> tie_values({"r_turn": lambda m: 0.5 * m.r_scale},
    ...            {"r_scale": torch.tensor([4.0]), "r_turn": torch.tensor([1.0])},
    ...            ["r_scale", "r_turn"])
    {'r_turn': tensor([2.])}
    """
    import torch

    current = dict(params)
    out = {}
    for name in order:
        if name not in ties:
            continue
        try:
            value = ties[name](_TieProxy(current))
        except Exception as err:
            raise ValueError(
                f"The tie of {name!r} could not be evaluated on the network's predictions "
                f"({type(err).__name__}: {err}); ties must be arithmetic on the model's "
                "parameters, such as `lambda m: 2 * m.r_scale`."
            ) from err
        if isinstance(value, u.Quantity):
            value = value.value
        if isinstance(value, (str, bytes)) or not (
                isinstance(value, torch.Tensor) or np.issubdtype(np.asarray(value).dtype,
                                                                 np.number)):
            raise ValueError(f"The tie of {name!r} returned {value!r} "
                             f"({type(value).__name__}); a tie must return a number, such as "
                             "`lambda m: 2 * m.r_scale`.")
        ref = current[name]
        value = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"The tie of {name!r} returned a non-finite value "
                             f"({value.reshape(-1)[:3].tolist()}); a tie must give finite "
                             "numbers for every galaxy.")
        current[name] = out[name] = value
    return out


def fixed_values(model):
    """Canonical-unit values of every parameter of a single model (floats).

    These are the values `ParameterLayout.to_parameters` uses for the
    parameters the network does not predict.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.fitting.parameters import fixed_values
    >>> from astrokin.models import ExponentialArctanDisk
    >>> fixed_values(ExponentialArctanDisk(pa=1 * u.rad))["pa"]
    57.29577951308232
    """
    return {k: float(np.ravel(v)[0]) for k, v in model.canonical_values().items()}


def select_fixed(fixed, index):
    """The fixed values of the galaxies ``index``: per-galaxy arrays indexed, scalars as they are.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.parameters import select_fixed
    >>> select_fixed({"pa": np.array([[10.0], [20.0]]), "z_scale": 0.0}, np.array([1]))
    {'pa': array([[20.]]), 'z_scale': 0.0}
    """
    return {k: (v[index] if isinstance(v, np.ndarray) and v.ndim else v) for k, v in fixed.items()}


def check_model(model):
    """Check a model given to the fitter: a single disc model, with something to fit.

    It must be a single astrokin disc model with at least one free parameter
    the network can predict, and every fixed value must be finite and inside
    the parameter's bounds (a fixed value outside them would give model maps
    the network was never meant to produce, silently).

    Raises
    ------
    TypeError
        If ``model`` is not an astrokin disc model instance.
    ValueError
        If it is a model set, has no free parameter, a non-finite value,
        inverted bounds, or a fixed value outside its bounds.

    Examples
    --------
    >>> from astrokin.fitting.parameters import check_model
    >>> from astrokin.models import ExponentialArctanDisk
    >>> check_model(ExponentialArctanDisk)
    Traceback (most recent call last):
    ...
    TypeError: model must be an instance, e.g. ExponentialArctanDisk(), not the class ...
    """
    from astrokin.models import KinematicDiskModel

    if isinstance(model, type) and issubclass(model, KinematicDiskModel):
        raise TypeError(
            f"model must be an instance, e.g. {model.__name__}(), not the class "
            f"{model.__name__} itself."
        )
    if not isinstance(model, KinematicDiskModel):
        raise TypeError(
            "model must be an astrokin disc model (a KinematicDiskModel such as "
            f"ExponentialArctanDisk()); got {type(model).__name__}."
        )
    if len(model) != 1:
        raise ValueError(
            f"The model to fit must be a single model, not a model set of {len(model)}; "
            "the fitter returns a model set when given several galaxies."
        )
    free = [n for n in model.param_names
            if not model.fixed[n] and not model.tied[n] and n != "amplitude"]
    if not free:
        raise ValueError(
            f"{type(model).__name__} has no free parameters to fit: every parameter is fixed "
            "or tied (the amplitude alone is set by scaling, not predicted). Free at least "
            "one, e.g. model.fixed['inclination'] = False."
        )
    for name in model.param_names:
        par = getattr(model, name)
        lo, hi = par.bounds
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(
                f"Parameter {name!r} of {type(model).__name__} has inverted bounds "
                f"({lo}, {hi}): give (low, high) with low <= high."
            )
        value = np.ravel(par.value)[0]
        if not np.isfinite(value):
            raise ValueError(
                f"Parameter {name!r} of {type(model).__name__} is {value}; "
                "every parameter value must be finite."
            )
        if model.tied[name]:
            tied = _tied_on_model(model, name)
            if (lo is not None and tied < lo) or (hi is not None and tied > hi):
                unit = f" {par.unit}" if par.unit is not None else ""
                raise ValueError(
                    f"The tie of {name!r} gives {tied:.6g}{unit} on the model's own values, "
                    f"outside its bounds ({lo}, {hi}){unit}: the tie is wrong, or the bounds.")
        if not model.fixed[name]:
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            unit = f" {par.unit}" if par.unit is not None else ""
            raise ValueError(
                f"Fixed parameter {name!r} = {value}{unit} is outside its bounds "
                f"({lo}, {hi}){unit}; change the value or the bounds "
                f"(model.bounds[{name!r}] = (low, high))."
            )


def _tied_on_model(model, name):
    """The value (in the parameter's unit) the tie of ``name`` gives on the model itself."""
    par = getattr(model, name)
    try:
        value = model.tied[name](model)
    except Exception as err:
        raise ValueError(f"The tie of {name!r} could not be evaluated on the model "
                         f"({type(err).__name__}: {err}); ties must be arithmetic on the "
                         "model's parameters, such as `lambda m: 2 * m.r_scale`.") from err
    if isinstance(value, u.Quantity):
        value = value.to_value(par.unit) if par.unit is not None else value.value
    if isinstance(value, (str, bytes)) or not np.issubdtype(np.asarray(value).dtype,
                                                            np.number):
        raise ValueError(f"The tie of {name!r} returned {value!r} ({type(value).__name__}); "
                         "a tie must return a number, such as `lambda m: 2 * m.r_scale`.")
    value = float(np.ravel(np.asarray(value, dtype=float))[0])
    if not np.isfinite(value):
        raise ValueError(f"The tie of {name!r} returned {value} on the model's own values; a "
                         "tie must give a finite number.")
    return value


def _range_rule(name, lo, hi, canonical):
    """The range rule of one free parameter from its (canonical-unit) bounds."""
    kind = "linear"
    is_length = (
        canonical is not None
        and name not in ("inclination", "pa")
        and canonical.is_equivalent(u.arcsec)
    )
    is_velocity = canonical is not None and canonical.is_equivalent(u.km / u.s)
    if name == "pa" and (lo is None or hi is None or hi - lo >= 360.0):
        return {"kind": "angle", "rule": "absolute", "lo": 0.0 if lo is None else lo,
                "hi": (0.0 if lo is None else lo) + 360.0}
    if name in ("x_0", "y_0") and lo is None and hi is None:
        return {"kind": kind, "rule": "half_width", "lo": -CENTRE_FRACTION, "hi": CENTRE_FRACTION}
    if name == "v_sys" and lo is None and hi is None:
        return {"kind": kind, "rule": "v_sys", "lo": -VSYS_FRACTION, "hi": VSYS_FRACTION}
    if lo is not None and hi is not None:
        if not hi > lo:
            raise ValueError(f"Parameter {name!r} has empty bounds ({lo}, {hi}).")
        return {"kind": kind, "rule": "absolute", "lo": lo, "hi": hi}
    if is_length and hi is None and (lo is None or lo <= 0):
        flo, fhi = LENGTH_FRACTIONS.get(name, DEFAULT_LENGTH_FRACTION)
        return {"kind": kind, "rule": "half_width", "lo": flo, "hi": fhi}
    if is_velocity and hi is None and (lo is None or lo <= 0):
        return {"kind": kind, "rule": "v_half", "lo": 0.0, "hi": 2.0}
    raise ValueError(
        f"Parameter {name!r} is free but its bounds {(lo, hi)} do not give a finite range, and "
        "no range can be derived from the maps for it; set its bounds, e.g. "
        f"model.bounds[{name!r}] = (low, high), or fix it."
    )
