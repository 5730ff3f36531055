"""Calibrating MC-dropout spreads on galaxies whose parameters are known.

MC-dropout standard deviations measure only part of the error (Dawson et al.
2021 find 35% of 1-sigma intervals containing the truth). For each
parameter, `coverage_factor` is the one rule astrokin uses to fix that: the
factor by which the raw spreads must be multiplied for a fraction ``level``
of the true values to fall within the scaled 1-sigma intervals. Galaxies
with no spread (a parameter pinned at the edge of the network's range) or
no finite error are left out. Both
`~astrokin.fitting.NeuralKinematicFitter.calibrate` (on any maps with a
truth) and pre-training (`astrokin.fitting.pretraining.calibrate`, on
synthetic galaxies) use it.
"""

from dataclasses import dataclass

import numpy as np
from astropy import units as u

__all__ = ["CalibrationRow", "calibrate_parameters", "calibration_targets", "coverage_factor",
           "parameter_errors", "table_values", "truth_columns"]


@dataclass(frozen=True)
class CalibrationRow:
    """The calibration of one parameter.

    Attributes
    ----------
    parameter : str
    scale : float
        The factor applied to the raw MC spreads.
    n : int
        Galaxies used (nonzero spread, finite error).
    coverage_before, coverage_after : float
        Fraction of the raw and of the scaled 1-sigma intervals that contain
        the truth.
    """

    parameter: str
    scale: float
    n: int
    coverage_before: float
    coverage_after: float


def parameter_errors(name, fitted, truth):
    """``fitted - truth``, wrapped to [-180, 180) for the position angle."""
    err = np.asarray(fitted, dtype=float) - np.asarray(truth, dtype=float)
    if name == "pa":
        err = np.remainder(err + 180.0, 360.0) - 180.0
    return err


def coverage_factor(errors, stds, level=0.6827):
    """The factor that gives scaled 1-sigma intervals the coverage ``level``.

    Parameters
    ----------
    errors, stds : array-like
        Per galaxy: fitted minus true value, and the raw MC spread.
    level : float, optional
        Wanted coverage.

    Returns
    -------
    factor : float or None
        The ``level`` quantile of ``|error| / std`` (at least 1e-3) over the
        galaxies with ``std > 0`` and a finite error; None if there are none.
    n : int
        The galaxies used.
    before, after : float
        Coverage of the raw and of the scaled intervals on them.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.calibration import coverage_factor
    >>> rng = np.random.default_rng(0)
    >>> err = rng.normal(0, 2.0, 10000)  # spreads reported as 1, errors of 2
    >>> factor, n, before, after = coverage_factor(err, np.ones(10000))
    >>> round(factor, 1), n, round(after, 2)
    (2.0, 10000, 0.68)
    """
    err = np.asarray(errors, dtype=float)
    std = np.asarray(stds, dtype=float)
    use = (std > 0) & np.isfinite(err)
    if not use.any():
        return None, 0, float("nan"), float("nan")
    z = np.abs(err[use]) / std[use]
    factor = float(max(np.quantile(z, level), 1e-3))
    return factor, int(use.sum()), float(np.mean(z <= 1.0)), float(np.mean(z <= factor))


def calibrate_parameters(names, fitted, stds, truth, level=0.6827):
    """`coverage_factor` of each parameter that can be calibrated.

    Parameters
    ----------
    names : list of str
        Parameters to calibrate.
    fitted, stds, truth : dict of numpy.ndarray
        Per parameter and galaxy: fitted value, raw MC spread, true value
        (the same units).
    level : float, optional

    Returns
    -------
    rows : list of `CalibrationRow`
        One per parameter with at least one galaxy to use.
    """
    rows = []
    for name in names:
        err = parameter_errors(name, fitted[name], truth[name])
        factor, n, before, after = coverage_factor(err, stds[name], level)
        if factor is not None:
            rows.append(CalibrationRow(name, factor, n, before, after))
    return rows


def truth_columns(truth, model_class, names, n):
    """Truth values per galaxy (canonical units) from a table, dict or model set.

    Parameters
    ----------
    truth : `~astropy.table.Table`, dict or `~astropy.modeling.Model`
        Columns, items or parameters named as the model's parameters (and
        ``vsini``): Quantities, or plain numbers in canonical units.
    model_class : type
        The model class fitted (gives the canonical units).
    names : list of str
        The names to look for.
    n : int or None
        Galaxies fitted; None (before the maps are read): the columns need
        only be of one length.

    Returns
    -------
    values : dict of numpy.ndarray
        The names found, ``(n,)`` each.

    Raises
    ------
    TypeError
        If ``truth`` is none of the accepted kinds, or a column does not
        hold numbers.
    ValueError
        If a column does not hold one finite value per galaxy.
    astropy.units.UnitConversionError
        If a Quantity has the wrong kind of unit.
    """
    from astropy.modeling import Model

    if isinstance(truth, Model):
        items = {nm: getattr(truth, nm).quantity if getattr(truth, nm).unit is not None
                 else getattr(truth, nm).value for nm in truth.param_names}
    elif hasattr(truth, "colnames"):
        items = {nm: truth[nm] for nm in truth.colnames}
    elif isinstance(truth, dict):
        items = dict(truth)
    else:
        raise TypeError(
            f"truth must be a Table, a dict or a model set, not {type(truth).__name__}."
        )
    out = {}
    for nm in names:
        if nm not in items:
            continue
        value = items[nm]
        unit = u.km / u.s if nm == "vsini" else model_class.canonical_unit(nm)
        if not isinstance(value, u.Quantity) and getattr(value, "unit", None) is not None \
                and hasattr(value, "quantity"):
            value = value.quantity  # a Table column with a unit
        if isinstance(value, u.Quantity):
            if unit is not None and not value.unit.is_equivalent(unit):
                raise u.UnitConversionError(
                    f"truth[{nm!r}] must be in units of {unit} (or plain numbers in {unit}); "
                    f"got {value.unit}.")
            value = value.to_value(unit) if unit is not None else value.value
        try:
            if isinstance(value, str) or np.asarray(value).dtype.kind not in "iuf":
                raise TypeError
            value = np.atleast_1d(np.asarray(value, dtype=float))
        except (TypeError, ValueError):
            raise TypeError(f"truth[{nm!r}] must hold numbers (a Quantity, or plain numbers in "
                            f"{unit or 'its units'}), one per galaxy; got "
                            f"{type(items[nm]).__name__} {items[nm]!r:.80}.") from None
        if value.ndim != 1:
            raise ValueError(f"truth[{nm!r}] must be one value per galaxy, 1D; got shape "
                             f"{value.shape}.")
        if n is not None and value.shape != (n,):
            raise ValueError(f"truth[{nm!r}] has {value.size} value(s) for {n} galaxies: give "
                             "one per galaxy of the maps, in their order.")
        bad = np.flatnonzero(~np.isfinite(value))
        if bad.size:
            raise ValueError(f"truth[{nm!r}] must be finite numbers; it has {value[bad[0]]} "
                             f"for galaxy {bad[0]} ({bad.size} galaxies in all).")
        out[nm] = value
    lengths = {nm: len(v) for nm, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"truth must give one value per galaxy for every parameter; its "
                         f"columns have {lengths} values.")
    return out


def calibration_targets(truth, model_class, free, parameters, n):
    """The parameters to calibrate and their true values, checked.

    Parameters
    ----------
    truth : `~astropy.table.Table`, dict or model set
        See `truth_columns`.
    model_class : type
    free : list of str
        The free parameters of the fit.
    parameters : list of str or None
        The parameters asked for (default: every free one the truth gives,
        and ``vsini``).
    n : int or None
        Galaxies fitted (None: not yet known, see `truth_columns`).

    Returns
    -------
    names : list of str
    values : dict of numpy.ndarray
        True values, ``vsini`` derived from the inclination and the velocity
        scale when the truth does not give it.

    Raises
    ------
    TypeError, ValueError, astropy.units.UnitConversionError
        As `truth_columns` for a malformed ``truth``.
    ValueError
        If ``parameters`` names one that is not free or that ``truth``
        lacks, or ``truth`` gives none of them.
    """
    values = truth_columns(truth, model_class, list(model_class.param_names) + ["vsini"], n)
    vname = model_class.velocity_scale_parameter
    if "vsini" not in values and vname in values and "inclination" in values:
        values["vsini"] = values[vname] * np.sin(np.deg2rad(values["inclination"]))
    if parameters is not None:
        wanted = list(parameters)
        unknown = [nm for nm in wanted if nm not in free + ["vsini"]]
        if unknown:
            raise ValueError(f"Cannot calibrate {unknown}: the free parameters of this fit "
                             f"are {free + ['vsini']}.")
        missing = [nm for nm in wanted if nm not in values]
        if missing:
            raise ValueError(f"truth gives no values of {missing}.")
    else:
        wanted = free + ["vsini"]
    names = [nm for nm in wanted if nm in values]
    if not names:
        raise ValueError(
            f"truth gives none of the parameters to calibrate ({', '.join(wanted)})."
        )
    return names, values


def table_values(table, names, model_class):
    """``(fitted, stds)``: plain arrays in canonical units of a results table's columns."""
    fitted, stds = {}, {}
    for nm in names:
        unit = u.km / u.s if nm == "vsini" else model_class.canonical_unit(nm)
        if unit is None:
            fitted[nm], stds[nm] = np.asarray(table[nm]), np.asarray(table[f"{nm}_std"])
        else:
            fitted[nm] = table[nm].to_value(unit)
            stds[nm] = table[f"{nm}_std"].to_value(unit)
    return fitted, stds
