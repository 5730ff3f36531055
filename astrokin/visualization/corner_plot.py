"""A corner plot of a fit's MC-dropout samples (with the ``corner`` package)."""

import numpy as np
from astropy import units as u

from astrokin._optional import import_corner, new_figure

__all__ = ["plot_corner"]

_CIRCULAR = ("pa",)


def plot_corner(samples, *, names=None, galaxy=0, truths=None, figure=None, **corner_kwargs):
    """Corner plot of the MC-dropout samples of one galaxy's fit.

    Parameters
    ----------
    samples : dict
        Name to Quantity of MC samples, as in a fitter's
        ``fit_info['samples']`` (keep them with ``keep_samples=True``, the
        default).
    names : list of str, optional
        Parameters to show, in order. Default: every sampled parameter that
        varies, ``vsini`` included.
    galaxy : int, optional
        Which galaxy, when the samples are ``(N, mc_samples)``.
    truths : dict, optional
        Name to value (Quantity or number in the samples' unit), drawn as
        lines, e.g. the true parameters of a simulated galaxy.
    figure : `matplotlib.figure.Figure`, optional
        Figure to draw on (it must have no axes yet).
    **corner_kwargs
        Passed on to `corner.corner`.

    Returns
    -------
    figure : `matplotlib.figure.Figure`

    Raises
    ------
    ImportError
        If matplotlib or corner is not installed.
    ValueError
        If there are no samples, or a name is not among them.

    Notes
    -----
    The position angle is unwrapped about its circular mean, so that a
    posterior around 0/360 deg is shown as one peak. MC-dropout samples show
    the network's own variability; they are not a posterior over the data
    (see :doc:`/concepts`).

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astrokin.visualization import plot_corner
    >>> rng = np.random.default_rng(1)
    >>> samples = {"inclination": rng.normal(60, 1, 500) * u.deg,
    ...            "pa": np.remainder(rng.normal(0, 2, 500), 360) * u.deg}
    >>> fig = plot_corner(samples)
    >>> len(fig.axes)
    4
    """
    corner = import_corner()
    if not samples:
        raise ValueError("No MC samples: fit with keep_samples=True to keep them.")
    if names is None:
        names = [nm for nm in samples if np.ptp(_column(samples[nm], galaxy)) > 0
                 and nm != "amplitude"]
        if not names:
            raise ValueError("None of the sampled parameters varies.")
    missing = [nm for nm in names if nm not in samples]
    if missing:
        raise ValueError(f"No samples of {missing}; available: {sorted(samples)}.")
    columns, labels, truth_values = [], [], []
    for nm in names:
        q = samples[nm]
        unit = getattr(q, "unit", None)
        values = _column(q, galaxy)
        if nm in _CIRCULAR:
            mean = np.rad2deg(np.arctan2(np.mean(np.sin(np.deg2rad(values))),
                                         np.mean(np.cos(np.deg2rad(values)))))
            values = mean + np.remainder(values - mean + 180.0, 360.0) - 180.0
        columns.append(values)
        labels.append(f"{nm} ({unit.to_string()})" if unit not in (None, u.one) else nm)
        if truths is not None and nm in truths:
            t = truths[nm]
            t = float(u.Quantity(t).to_value(unit) if isinstance(t, u.Quantity) else t)
            if nm in _CIRCULAR:
                t = mean + np.remainder(t - mean + 180.0, 360.0) - 180.0
            truth_values.append(t)
        else:
            truth_values.append(None)
    data = np.column_stack(columns)
    k = data.shape[1]
    fig = figure if figure is not None else new_figure(figsize=(2.2 * k + 1, 2.2 * k + 1))
    options = {"labels": labels, "titles": list(names), "quantiles": [0.1587, 0.5, 0.8413],
               "show_titles": True, "title_fmt": ".4g", "title_kwargs": {"fontsize": 9},
               "label_kwargs": {"fontsize": 10}}
    if any(t is not None for t in truth_values):
        options["truths"] = truth_values
        options["truth_color"] = "C3"
    options.update(corner_kwargs)
    return corner.corner(data, fig=fig, **options)


def _column(q, galaxy):
    values = np.asarray(getattr(q, "value", q), dtype=float)
    if values.ndim == 2:
        values = values[galaxy]
    return values.ravel()
