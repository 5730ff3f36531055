"""Detecting spurious pixels in observed velocity maps.

Velocity (moment-one) maps made from real cubes carry pixels that are not
part of the disc's velocity field: noise peaks that passed the clipping,
isolated islands far from the galaxy, and values far outside any plausible
velocity (NGC 0524's WISDOM map has pixels at -3331 and 48121 km/s around a
systemic velocity of 2400 km/s). A single such pixel can dominate a squared
loss. `find_spurious` flags three kinds, in this order:

``velocity_limit``
    ``|v - median(v)|`` above ``velocity_limit`` (default 1000 km/s: more
    than any galaxy disc rotates along the line of sight).
``islands``
    Connected groups of valid pixels (8-connectivity) smaller than one beam
    area or than 2% of the largest group: noise blobs, not disc.
``local_outliers``
    Pixels that differ from the median of their valid neighbours (a 5x5 box)
    by more than ``local_sigma`` robust standard deviations, and by more than
    ``local_floor`` km/s. The standard deviation is the larger of the
    neighbours' own spread (large where the field is steep, as in a
    central rise, so that real gradients survive) and that of the
    pixel-to-neighbour differences over the whole map. A spike differs from
    neighbours that agree among themselves.

The flagged pixels are removed from the velocity map (set to NaN) before
fitting; `NeuralKinematicFitter` records their number and positions in
``fit_info['rejected']``.
"""

import numpy as np

__all__ = ["find_spurious"]

#: Robust standard deviation of a Gaussian per median absolute deviation.
_MAD_TO_SIGMA = 1.4826


def _local_median(values, valid, half=2):
    """Median of the valid pixels in a ``(2 half + 1)^2`` box, excluding the pixel itself."""
    from numpy.lib.stride_tricks import sliding_window_view

    a = np.where(valid, values, np.nan)
    p = np.pad(a, half, constant_values=np.nan)
    side = 2 * half + 1
    # windows of the valid pixels only (the others are never tested)
    win = sliding_window_view(p, (side, side))[valid].reshape(-1, side * side)
    win[:, side * side // 2] = np.nan  # leave the pixel itself out (win is a copy)
    med = np.full(a.shape, np.nan)
    count = np.zeros(a.shape, dtype=int)
    spread = np.full(a.shape, np.nan)
    with np.errstate(all="ignore"):
        m, n = _nanmedian(win)
        med[valid], count[valid] = m, n
        spread[valid] = _MAD_TO_SIGMA * _nanmedian(np.abs(win - m[:, None]))[0]
    return med, count, spread


def _nanmedian(a):
    """Median over the last axis ignoring NaN, and the number of finite values.

    The same as `numpy.nanmedian` (NaN where there are none), several times
    faster on many short rows: a partial sort for rows without NaN, one full
    sort (which puts the NaNs last) for the others.
    """
    n = np.sum(np.isfinite(a), axis=-1)
    med = np.full(a.shape[:-1], np.nan)
    size = a.shape[-1]
    full = n == size
    if full.any():
        # rows without NaN (most of a map): a partial sort finds the middle
        k = [(size - 1) // 2, size // 2]
        part = np.partition(a[full], k, axis=-1)
        med[full] = 0.5 * (part[:, k[0]] + part[:, k[1]])
    rest = ~full & (n > 0)
    if rest.any():
        s = np.sort(a[rest], axis=-1)  # NaNs last
        m = n[rest]
        lo = np.take_along_axis(s, ((m - 1) // 2)[:, None], axis=-1)[:, 0]
        hi = np.take_along_axis(s, (m // 2)[:, None], axis=-1)[:, 0]
        med[rest] = 0.5 * (lo + hi)
    return med, n


def find_spurious(mom1, valid=None, *, beam_area=1.0, velocity_limit=1000.0, local_sigma=6.0,
                  local_floor=30.0):
    """Flag pixels of a velocity map that cannot belong to the disc.

    Parameters
    ----------
    mom1 : `numpy.ndarray`
        ``(ny, nx)`` velocity map in km/s (NaN where there are no data).
    valid : `numpy.ndarray` of bool, optional
        Pixels to consider (default: the finite ones).
    beam_area : float, optional
        Beam area in pixels (`astrokin.beams.beam_area_pixels`); islands
        smaller than this (or than 2% of the largest island) are flagged.
    velocity_limit : float or None, optional
        Largest plausible ``|v - median|`` in km/s; None disables the test.
    local_sigma : float or None, optional
        Threshold of the local test in robust standard deviations; None
        disables it.
    local_floor : float, optional
        Smallest local deviation (km/s) ever flagged.

    Returns
    -------
    flags : dict of str to `numpy.ndarray` of bool
        One ``(ny, nx)`` map per test (``'velocity_limit'``, ``'islands'``,
        ``'local_outliers'``); each pixel is flagged by the first test that
        catches it.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.cleaning import find_spurious
    >>> y, x = np.mgrid[:40, :40]
    >>> v = 1500.0 + 5.0 * (x - 20)
    >>> v[10, 12] = 48121.0      # a wild pixel
    >>> v[30, 30] = 2500.0       # a spike: 400 km/s above its neighbours
    >>> flags = find_spurious(v)
    >>> [(k, int(m.sum())) for k, m in flags.items()]
    [('velocity_limit', 1), ('islands', 0), ('local_outliers', 1)]
    """
    from scipy import ndimage

    v = np.asarray(mom1, dtype=float)
    ok = np.isfinite(v) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(v))
    flags = {k: np.zeros(v.shape, dtype=bool)
             for k in ("velocity_limit", "islands", "local_outliers")}
    if not ok.any():
        return flags
    if velocity_limit is not None:
        ref = np.median(v[ok])
        bad = ok & (np.abs(v - ref) > float(velocity_limit))
        # The median itself may be pulled by many wild pixels: re-centre once.
        if bad.any() and (ok & ~bad).any():
            ref = np.median(v[ok & ~bad])
            bad = ok & (np.abs(v - ref) > float(velocity_limit))
        flags["velocity_limit"] = bad
        ok = ok & ~bad
    labels, n = ndimage.label(ok, structure=np.ones((3, 3)))
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        small = (sizes < max(float(beam_area), 1.0)) | (sizes < 0.02 * sizes.max())
        if small.any():
            flags["islands"] = np.isin(labels, np.flatnonzero(small) + 1)
            ok = ok & ~flags["islands"]
    if local_sigma is not None and ok.sum() > 9:
        med, count, local = _local_median(v, ok)
        usable = ok & (count >= 3)
        if usable.any():
            dev = np.where(usable, v - med, np.nan)
            d = dev[usable]
            overall = _MAD_TO_SIGMA * np.median(np.abs(d - np.median(d)))
            # Where the field is steep (a central rise) the neighbours disagree
            # among themselves, and the threshold grows with their spread.
            threshold = np.maximum(float(local_sigma) * np.maximum(np.nan_to_num(local), overall),
                                   float(local_floor))
            flags["local_outliers"] = usable & (np.abs(np.nan_to_num(dev)) > threshold)
    return flags
