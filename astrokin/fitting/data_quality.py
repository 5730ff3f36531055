"""Warnings about odd data, each naming the galaxies it concerns.

`parse_maps <astrokin.fitting.preprocessing.parse_maps>` looks at every
galaxy's maps as read (after the masks, and after the spurious-pixel
rejection for all but the first test) and gives one
`~astrokin.exceptions.DataQualityWarning` per kind of problem, listing the
galaxies by name (``names=``; `~astrokin.survey.fit_catalogue` gives its
ids) or index:

velocities that look like m/s
    mom1's central 90% spans more than `MAX_VELOCITY_SPAN` km/s, or its
    median is beyond the speed of light: no galaxy disc does that, but a map
    in m/s given as plain numbers (or with an AIPS-style ``BUNIT``) does.
a hot mom0 pixel
    mom0's peak is more than `HOT_PIXEL_FACTOR` times its 99th percentile:
    the velocity map is only used where mom0 exceeds a fraction of its peak,
    so one such pixel blanks the velocity field.
too few beams
    fewer than `MIN_BEAMS` beam areas of valid velocity pixels: a disc
    cannot be told from noise with fewer independent measurements.
no velocity gradient
    mom1's central 90% spans less than `MIN_VELOCITY_SPAN` km/s: a face-on
    or non-rotating source, whose inclination and rotation are unconstrained.
cut by the map edge
    valid velocity pixels brighter than `EDGE_LEVEL` of the peak line more
    than `EDGE_BEAMS` beams and more than `EDGE_FRACTION` of one side of
    the map: the disc continues beyond it.
a beam outside the network's training range
    (in the fitter, `beam_problems`) the beam's FWHM, as a fraction of the
    fitted map's side, is more than twice the largest or less than half the
    smallest the pre-trained network saw: the network never reads the beam.
more than one source
    a second group of connected valid pixels holds at least
    `SECOND_SOURCE_FRACTION` of the largest one, and several beams: the
    fit treats the map as a single disc.
"""

import warnings

import numpy as np

from astrokin.exceptions import DataQualityWarning
from astrokin.fitting.binning import pixel_groups

__all__ = ["beam_problems", "galaxy_names", "quality_problems", "unit_problems",
           "warn_problems"]

#: Largest plausible span (km/s) of mom1's central 90% (5th to 95th percentile).
MAX_VELOCITY_SPAN = 5000.0
#: The speed of light in km/s: no line-of-sight velocity is beyond it.
SPEED_OF_LIGHT = 299792.458
#: mom0 peak over its 99th percentile above which the peak is a hot pixel.
HOT_PIXEL_FACTOR = 1000.0
#: Fewest beam areas of valid velocity pixels for a meaningful fit.
MIN_BEAMS = 3.0
#: Smallest span (km/s) of mom1's central 90% that shows rotation.
MIN_VELOCITY_SPAN = 10.0
#: Length of the map's border (in beams) lined with valid pixels that says the
#: disc continues beyond the map.
EDGE_BEAMS = 2.0
#: Intensity (relative to mom0's 99th percentile) of the pixels that count
#: as the disc reaching the edge.
EDGE_LEVEL = 0.02
#: Fraction of one side of the map lined with valid pixels that says so too.
EDGE_FRACTION = 1.0 / 3.0
#: Size of a second group of valid pixels, relative to the largest, that is a
#: second source rather than noise.
SECOND_SOURCE_FRACTION = 0.2

#: Galaxies named in one warning; the rest are counted.
MAX_LISTED = 10

_MESSAGES = {
    "m/s": ("Velocities that look like m/s", "mom1's values span {detail} km/s; no disc "
            "rotates that fast. Give mom1 with its unit (mom1 * u.m / u.s), or a FITS BUNIT "
            "of 'm/s'."),
    "hot": ("A hot mom0 pixel", "the peak is {detail} times the 99th percentile; mom1 is used "
            "only where mom0 exceeds 1e-3 of the peak, so the velocity field is lost. Mask or "
            "clip the pixel."),
    "beams": ("Too few beams", "only {detail} beam areas of valid velocity pixels; the fit "
              "is poorly constrained."),
    "gradient": ("No velocity gradient", "mom1's central 90% spans only {detail} km/s: "
                 "face-on or not rotating, so the inclination and rotation are "
                 "unconstrained."),
    "edge": ("Cut by the map edge", "valid pixels line {detail} beams of one side: the disc "
             "continues beyond the map, and its outer parts are not fitted."),
    "beam": ("A beam outside the network's training range", "the beam's FWHM is {detail} "
             "of the fitted map's side, beyond the range the network was trained on; the "
             "network does not read the beam, so its fit of these maps is an extrapolation "
             "(refinement, refine=True, models the beam itself)."),
    "sources": ("More than one source", "a second group of pixels holds {detail} of the "
                "largest one's; the fit treats the map as one disc. Mask the others (mask= or "
                "exclude=)."),
}


def galaxy_names(observations):
    """How messages name each galaxy: its ``name``, else ``'galaxy i'``.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.data_quality import galaxy_names
    >>> from astrokin.fitting.preprocessing import Observation
    >>> maps = np.zeros((8, 8))
    >>> galaxy_names([Observation(maps, maps, 1.0, None, name="NGC 42"),
    ...               Observation(maps, maps, 1.0, None)])
    ['NGC 42', 'galaxy 1']
    """
    return [o.name or f"galaxy {g}" for g, o in enumerate(observations)]


def _quantiles(v, qs):
    """Nearest-rank quantiles of ``v`` (a partial sort: these tests run on every galaxy)."""
    k = [min(v.size - 1, max(0, int(round(q * (v.size - 1))))) for q in qs]
    part = np.partition(v, k)
    return [float(part[i]) for i in k]


def _span(v):
    lo, hi = _quantiles(v, (0.05, 0.95))
    return hi - lo


def unit_problems(mom1, valid):
    """The m/s test on a velocity map as read (before any rejection).

    Parameters
    ----------
    mom1 : `numpy.ndarray`
        The velocity map in km/s.
    valid : `numpy.ndarray` of bool
        Pixels with data in both maps.

    Returns
    -------
    problems : dict of str to str
        ``{'m/s': detail}`` when the map looks like m/s, else empty.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.data_quality import unit_problems
    >>> v = 1.5e6 + 2e5 * np.linspace(-1, 1, 400).reshape(20, 20)   # m/s
    >>> unit_problems(v, np.ones(v.shape, bool))
    {'m/s': '3.6e+05'}
    >>> unit_problems(v / 1000, np.ones(v.shape, bool))
    {}
    """
    v = mom1[valid & np.isfinite(mom1)]
    if v.size < 2:
        return {}
    lo, mid, hi = _quantiles(v, (0.05, 0.5, 0.95))
    span = hi - lo
    if span > MAX_VELOCITY_SPAN or abs(mid) > SPEED_OF_LIGHT:
        return {"m/s": f"{span:.2g}"}
    return {}


def quality_problems(mom0, mom1, beam_area, *, groups=None):
    """The tests after the spurious-pixel rejection, on one galaxy's whole maps.

    Parameters
    ----------
    mom0, mom1 : `numpy.ndarray`
        The maps as read (NaN where there are no data or pixels were
        rejected), mom1 in km/s.
    beam_area : float
        The beam's area in pixels (`astrokin.beams.beam_area_pixels`; 1 for
        no beam).
    groups : tuple, optional
        `astrokin.fitting.binning.pixel_groups` of the pixels valid in both
        maps, when they are already known.

    Returns
    -------
    problems : dict of str to str
        Kind of problem (``'hot'``, ``'beams'``, ``'gradient'``, ``'edge'``,
        ``'sources'``) to the figure that shows it.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.data_quality import quality_problems
    >>> y, x = np.mgrid[:40, :40]
    >>> r = np.hypot(x - 20, y - 20)
    >>> mom0 = np.where(r < 15, np.exp(-r / 5), np.nan)
    >>> quality_problems(mom0, 1500.0 + 5.0 * (x - 20), beam_area=4.0)
    {}
    >>> quality_problems(mom0, np.full((40, 40), 1500.0), beam_area=4.0)
    {'gradient': '0'}
    >>> quality_problems(np.exp(-r / 5), 1500.0 + 5.0 * (x - 20), beam_area=4.0)
    {'edge': '11'}
    """
    out = {}
    ok0 = np.isfinite(mom0)
    valid = ok0 & np.isfinite(mom1)
    # The robust peak (99th percentile), for the hot-pixel and edge tests.
    top, peak = _quantiles(mom0[ok0], (0.99, 1.0)) if ok0.any() else (0.0, 0.0)
    if ok0.sum() > 100 and top > 0 and peak > HOT_PIXEL_FACTOR * top:
        out["hot"] = f"{peak / top:.3g}"
    area = max(float(beam_area), 1.0)
    beams = valid.sum() / area
    if beams < MIN_BEAMS:
        out["beams"] = f"{beams:.2g}"
    if valid.sum() >= 2:
        span = _span(mom1[valid])
        if span < MIN_VELOCITY_SPAN:
            out["gradient"] = f"{span:.2g}"
    fwhm = np.sqrt(area * 4.0 * np.log(2.0) / np.pi)  # of a round beam of this area
    # Only emission above EDGE_LEVEL of the (robust) peak counts: a noiseless
    # model map has faint values out to its corners.
    bright = valid & (np.where(ok0, mom0, -np.inf) > EDGE_LEVEL * top)
    sides = [bright[0], bright[-1], bright[:, 0], bright[:, -1]]
    lined = max(int(side.sum()) for side in sides)
    if lined > EDGE_BEAMS * fwhm and any(side.mean() > EDGE_FRACTION for side in sides):
        out["edge"] = f"{lined / fwhm:.2g}"
    sizes = (pixel_groups(valid) if groups is None else groups)[1]
    if len(sizes) > 2:
        sizes = np.sort(sizes[1:])[::-1]
        if sizes[1] >= SECOND_SOURCE_FRACTION * sizes[0] and sizes[1] >= 4 * area:
            out["sources"] = f"{sizes[1] / sizes[0]:.0%}"
    return out


def beam_problems(beam, half_width, recipe):
    """Galaxies whose beam is outside the range a pre-trained network saw.

    Parameters
    ----------
    beam : `numpy.ndarray`
        ``(N, 3)`` beams in arcsec (NaN rows: none), as prepared.
    half_width : `numpy.ndarray`
        ``(N,)`` half the side (arcsec) of each galaxy's fitted map.
    recipe : dict or None
        The network's pre-training recipe (``beam_major_px`` and
        ``beam_major_px_large_maps`` in pixels of its ``shapes``); None (a
        network trained on the user's own maps): no test.

    Returns
    -------
    problems : list of dict
        Per galaxy, ``{'beam': detail}`` where the beam's FWHM, as a
        fraction of the map's side, is more than twice the largest or less
        than half the smallest the network saw.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.data_quality import beam_problems
    >>> recipe = {"beam_major_px": [1.0, 4.0], "shapes": [64, 100]}
    >>> beam_problems(np.array([[2.0, 2.0, 0.0], [20.0, 20.0, 0.0]]), np.array([32.0, 32.0]),
    ...               recipe)
    [{}, {'beam': '0.31'}]
    """
    n = len(half_width)
    if not isinstance(recipe, dict) or "beam_major_px" not in recipe or not recipe.get("shapes"):
        return [{} for _ in range(n)]
    try:
        sizes = [float(v) for v in recipe["shapes"]]
        ranges = [recipe["beam_major_px"], recipe.get("beam_major_px_large_maps")
                  or recipe["beam_major_px"]]
        lo = min(float(ranges[0][0]), float(ranges[1][0])) / max(sizes)
        hi = max(float(ranges[0][1]), float(ranges[1][1])) / min(sizes)
    except (TypeError, ValueError, IndexError):
        return [{} for _ in range(n)]
    fraction = np.asarray(beam, dtype=float)[:, 0] / (2.0 * np.asarray(half_width, dtype=float))
    return [{"beam": f"{f:.2g}"} if np.isfinite(f) and (f > 2.0 * hi or f < 0.5 * lo) else {}
            for f in fraction]


def warn_problems(problems, names):
    """One `~astrokin.exceptions.DataQualityWarning` per kind, naming its galaxies.

    Parameters
    ----------
    problems : sequence of dict
        Per galaxy, from `unit_problems` and `quality_problems`.
    names : sequence of str
        The galaxies' names (or ``'galaxy i'``).

    Examples
    --------
    >>> import warnings
    >>> from astrokin.fitting.data_quality import warn_problems
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_problems([{}, {"beams": "1.5"}], ["NGC 1", "NGC 2"])
    >>> print(caught[0].message)  # doctest: +ELLIPSIS
    Too few beams (NGC 2: 1.5): only ... beam areas of valid velocity pixels; ...
    """
    for kind, (title, text) in _MESSAGES.items():
        hits = [(name, p[kind]) for name, p in zip(names, problems, strict=True) if kind in p]
        if not hits:
            continue
        which = "; ".join(f"{name}: {detail}" for name, detail in hits[:MAX_LISTED])
        if len(hits) > MAX_LISTED:
            which += f"; and {len(hits) - MAX_LISTED} more"
        detail = hits[0][1] if len(hits) == 1 else "that many"
        warnings.warn(f"{title} ({which}): " + text.format(detail=detail), DataQualityWarning,
                      stacklevel=4)
