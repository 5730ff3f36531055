"""Large maps: cut out and binned before anything is made at full size.

A map with a side over `MAX_MAP_SIDE` pixels (a survey tile, an
interferometric map gridded far finer than its beam) would need several
float64 copies of itself for the cleaning, the cut-out and the refinement:
an 8000 x 8000 map is 512 MB per copy. `reduce_map` turns such a map into
what is fitted without making any: the blocks holding valid pixels are found
on a coarse grid (`valid_box`), the maps are cut to the box around the main
ones (a view, with a margin), and, when the box is still larger than
`MAX_MAP_SIDE`, averaged in ``b x b`` blocks a strip of rows at a time
(`block_mean`). mom1 is averaged weighted by mom0, as a moment map made from
a cube binned in the same way would be.

Pixels of the result map back to the input through a `Reduction`, which the
fitting frame (`astrokin.fitting.frames.FittingFrame`) applies when it
reports centres, cut-outs and rejected pixels in the input map's pixels.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_MAP_SIDE", "STRIP_PIXELS", "Reduction", "block_mean", "main_groups_box",
           "pixel_groups", "reduce_map", "reduced_map", "reduced_noise", "valid_box"]

#: Maps (after the cut-out of `valid_box`) with a longer side are binned.
MAX_MAP_SIDE = 512
#: Input pixels read at a time by `block_mean` and `valid_box`.
STRIP_PIXELS = 4_194_304


@dataclass(frozen=True)
class Reduction:
    """How a fitted map was made from the input map: a cut-out, then ``b x b`` binning.

    Pixel ``(i, j)`` of the reduced map is the mean of the input pixels
    ``crop[0] + binning * i + [0, binning)`` (rows) by
    ``crop[1] + binning * j + [0, binning)`` (columns), those beyond the
    input map left out.

    Attributes
    ----------
    crop : tuple of int
        ``(row, column)`` of the first input pixel used.
    binning : int
        Input pixels per reduced pixel along each axis.
    input_shape : tuple of int
        ``(ny, nx)`` of the input map.
    box : tuple of int or None
        ``(ny, nx)`` of the input pixels cut out (None: to the map's end).

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.binning import Reduction
    >>> r = Reduction(crop=(10, 20), binning=4, input_shape=(100, 100))
    >>> [float(v) for v in r.to_input_pixels(0.0, 0.0)]  # reduced pixel (0, 0)'s centre
    [21.5, 11.5]
    >>> np.unravel_index(r.input_indices([0], (5, 5)), (100, 100))[0].tolist()
    [10, 10, 10, 10, 11, 11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13]
    """

    crop: tuple = (0, 0)
    binning: int = 1
    input_shape: tuple | None = None
    box: tuple | None = None

    @property
    def window(self):
        """The input map's ``(rows, columns)`` slices that were cut out."""
        (r0, c0), box = self.crop, self.box or (None, None)
        return (slice(r0, None if box[0] is None else r0 + box[0]),
                slice(c0, None if box[1] is None else c0 + box[1]))

    def to_input_pixels(self, x, y):
        """0-based input-map pixel coordinates of reduced-map coordinates ``x``, ``y``."""
        b = self.binning
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        return self.crop[1] + b * (x + 0.5) - 0.5, self.crop[0] + b * (y + 0.5) - 0.5

    def input_slices(self, offset, shape):
        """The input map's ``(rows, columns)`` slices under a reduced-map window."""
        b, (ny, nx) = self.binning, self.input_shape
        r0, c0 = self.crop[0] + b * offset[0], self.crop[1] + b * offset[1]
        return (slice(r0, min(r0 + b * shape[0], ny)), slice(c0, min(c0 + b * shape[1], nx)))

    def input_indices(self, flat, shape):
        """Flat input-map indices of the input pixels under flat indices of a reduced map.

        ``shape`` is that of the reduced map; each reduced pixel stands for
        up to ``binning**2`` input pixels.
        """
        flat = np.asarray(flat, dtype=np.int64)
        if self.binning == 1 and self.crop == (0, 0) and tuple(shape) == self.input_shape:
            return flat
        b, (ny, nx) = self.binning, self.input_shape
        rows, cols = np.unravel_index(flat, shape)
        dr, dc = np.divmod(np.arange(b * b), b)
        rows = self.crop[0] + b * rows[:, None] + dr
        cols = self.crop[1] + b * cols[:, None] + dc
        inside = (rows < ny) & (cols < nx)
        return np.ravel_multi_index((rows[inside], cols[inside]), (ny, nx))


def _strips(n_rows, width, step):
    """Row ranges of whole ``step``-row blocks, about `STRIP_PIXELS` input pixels each."""
    rows = max(step, STRIP_PIXELS // max(width, 1) // step * step)
    return [(r, min(r + rows, n_rows)) for r in range(0, n_rows, rows)]


def _block_sums(a, b):
    """Sums over ``b x b`` blocks of a 2D array (the last blocks may be partial)."""
    ny, nx = a.shape
    py, px = -ny % b, -nx % b
    if py or px:
        a = np.pad(a, ((0, py), (0, px)))
    return a.reshape(a.shape[0] // b, b, a.shape[1] // b, b).sum(axis=(1, 3))


def valid_box(valid, beam_pixels=0.0, margin=0.15, factor=None):
    """Rows and columns ``(r0, r1, c0, c1)`` around the main groups of valid pixels.

    ``valid`` is counted in blocks of ``factor`` pixels (default: enough
    that the coarse grid has at most `MAX_MAP_SIDE` per side); connected
    groups of blocks holding at least 10% of the valid pixels of the largest
    one are kept (as the cut-out of `astrokin.fitting.preprocessing` does at
    full resolution), and their bounding box is grown by ``margin`` of its
    size plus one beam (``beam_pixels``, input pixels) on every side and
    clipped to the map.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.binning import valid_box
    >>> valid = np.zeros((4000, 4000), dtype=bool)
    >>> valid[1000:1400, 2000:2200] = True
    >>> valid[10, 10] = True  # a stray pixel far away is not a group worth keeping
    >>> valid_box(valid, beam_pixels=5.0)
    (935, 1465, 1965, 2235)
    """
    ny, nx = valid.shape
    c = _coarse_factor(valid.shape) if factor is None else int(factor)
    counts = np.concatenate([_block_sums(valid[r0:r1], c) for r0, r1 in _strips(ny, nx, c)])
    return _box(counts, c, valid.shape, beam_pixels, margin)


def _coarse_factor(shape):
    return max(1, -(-max(shape) // MAX_MAP_SIDE))


def pixel_groups(counts):
    """Connected groups (8-neighbours) of the non-empty pixels of a map, and their sizes.

    Parameters
    ----------
    counts : `numpy.ndarray`
        Valid pixels per pixel or block (a boolean map for single pixels).

    Returns
    -------
    labels : `numpy.ndarray` of int
        The group of each pixel (0: empty), as `scipy.ndimage.label` numbers them.
    sizes : `numpy.ndarray` of float
        ``sizes[k]``: the valid pixels of group ``k`` (``sizes[0] = 0``).

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.binning import pixel_groups
    >>> valid = np.zeros((5, 5), dtype=bool)
    >>> valid[:2, :2] = valid[4, 4] = True
    >>> labels, sizes = pixel_groups(valid)
    >>> sizes.tolist()
    [0.0, 4.0, 1.0]
    """
    from scipy import ndimage

    counts = np.asarray(counts)
    labels, n = ndimage.label(counts > 0, structure=np.ones((3, 3)))
    # The valid pixels of each group (label 0, the empty pixels, holds none).
    sizes = np.bincount(labels.ravel(), weights=counts.ravel().astype(float), minlength=n + 1)
    sizes[0] = 0.0
    return labels, sizes


def main_groups_box(counts, factor=1, shape=None, *, groups=None):
    """Rows and columns ``(r0, r1, c0, c1)`` spanning the main groups of valid pixels.

    ``counts`` holds the valid pixels of ``factor x factor`` blocks (a
    boolean map for single pixels); connected groups (8-neighbours) holding
    at least 10% of the valid pixels of the largest one are kept. The box is
    in pixels of the map of ``shape`` (default: ``counts``' own); all of it
    when nothing is valid. ``groups``: `pixel_groups` of ``counts`` when
    they are already known (``counts`` is then not read, and may be None
    where ``shape`` is given).

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.binning import main_groups_box
    >>> valid = np.zeros((50, 50), dtype=bool)
    >>> valid[10:30, 5:25] = True
    >>> valid[45, 45] = True  # a stray pixel
    >>> main_groups_box(valid)
    (10, 30, 5, 25)
    """
    ny, nx = np.shape(counts) if shape is None else shape
    c = int(factor)
    labels, sizes = pixel_groups(counts) if groups is None else groups
    if len(sizes) == 1:
        return 0, ny, 0, nx
    # The kept groups looked up by label (runs on every galaxy).
    keep = (sizes >= 0.1 * sizes.max())[labels]
    rows = np.flatnonzero(keep.any(axis=1))
    cols = np.flatnonzero(keep.any(axis=0))
    return (int(rows[0]) * c, min((int(rows[-1]) + 1) * c, ny),
            int(cols[0]) * c, min((int(cols[-1]) + 1) * c, nx))


def _box(counts, c, shape, beam_pixels, margin):
    """`valid_box` from the counts of valid pixels in ``c x c`` blocks."""
    ny, nx = shape
    r0, r1, c0, c1 = main_groups_box(counts, c, shape)
    grow_r = int(np.ceil(margin * (r1 - r0) + beam_pixels))
    grow_c = int(np.ceil(margin * (c1 - c0) + beam_pixels))
    return max(r0 - grow_r, 0), min(r1 + grow_r, ny), max(c0 - grow_c, 0), min(c1 + grow_c, nx)


def block_mean(data, b, *, keep=None, weights=None, min_fraction=0.5):
    """Means over ``b x b`` blocks of the valid pixels of a map, a strip of rows at a time.

    Parameters
    ----------
    data : array-like
        ``(ny, nx)`` map, any real dtype (read a strip at a time, never
        copied whole); NaN for no data.
    b : int
        Block side (the last blocks along each axis may be partial).
    keep : array-like, optional
        ``(ny, nx)`` booleans: the pixels that may be used (default: all).
    weights : array-like, optional
        ``(ny, nx)`` weights (negative ones count as 0; pixels where they are
        not finite are not valid); where a block's weights sum to 0 its plain
        mean is used.
    min_fraction : float, optional
        A block with fewer valid pixels (finite, kept) than this fraction of
        its pixels is NaN.

    Returns
    -------
    mean : `numpy.ndarray`
        ``(ceil(ny / b), ceil(nx / b))`` float64.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.binning import block_mean
    >>> block_mean(np.arange(16.0).reshape(4, 4), 2).tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    return _block_means(data, b, keep, weights, min_fraction)[0]


def _valid(data, keep, weights, rows):
    ok = np.isfinite(data[rows])
    if weights is not None:
        ok &= np.isfinite(weights[rows])
    if keep is not None:
        ok &= np.asarray(keep[rows], dtype=bool)
    return ok


def _valid_counts(data, b, keep=None, weights=None):
    """The valid pixels (finite, and finite weights, and kept) of each ``b x b`` block."""
    ny, nx = np.shape(data)
    return np.concatenate([_block_sums(_valid(data, keep, weights, slice(r0, r1)), b)
                           for r0, r1 in _strips(ny, nx, b)])


def _block_means(data, b, keep, weights, min_fraction):
    """`block_mean`, and the number of valid pixels of each block."""
    ny, nx = np.shape(data)
    means, counts = [], []
    for r0, r1 in _strips(ny, nx, b):
        rows = slice(r0, r1)
        ok = _valid(data, keep, weights, rows)
        v = np.where(ok, np.asarray(data[rows], dtype=float), 0.0)
        n = _block_sums(ok.astype(float), b)
        total = _block_sums(np.ones(ok.shape), b)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = _block_sums(v, b) / n
            if weights is not None:
                w = np.where(ok, np.clip(np.asarray(weights[rows], dtype=float), 0.0, None), 0.0)
                sw = _block_sums(w, b)
                mean = np.where(sw > 0, _block_sums(w * v, b) / np.where(sw > 0, sw, 1.0), mean)
        means.append(np.where(n >= min_fraction * total, mean, np.nan))
        counts.append(n)
    return np.concatenate(means), np.concatenate(counts)


def reduce_map(d0, d1, keep=None, beam_pixels=0.0, max_side=None):
    """The box around the emission of large maps, binned to at most ``max_side`` pixels.

    Nothing the size of the maps is made: the valid pixels are counted, and
    the maps averaged, a strip of rows at a time.

    Parameters
    ----------
    d0, d1 : array-like
        ``(ny, nx)`` mom0 and mom1 (any real dtype, NaN for no data; not
        modified or copied whole).
    keep : `numpy.ndarray`, optional
        ``(ny, nx)`` booleans: pixels that may be used (a mask).
    beam_pixels : float, optional
        The beam's FWHM in input pixels (the box's margin).
    max_side : int, optional
        Default `MAX_MAP_SIDE`.

    Returns
    -------
    mom0, mom1 : `numpy.ndarray`
        float64 maps of the box, binned (mom1 weighted by mom0); NaN where
        fewer than half a block's pixels are valid (finite, and kept).
    reduction : `Reduction`

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.binning import reduce_map
    >>> y, x = np.mgrid[:3000, :3000]
    >>> mom0 = np.where(np.hypot(x - 1500, y - 1500) < 1200, 1.0, np.nan)
    >>> m0, m1, r = reduce_map(mom0, x - 1500.0)
    >>> m0.shape, r.binning, r.crop
    ((500, 500), 6, (0, 0))
    """
    max_side = MAX_MAP_SIDE if max_side is None else int(max_side)
    shape = tuple(np.shape(d0))
    c = _coarse_factor(shape)
    # Valid velocity pixels (both maps finite) in c x c blocks; mom0's alone
    # where mom1 has none.
    counts = _valid_counts(d1, c, keep, d0)
    if not counts.any():
        counts = _valid_counts(d0, c, keep)
    r0, r1, c0, c1 = _box(counts, c, shape, beam_pixels, 0.15)
    window = (slice(r0, r1), slice(c0, c1))
    b = max(1, -(-max(r1 - r0, c1 - c0) // max_side))
    part = None if keep is None else keep[window]
    mom0 = block_mean(d0[window], b, keep=part)
    mom1 = block_mean(d1[window], b, keep=part, weights=d0[window])
    return mom0, mom1, Reduction((r0, c0), b, shape, (r1 - r0, c1 - c0))


def reduced_map(a, reduction, keep=None):
    """Another map of the galaxy (mom2, a velocity window) reduced as the moment maps were.

    ``a`` is ``(ny, nx)`` on the input map's pixels (None stays None); the
    result has the shape of the reduced maps' box and is NaN where fewer
    than half a block's pixels are finite (and kept).

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.binning import Reduction, reduced_map
    >>> r = Reduction(crop=(2, 0), binning=2, input_shape=(8, 4), box=(4, 4))
    >>> reduced_map(np.arange(32.0).reshape(8, 4), r).tolist()
    [[10.5, 12.5], [18.5, 20.5]]
    """
    if a is None:
        return None
    window = reduction.window
    return block_mean(a[window], reduction.binning, keep=None if keep is None else keep[window])


def reduced_noise(a, reduction, keep=None, beam_area=None):
    """A noise map (1-sigma) reduced as the moment maps were: the noise of a block's mean.

    The mean of ``n`` pixels of a block averages ``min(n, n / beam_area)``
    independent noise samples (at least one): the noise of the mean is the
    block's mean noise divided by the square root of that. ``beam_area`` is
    in input pixels (None: every pixel independent).

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.binning import Reduction, reduced_noise
    >>> r = Reduction(binning=4, input_shape=(8, 8))
    >>> reduced_noise(np.full((8, 8), 2.0), r, beam_area=4.0).tolist()  # 4 beams a block
    [[1.0, 1.0], [1.0, 1.0]]
    """
    if a is None:
        return None
    window = reduction.window
    mean, n = _block_means(a[window], reduction.binning,
                           None if keep is None else keep[window], None, 0.5)
    samples = n if not beam_area or beam_area <= 1 else n / beam_area
    return mean / np.sqrt(np.maximum(samples, 1.0))
