"""The diagnostic figure of a fit, after Figs. 2 and 5 of Dawson et al. (2021).

`plot_fit` shows, for one galaxy, the input, model and residual moment-0 and
moment-1 maps with the beam drawn, the intensity along the fitted major axis
(data and model), and the fitted rotation curve with its MC-dropout band and
the data's velocities along the major axis.
"""

import numpy as np
from astropy import units as u

from astrokin._optional import new_figure

__all__ = ["frame_model", "plot_fit", "rotation_curve_band"]

_KMS = u.km / u.s


def plot_fit(fitted, mom0, mom1, *, samples=None, galaxy=0, pixel_scale=None, beam=None,
             mask=None, distance=None, name=None, title=None, figure=None, mom2=None):
    """Diagnostic figure of a fit: maps, residuals, major-axis profile, rotation curve.

    The top row shows moment 0 (data, model, data minus model) and the
    intensity along the fitted major axis; the second row moment 1 and the
    rotation curve; with ``mom2``, a third row moment 2 and the dispersion
    (the model's intrinsic profile, and the observed and model second
    moments along the major axis, which the beam smearing widens). Maps are
    drawn as on the sky, North up and East to the left, with offsets from
    the map centre on the axes; the fitted centre is marked with a cross,
    the major axis with a dashed line (the receding half solid), and the
    restoring beam with an ellipse in the lower left corner.
    The model mom0 is scaled to the data by least squares (the network fits
    normalised maps, so the amplitude is not a fitted parameter).

    Parameters
    ----------
    fitted : `~astrokin.models.KinematicDiskModel`
        The fitted model (or model set, see ``galaxy``), as returned by
        `~astrokin.fitting.NeuralKinematicFitter`.
    mom0, mom1 : array-like, `~astropy.units.Quantity`, HDU or `~astropy.nddata.NDData`
        The maps that were fitted, in any form the fitter accepts (a stack or
        list of maps selects ``galaxy``).
    samples : dict, optional
        MC-dropout samples, name to Quantity, as in the fitter's
        ``fit_info['samples']`` (``(mc_samples,)`` for one galaxy or
        ``(N, mc_samples)``), for the rotation curve's 1-sigma band when
        ``fitted`` does not carry its own (models returned by the fitter do,
        and their band is calibrated as their ``stds`` are).
    galaxy : int, optional
        Which galaxy of a model set (and of stacked maps and samples).
    pixel_scale, beam : optional
        As for the fitter, for maps without WCS or beam keywords.
    mask : array-like of bool, optional
        Pixels that were fitted (True); others are blanked in the data panels.
    distance : `~astropy.units.Quantity`, optional
        Distance to the galaxy: lengths are then shown in kpc, not arcsec.
    name : str, optional
        The galaxy's name, to begin the default title with.
    title : str, optional
        Figure title (default: the name and the fitted geometry).
    figure : `matplotlib.figure.Figure`, optional
        Figure to draw on (default: a new 17x8 inch figure, 17x12 with
        ``mom2``).
    mom2 : optional
        The second-moment map that was fitted (as the fitter takes it).

    Returns
    -------
    figure : `matplotlib.figure.Figure`
        Save it with ``figure.savefig('fit.png')``.

    Raises
    ------
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.fitting import NeuralKinematicFitter
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.visualization import plot_fit
    >>> truth = ExponentialArctanDisk(inclination=60 * u.deg, pa=120 * u.deg,
    ...                               r_scale=5 * u.arcsec, r_turn=2 * u.arcsec,
    ...                               v_max=200 * u.km / u.s)
    >>> mom0, mom1 = truth.render((64, 64), 0.5 * u.arcsec, beam=1.5 * u.arcsec)
    >>> fitter = NeuralKinematicFitter.pretrained(mc_samples=100, seed=0)
    >>> fitted = fitter(ExponentialArctanDisk(), mom0, mom1, pixel_scale=0.5 * u.arcsec,
    ...                 beam=1.5 * u.arcsec)
    >>> fig = plot_fit(fitted, mom0, mom1, samples=fitter.fit_info["samples"],
    ...                pixel_scale=0.5 * u.arcsec, beam=1.5 * u.arcsec)
    >>> len(fig.axes) >= 8
    True
    """
    from matplotlib.patches import Ellipse

    from astrokin.fitting.preprocessing import MIN_RELATIVE_INTENSITY, parse_maps

    model = _single_model(fitted, galaxy)
    observations = parse_maps(mom0, mom1, pixel_scale=pixel_scale, beam=beam, mom2=mom2)
    obs = observations[galaxy] if len(observations) > 1 else observations[0]
    data0, data1 = obs.mom0.copy(), obs.mom1.copy()
    data2 = None if obs.mom2 is None else obs.mom2.copy()
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 3:
            mask = mask[galaxy]
        if mask.shape != data0.shape:
            raise ValueError(f"mask has shape {mask.shape}, the maps {data0.shape}.")
        if obs.flipped:
            mask = mask[:, ::-1]
        data0[~mask] = np.nan
        data1[~mask] = np.nan
        if data2 is not None:
            data2[~mask] = np.nan
    # mom1 where mom0 is too faint is not fitted (see astrokin.fitting.preprocessing)
    faint = ~(np.nan_to_num(data0, nan=-np.inf) >= MIN_RELATIVE_INTENSITY * np.nanmax(data0))
    data1[faint & np.isfinite(data0)] = np.nan
    if data2 is not None:
        from astrokin.fitting.map_problems import MOM2_MIN_RELATIVE_INTENSITY

        dim = ~(np.nan_to_num(data0, nan=-np.inf)
                >= MOM2_MIN_RELATIVE_INTENSITY * np.nanmax(data0))
        data2[(dim & np.isfinite(data0)) | ~np.isfinite(data1)] = np.nan
    ny, nx = data0.shape
    ps = obs.pixel_scale

    # The fitted model in the frame of obs (standard orientation, pixel axes).
    frame = frame_model(model, obs)
    beam_q = None if obs.beam is None else (obs.beam[0] * u.arcsec, obs.beam[1] * u.arcsec,
                                            obs.beam[2] * u.deg)
    maps = frame.render((ny, nx), ps * u.arcsec, beam=beam_q, moment2=data2 is not None)
    m0, m1 = maps[0].value, maps[1].to_value(_KMS)
    ok = np.isfinite(data0)
    scale = np.sum(m0[ok] * data0[ok]) / max(np.sum(m0[ok] ** 2), np.finfo(float).tiny)
    model0 = scale * m0
    model1 = np.where(np.isfinite(data1), m1, np.nan)

    length_unit, to_length = _length_unit(distance)
    half_x, half_y = nx / 2 * ps * to_length, ny / 2 * ps * to_length
    extent = [half_x, -half_x, -half_y, half_y]  # East (+RA offset) to the left
    fp = frame.canonical_values()
    x0, y0 = float(fp["x_0"]), float(fp["y_0"])
    pa = np.deg2rad(float(fp["pa"]))
    centre = np.array([-x0, y0]) * to_length  # RA offset is -x
    direction = np.array([np.sin(pa), np.cos(pa)])  # receding major axis, display frame

    rows_n = 2 if data2 is None else 3
    fig = figure if figure is not None else new_figure(figsize=(17, 4 * rows_n),
                                                       layout="constrained")
    axes = fig.subplots(rows_n, 4)
    unit0 = _unit_label(mom0, galaxy)
    v_sys = float(fp["v_sys"])
    vlim = np.nanpercentile(np.abs(data1 - v_sys), 99) if np.isfinite(data1).any() else 1.0
    res0, res1 = data0 - model0, data1 - model1
    lim0 = _symmetric_limit(res0)
    lim1 = _symmetric_limit(res1)
    vmax0 = np.nanmax(data0)
    panels = [
        (axes[0, 0], data0, "data mom0", "magma", (None, vmax0), unit0),
        (axes[0, 1], model0, "model mom0", "magma", (None, vmax0), unit0),
        (axes[0, 2], res0, "residual mom0 (data - model)", "RdBu_r", (-lim0, lim0), unit0),
        (axes[1, 0], data1, "data mom1", "RdBu_r", (v_sys - vlim, v_sys + vlim), "km/s"),
        (axes[1, 1], model1, "model mom1", "RdBu_r", (v_sys - vlim, v_sys + vlim), "km/s"),
        (axes[1, 2], res1, "residual mom1 (data - model)", "RdBu_r", (-lim1, lim1), "km/s"),
    ]
    if data2 is not None:
        model2 = np.where(np.isfinite(data2), maps[2].to_value(_KMS), np.nan)
        res2 = data2 - model2
        lim2 = _symmetric_limit(res2)
        top2 = np.nanpercentile(data2, 99) if np.isfinite(data2).any() else 1.0
        panels += [
            (axes[2, 0], data2, "data mom2", "viridis", (0, top2), "km/s"),
            (axes[2, 1], model2, "model mom2", "viridis", (0, top2), "km/s"),
            (axes[2, 2], res2, "residual mom2 (data - model)", "RdBu_r", (-lim2, lim2),
             "km/s"),
        ]
    sky = abs(obs.north_angle) < 1e-6
    reach = np.hypot(half_x, half_y)
    for ax, img, panel_title, cmap, (vmin, vmax), unit in panels:
        im = ax.imshow(img, origin="lower", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.85, label=unit)
        ax.set_title(panel_title)
        ax.set_xlabel(f"{'RA offset' if sky else 'x offset (-column)'} ({length_unit})")
        ax.set_ylabel(f"{'Dec offset' if sky else 'y offset (+row)'} ({length_unit})")
        ax.set_xlim(half_x, -half_x)
        ax.set_ylim(-half_y, half_y)
        for sign, style in ((1, "-"), (-1, "--")):
            end = centre + sign * reach * direction
            ax.plot([centre[0], end[0]], [centre[1], end[1]], style, color="0.3", lw=0.8)
        ax.plot(*centre, "+", color="k", ms=10, mew=1.5)
        if obs.beam is not None:
            bmaj, bmin, bpa = obs.beam
            pos = (half_x - (0.08 * 2 * half_x + bmaj / 2 * to_length),
                   -half_y + 0.08 * 2 * half_y + bmaj / 2 * to_length)
            ax.add_patch(Ellipse(pos, bmin * to_length, bmaj * to_length, angle=-bpa,
                                 fc="0.6", ec="k", lw=0.8))

    # Intensity along the major axis (offset > 0: receding side).
    s = np.linspace(-reach, reach, 400) / to_length  # arcsec
    cols = (nx - 1) / 2 + (x0 - s * np.sin(pa)) / ps  # x along +column = -RA offset
    rows = (ny - 1) / 2 + (y0 + s * np.cos(pa)) / ps
    cut0 = _sample(data0, rows, cols)
    cut_model0 = _sample(model0, rows, cols)
    cut1 = _sample(data1, rows, cols)
    inside = np.isfinite(cut_model0)
    ax = axes[0, 3]
    ax.plot(s[inside] * to_length, cut0[inside], ".", color="0.3", ms=3, label="data")
    ax.plot(s[inside] * to_length, cut_model0[inside], "C3", label="model")
    ax.set_xlabel(f"major-axis offset ({length_unit}; > 0: receding)")
    ax.set_ylabel(f"mom0 ({unit0})" if unit0 else "mom0")
    ax.set_title("major-axis intensity profile")
    ax.legend(loc="best")

    # Rotation curve, with the MC band and the data along the major axis.
    ax = axes[1, 3]
    good = np.isfinite(cut1)
    r_max = np.max(np.abs(s[good])) if good.any() else reach / to_length
    r = np.linspace(0, r_max, 200) * u.arcsec
    sin_i = np.sin(np.deg2rad(float(fp["inclination"])))
    if good.any() and sin_i > 0:
        vrot = (cut1[good] - v_sys) / sin_i
        side = s[good] > 0
        ax.plot(np.abs(s[good][side]) * to_length, vrot[side], ".", color="C3", ms=3,
                label=r"receding: $(v - v_{\rm sys}) / \sin i$")
        ax.plot(np.abs(s[good][~side]) * to_length, -vrot[~side], ".", color="C0", ms=3,
                label="approaching")
    band = _band(fitted, model, samples, r, galaxy)
    if band is not None:
        ax.fill_between(r.value * to_length, band[0], band[1], color="0.75",
                        label=r"MC dropout 1$\sigma$")
    ax.plot(r.value * to_length, _curve(model, r), "k", label="fit")
    ax.set_xlabel(f"radius ({length_unit})")
    ax.set_ylabel("rotation speed (km/s)")
    ax.set_title("rotation curve")
    ax.set_xlim(0, r_max * to_length)
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize="small")

    if data2 is not None:
        ax = axes[2, 3]
        cut2 = _sample(data2, rows, cols)
        cut_model2 = _sample(model2, rows, cols)
        seen = np.isfinite(cut2)
        ax.plot(np.abs(s[seen]) * to_length, cut2[seen], ".", color="0.3", ms=3,
                label="data mom2 (major axis)")
        ax.plot(np.abs(s[seen]) * to_length, cut_model2[seen], ".", color="C1", ms=2,
                label="model mom2 (beam-smeared)")
        if model.velocity_dispersion is not None:
            ax.plot(r.value * to_length,
                    model.dispersion_curve(r, band=False).to_value(_KMS), "k",
                    label="intrinsic dispersion (fit)")
        ax.set_xlabel(f"radius ({length_unit})")
        ax.set_ylabel("dispersion (km/s)")
        ax.set_title("velocity dispersion")
        ax.set_xlim(0, r_max * to_length)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize="small")

    if title is None:
        title = _default_title(fitted, model, galaxy)
        title = title if name is None else f"{name}: {title}"
    fig.suptitle(title)
    return fig


def _curve(model, r):
    try:
        curve = model.rotation_curve(r, band=False)
    except TypeError:  # models without MC bands
        curve = model.rotation_curve(r)
    return curve.to_value(_KMS)


def _band(fitted, model, samples, r, galaxy):
    """``(lower, upper)`` of the rotation curve's MC band in km/s, or None."""
    if getattr(fitted, "mc_samples", None) is not None:
        try:
            table = fitted.rotation_curve(r, band=True)
        except TypeError:
            table = None
        if table is not None and "v_rot_lower" in table.colnames:
            if "galaxy" in table.colnames:
                table = table[table["galaxy"] == galaxy]
            return (table["v_rot_lower"].to_value(_KMS), table["v_rot_upper"].to_value(_KMS))
    if samples is not None:
        table = rotation_curve_band(model, samples, r, galaxy=galaxy)
        return table["v_rot_lo"].to_value(_KMS), table["v_rot_hi"].to_value(_KMS)
    return None


def rotation_curve_band(model, samples, r, *, galaxy=0):
    """The rotation curve's MC-dropout 1-sigma band from a fit's samples.

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        The fitted model (its class gives the rotation curve; parameters
        without samples keep its values).
    samples : dict
        Name to Quantity of MC samples, as in ``fit_info['samples']``.
    r : `~astropy.units.Quantity`
        Radii (angles on the sky).
    galaxy : int, optional
        Which galaxy, when the samples are ``(N, mc_samples)``.

    Returns
    -------
    band : `~astropy.table.QTable`
        Columns ``radius``, ``v_rot`` (median), ``v_rot_lo`` and ``v_rot_hi``
        (16th and 84th percentiles of the sampled curves).

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.visualization.diagnostic import rotation_curve_band
    >>> rng = np.random.default_rng(0)
    >>> samples = {"v_max": rng.normal(200, 10, 1000) * u.km / u.s,
    ...            "r_turn": np.full(1000, 2.0) * u.arcsec}
    >>> band = rotation_curve_band(ExponentialArctanDisk(), samples, [1e6] * u.arcsec)
    >>> np.round((band["v_rot_hi"] - band["v_rot_lo"])[0] / 2)  # doctest: +FLOAT_CMP
    <Quantity 10. km / s>
    """
    from astropy.table import QTable

    from astrokin._validation import plain_value

    cls = type(model)
    radius = np.atleast_1d(plain_value(r, u.arcsec, "r")).astype(float)
    values = model.canonical_values()
    args = []
    for name in cls.velocity_parameters:
        if name in samples:
            q = samples[name]
            unit = cls.canonical_unit(name)
            v = q.to_value(unit) if (unit is not None and hasattr(q, "unit")) else np.asarray(q)
            v = np.asarray(v, dtype=float)
            if v.ndim == 2:
                v = v[galaxy]
            args.append(v[:, None])
        else:
            args.append(np.asarray(values[name], dtype=float).ravel()[0])
    curves = np.asarray(cls.rotation_velocity(np, radius[None, :], *args), dtype=float)
    curves = np.broadcast_to(curves, (max(curves.shape[0], 1), radius.size))
    lo, mid, hi = np.percentile(curves, [15.87, 50, 84.13], axis=0)
    return QTable({"radius": radius * u.arcsec, "v_rot": mid * _KMS, "v_rot_lo": lo * _KMS,
                   "v_rot_hi": hi * _KMS})


def frame_model(model, obs):
    """The model in the pixel frame of a parsed `~astrokin.fitting.preprocessing.Observation`.

    The fitter reports the position angle on the sky (East of North) and the
    centre along the input map's columns and rows;
    `~astrokin.fitting.preprocessing.parse_maps` mirrors maps stored with East
    along +column (so ``x_0`` changes sign) and fits rotated maps in their
    pixel frame (``PA_pixel = PA_sky + theta``). This makes the model that
    ``frame.render`` draws on ``obs.mom0``'s pixels.

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        A single fitted model.
    obs : `~astrokin.fitting.preprocessing.Observation`

    Returns
    -------
    frame : `~astrokin.models.KinematicDiskModel`
        A copy with ``pa``, ``x_0`` and ``y_0`` in the frame of
        ``obs.mom0``'s pixels (mirrored, cut out and binned as parsed;
        `~astrokin.fitting.frames.FittingFrame.map_affine`).
    """
    from astrokin.fitting.frames import FittingFrame

    out = model.copy()
    values = model.canonical_values()
    frame = FittingFrame.of(obs, side=max(obs.shape), pad_y=0, pad_x=0)
    mapped = {}
    for name in ("x_0", "y_0", "pa"):
        # The input-map value is a * (map-frame value) + c.
        a, c = frame.map_affine(name)
        mapped[name] = (float(values[name]) - c) / a
    out.pa = np.remainder(mapped["pa"], 360.0) * u.deg
    out.x_0 = mapped["x_0"] * u.arcsec
    out.y_0 = mapped["y_0"] * u.arcsec
    return out


def _single_model(fitted, galaxy):
    """One model of a model set (or the model itself)."""
    if len(fitted) == 1:
        return fitted
    kwargs = {}
    for name in fitted.param_names:
        par = getattr(fitted, name)
        value = par.value[galaxy]
        kwargs[name] = value * par.unit if par.unit is not None else value
    return type(fitted)(**kwargs, fixed=dict(fitted.fixed), bounds=dict(fitted.bounds),
                        name=fitted.name)


def _length_unit(distance):
    """``(label, factor)`` turning arcsec into the displayed length unit."""
    if distance is None:
        return "arcsec", 1.0
    distance = u.Quantity(distance)
    if not distance.unit.is_equivalent(u.m):
        raise u.UnitsError(f"distance must be a length (e.g. 16.5 * u.Mpc); got {distance}.")
    factor = (distance * (1 * u.arcsec).to_value(u.rad)).to_value(u.kpc)
    return "kpc", factor


def _sample(image, rows, cols):
    from scipy.ndimage import map_coordinates

    return map_coordinates(image, [rows, cols], order=1, mode="constant", cval=np.nan)


def _symmetric_limit(image):
    finite = np.abs(image[np.isfinite(image)])
    if finite.size == 0:
        return 1.0
    lim = float(np.percentile(finite, 99))
    return lim if lim > 0 else 1.0


def _unit_label(mom0, galaxy):
    """The unit of the mom0 map, as a string ('' when unknown)."""
    from astrokin._maps import read_map

    item = mom0
    if isinstance(item, (list, tuple)):
        item = item[galaxy]
    try:
        _, unit, _, _ = read_map(item, "mom0")
    except (TypeError, ValueError):
        return ""
    if unit is None or unit == u.dimensionless_unscaled:
        return ""
    header = getattr(item, "header", None)
    if header is not None and "BUNIT" in header:
        return str(header["BUNIT"]).strip()
    return unit.to_string()


def _default_title(fitted, model, galaxy):
    values = model.canonical_values()
    stds = getattr(fitted, "stds", None)
    if isinstance(stds, list):
        stds = stds[galaxy]

    def fmt(name, unit, digits):
        text = f"{float(values[name]):.{digits}f}"
        try:
            text += f" ± {float(stds[name]):.{digits}f}"
        except (KeyError, TypeError, ValueError, IndexError):
            pass
        return f"{text} {unit}"

    parts = [f"i = {fmt('inclination', 'deg', 1)}", f"PA = {fmt('pa', 'deg', 1)}"]
    vname = type(model).velocity_scale_parameter
    if vname is not None:
        parts.append(f"{vname} = {fmt(vname, 'km/s', 0)}")
    parts.append(f"v_sys = {fmt('v_sys', 'km/s', 1)}")
    if "v_disp" in values and not fitted.fixed.get("v_disp", True):
        parts.append(f"v_disp = {fmt('v_disp', 'km/s', 1)}")
    return f"{type(model).__name__} fit: " + ", ".join(parts)
