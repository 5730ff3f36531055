"""Turning user moment maps into the network's 64x64 normalised inputs, and back.

Input parsing (`parse_maps`)
    mom0/mom1 may be numpy arrays, `~astropy.units.Quantity`, FITS HDUs (or
    an HDUList: its first HDU with data), `~astropy.nddata.NDData` with a
    WCS, stacks ``(N, ny, nx)``, or lists of single maps of different sizes.
    The pixel scale comes from the WCS (`~astropy.wcs.utils.proj_plane_pixel_scales`)
    and the beam from the header (``BMAJ``/``BMIN``/``BPA``) unless
    ``pixel_scale=``/``beam=`` are given, which take precedence. mom1 is read
    in km/s (plain numbers are taken to be km/s). NaN in mom1 means "no data"
    (masked out of the loss), not zero velocity; NaN in mom0 likewise. mom1 is
    also ignored where mom0 is below ``MIN_RELATIVE_INTENSITY`` (1e-3) of its
    peak: a velocity without emission means nothing.

Orientation
    The models assume the standard orientation: North along +row, East along
    -column. Maps whose WCS has East along +column are mirrored in column
    before fitting; a WCS rotated by ``theta`` (North's angle from +row,
    counter-clockwise through -column) is fitted in its pixel frame and the
    position angles of the fit (and of the beam going in) are converted
    between sky and pixel frame with ``PA_pixel = PA_sky + theta``. Plain
    arrays are assumed to be in the standard orientation.

Resampling and bookkeeping (`prepare_batch`)
    A non-square map is first padded to a square of side ``S`` (padding is
    masked out of the loss) so that resampling keeps pixels square; the
    square is then resampled to 64x64 bilinearly
    (`torch.nn.functional.interpolate` with ``align_corners=False``, so the
    64x64 grid covers exactly the same field of view; with ``antialias=True``
    when shrinking, so a large map is averaged rather than point-sampled).
    Masked pixels are handled by normalised interpolation (values and mask
    resampled separately; a 64x64 pixel is valid when at least half its
    weight is). The 64x64 grid has pixel scale ``pixel_scale * S / 64``; all
    lengths the network predicts are in arcsec on the sky, and
    `grid_to_input_pixels` turns a centre on the 64x64 grid back into 0-based
    pixel coordinates of the input map.

Normalisation
    mom0 is divided by its peak (0..1 over the valid pixels); mom1 becomes
    ``(mom1 - v_ref) / v_half`` with ``v_ref`` the median and ``v_half`` the
    99th percentile of the absolute deviations from it over the valid pixels
    (about -1..1; a percentile, so that a few spurious pixels do not set the
    scale). The
    decoder's maps are normalised the same way: rendered mom0 by its own
    peak, rendered mom1 with the input's ``v_ref`` and ``v_half``, so that
    velocities are learned in km/s.
"""

from dataclasses import dataclass, field, replace

import numpy as np
from astropy import units as u

from astrokin._maps import LazyWCS, resolve_wcs, same_grid_cards, split_maps, wcs_orientation
from astrokin._validation import pixel_scale_arcsec
from astrokin.beams import beam_area_pixels, beam_parameters
from astrokin.fitting.batch import PreparedBatch
from astrokin.fitting.binning import (
    MAX_MAP_SIDE,
    Reduction,
    main_groups_box,
    pixel_groups,
    reduce_map,
    reduced_map,
    reduced_noise,
)
from astrokin.fitting.cleaning import map_medians
from astrokin.fitting.encoders import IMAGE_SIZE
from astrokin.fitting.frames import FittingFrame, fitting_frames

__all__ = ["Observation", "grid_to_input_pixels", "map_blocks", "parse_maps", "prepare_batch",
           "prepare_maps", "prepare_training_data", "with_training_data"]

_KMS = u.km / u.s
#: mom1 pixels where mom0 is below this fraction of its peak are not used.
MIN_RELATIVE_INTENSITY = 1e-3


@dataclass
class Observation:
    """One galaxy's maps, cleaned and cut out, in the standard orientation.

    Attributes
    ----------
    mom0, mom1 : `numpy.ndarray`
        ``(ny, nx)`` float maps (the cut-out, mirrored if ``flipped``); mom1
        in km/s, NaN where there are no data or pixels were rejected.
    pixel_scale : float
        Arcsec per pixel of the input map.
    beam : tuple of float or None
        ``(bmaj, bmin, bpa)`` in arcsec, arcsec, deg, with ``bpa`` in the
        pixel frame; None for no beam.
    wcs : `~astropy.wcs.WCS` or None
        Celestial WCS of the input map as given (before any cut-out or
        mirroring).
    flipped : bool
        Whether the columns were mirrored to put East along -column.
    north_angle : float
        ``theta`` in degrees: ``PA_pixel = PA_sky + theta``.
    full_shape : tuple of int or None
        ``(ny, nx)`` of the map as read: the input map, or its reduction
        (None: same as the maps).
    offset : tuple of int
        ``(row, column)`` of the cut-out's first pixel in the map as read.
    rejected : dict
        Pixels left out of the fit, by reason (``'outside_mask'``,
        ``'excluded'``, and the tests of `astrokin.fitting.cleaning`): flat
        indices into the input map
        (``numpy.unravel_index(i, reduction.input_shape)``).
    mom0_err, mom1_err : `numpy.ndarray` or None
        Noise maps (1-sigma, mom0's units and km/s) on the same pixels as
        ``mom0``/``mom1``, when given.
    mom2, mom2_err : `numpy.ndarray` or None
        The second moment (velocity dispersion, km/s; NaN where mom1 is) and
        its noise map, on the same pixels, when given.
    mom2_low, mom2_high : `numpy.ndarray` or None
        The velocity range (km/s) each sightline's mask kept when mom2 was
        made from a cube, when given.
    name : str or None
        The galaxy's name in messages, when given.
    reduction : `~astrokin.fitting.binning.Reduction`
        How the map as read (``full_shape``) was made from the input map: the
        identity, or for maps larger than
        `~astrokin.fitting.binning.MAX_MAP_SIDE` a cut-out and a binning
        (``pixel_scale`` is then that of the binned map).
    """

    mom0: np.ndarray
    mom1: np.ndarray
    pixel_scale: float
    beam: tuple | None
    wcs: object = None
    flipped: bool = False
    north_angle: float = 0.0
    full_shape: tuple | None = None
    offset: tuple = (0, 0)
    rejected: dict = field(default_factory=dict)
    mom0_err: np.ndarray | None = None
    mom1_err: np.ndarray | None = None
    mom2: np.ndarray | None = None
    mom2_err: np.ndarray | None = None
    mom2_low: np.ndarray | None = None
    mom2_high: np.ndarray | None = None
    name: str | None = None
    reduction: Reduction | None = None

    @property
    def noise_maps(self):
        """``(mom0_err, mom1_err)`` when both are given, else None."""
        if self.mom0_err is None or self.mom1_err is None:
            return None
        return self.mom0_err, self.mom1_err

    def __post_init__(self):
        if self.full_shape is None:
            self.full_shape = tuple(self.mom0.shape)
        if self.reduction is None:
            self.reduction = Reduction(input_shape=tuple(self.full_shape))

    @property
    def shape(self):
        """``(ny, nx)`` of the (cut-out) maps that are fitted."""
        return self.mom0.shape

    def without_maps(self):
        """The record of the observation without its maps, for the results of a streamed fit.

        The maps become read-only views of one NaN ("no data") of their
        shape; the noise maps and mom2 are dropped. Everything else (frame,
        beam, WCS, rejected pixels, name) is kept.
        """
        blank = np.broadcast_to(np.float64(np.nan), self.shape)
        return replace(self, mom0=blank, mom1=blank, mom0_err=None, mom1_err=None, mom2=None,
                       mom2_err=None, mom2_low=None, mom2_high=None)


def _as_list(value, n, name):
    """Broadcast a per-galaxy argument to a list of length n."""
    if isinstance(value, (list, tuple)) and not (name == "beam" and _looks_like_beam_tuple(value)):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} entries for {n} galaxies.")
        return list(value)
    if name == "pixel_scale" and isinstance(value, u.Quantity) and not value.isscalar:
        if value.shape != (n,):
            raise ValueError(f"pixel_scale has shape {value.shape} for {n} galaxies.")
        return list(value)
    return [value] * n


def _looks_like_beam_tuple(value):
    return len(value) == 3 and all(isinstance(v, u.Quantity) and v.isscalar for v in value)


def parse_maps(mom0, mom1, pixel_scale=None, beam=None, *, mask=None, exclude=None,
               reject_spurious=True, cutout=True, region_format=None, mom0_err=None,
               mom1_err=None, mom2=None, mom2_err=None, mom2_window=None, names=None):
    """Read moment maps of one or more galaxies into `Observation` objects.

    Parameters
    ----------
    mom0, mom1 : array-like, `~astropy.units.Quantity`, HDU, `~astropy.nddata.NDData`, path, or list
        A single map ``(ny, nx)``, a stack ``(N, ny, nx)``, or a list of
        single maps (sizes may differ); a FITS file name is read (its first
        image HDU). mom1 in velocity units (km/s when plain numbers, or
        per ``BUNIT``: m/s is converted). Length-1 extra axes in a FITS map
        (a leftover spectral or Stokes axis) are dropped; a FITS cube with
        more than one channel is refused (see `astrokin.cubes.moment_maps`).
    pixel_scale : `~astropy.units.Quantity` or list, optional
        Angle per pixel (e.g. ``0.5 * u.arcsec``); one for all galaxies or
        one each. Needed when the maps carry no celestial WCS.
    beam : optional
        Anything `astrokin.beams.to_beam` accepts, or a list of them, one per
        galaxy. Default: from the header (``BMAJ``... via
        `radio_beam.Beam.from_fits_header`, which also reads AIPS ``HISTORY``
        records), else no beam.
    mask, exclude : optional
        Pixels to use (``mask``) or to leave out (``exclude``): a boolean
        array of the map's shape, a `regions` region (pixel, or sky with a
        WCS), a region file, or a list of these (see
        `astrokin.masks.pixel_mask`); one for all galaxies or a list, one
        each.
    reject_spurious : bool, optional
        Remove velocity pixels that cannot belong to the disc
        (`astrokin.fitting.cleaning.find_spurious`).
    cutout : bool, optional
        Cut the maps down to a square around the valid velocity pixels, so
        that a small galaxy in a large map fills the network's 64x64 input.
    region_format : str, optional
        Format of region files whose extension does not tell it.
    mom0_err, mom1_err : optional
        Noise maps (1-sigma) of mom0 and mom1, given as the maps are: in
        mom0's units (plain numbers: the same as mom0) and in velocity units
        (km/s when plain). Both or neither; they are cut out and mirrored
        with the maps.
    mom2, mom2_err : optional
        The second-moment (velocity dispersion) map, and its noise map, in
        velocity units (km/s when plain), given as the maps are; cut out and
        mirrored with them, and blank where mom1 is.
    mom2_window : tuple, optional
        ``(v_low, v_high)`` velocity maps: the range of each sightline that
        the cube's mask kept when mom2 was made (needs ``mom2``).
    names : sequence of str, optional
        One name per galaxy, used in errors and warnings (default: its
        index). Odd data get a `~astrokin.exceptions.DataQualityWarning`
        naming the galaxy (see `astrokin.fitting.data_quality`).

    Returns
    -------
    observations : list of `Observation`

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astrokin.fitting.preprocessing import parse_maps
    >>> obs = parse_maps(np.ones((3, 40, 40)), np.zeros((3, 40, 40)),
    ...                  pixel_scale=0.5 * u.arcsec, beam=1.5 * u.arcsec)
    >>> len(obs), obs[0].pixel_scale, obs[0].beam
    (3, 0.5, (1.5, 1.5, 0.0))
    """
    n, blocks = map_blocks(mom0, mom1, pixel_scale, beam, mask=mask, exclude=exclude,
                           reject_spurious=reject_spurious, cutout=cutout,
                           region_format=region_format, mom0_err=mom0_err, mom1_err=mom1_err,
                           mom2=mom2, mom2_err=mom2_err, mom2_window=mom2_window, names=names)
    return next(blocks)


def map_blocks(mom0, mom1, pixel_scale=None, beam=None, *, block_size=None, **options):
    """`parse_maps` a block of galaxies at a time, for fits of any number of them.

    The maps are split into single galaxies (views: nothing is copied) and
    every argument is checked at once; each block is then read, cleaned and
    cut out only when it is asked for, so that a fit of many galaxies holds
    the copies of one block at a time.

    Parameters
    ----------
    mom0, mom1, pixel_scale, beam, **options
        As for `parse_maps`.
    block_size : int, optional
        Galaxies per block (default: all in one).

    Returns
    -------
    n : int
        The number of galaxies.
    blocks : iterator of list of `Observation`
        Their observations, ``block_size`` at a time, in order.

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astrokin.fitting.preprocessing import map_blocks
    >>> n, blocks = map_blocks(np.ones((5, 40, 40)), np.zeros((5, 40, 40)),
    ...                        pixel_scale=0.5 * u.arcsec, block_size=2)
    >>> n, [len(b) for b in blocks]
    (5, [2, 2, 1])
    """
    from astrokin._validation import check_bool, check_integer

    if block_size is not None:
        check_integer("block_size", block_size, 1)
    for name in ("reject_spurious", "cutout"):
        if name in options:
            check_bool(name, options[name])
    return _map_blocks(mom0, mom1, pixel_scale, beam, block_size=block_size, **options)


def _map_blocks(mom0, mom1, pixel_scale=None, beam=None, *, mask=None, exclude=None,
                reject_spurious=True, cutout=True, region_format=None, mom0_err=None,
                mom1_err=None, mom2=None, mom2_err=None, mom2_window=None, names=None,
                block_size=None):
    """`map_blocks` with every option named."""
    maps0 = split_maps(mom0, "mom0")
    maps1 = split_maps(mom1, "mom1")
    if len(maps0) != len(maps1):
        raise ValueError(f"Got {len(maps0)} mom0 maps but {len(maps1)} mom1 maps.")
    n = len(maps0)
    if n == 0:
        raise ValueError(f"mom0 and mom1 hold no maps (got a stack of shape "
                         f"{np.shape(mom0)}): give at least one galaxy's maps.")
    errors = _noise_maps(mom0_err, mom1_err, n)
    seconds = _second_moments(mom2, mom2_err, n)
    windows = _windows(mom2_window, mom2, n)
    scales = _as_list(pixel_scale, n, "pixel_scale")
    beams = _as_list(beam, n, "beam")
    masks = _as_list(mask, n, "mask")
    excludes = _as_list(exclude, n, "exclude")
    if names is not None:
        if isinstance(names, str) or len(names) != n:
            raise ValueError(f"names must be a sequence of one name per galaxy ({n}); got "
                             f"{names!r}.")
        names = [str(v) for v in names]
    labels = names if names is not None else [f"galaxy {i}" for i in range(n)]
    # One beam, pixel scale or unit given for many galaxies is read once.
    given_beams, given_scales, kms_factors = {}, {}, {}

    def to_kms_factor(unit):
        """``(swapped, factor)``: mom0 in velocity units; mom1's unit to km/s (None: not one)."""
        if id(unit) not in kms_factors:
            plain = unit is None or unit == u.dimensionless_unscaled
            kms_factors[id(unit)] = (
                unit, not plain and unit.is_equivalent(_KMS),
                1.0 if plain else (float((1.0 * unit).to_value(_KMS))
                                   if unit.is_equivalent(_KMS) else None))
        return kms_factors[id(unit)][1:]
    step = n if block_size is None else int(block_size)

    def read_galaxy(i):
        (d0, unit0, wcs0, hdr0), (d1, unit1, wcs1, hdr1) = maps0[i], maps1[i]
        label = f" ({labels[i]})" if n > 1 or names is not None else ""
        if d0.shape != d1.shape:
            raise ValueError(
                f"mom0 and mom1 have different shapes{label}: {d0.shape} vs {d1.shape}."
            )
        if min(d0.shape) < 4:
            raise ValueError(f"Maps must be at least 4x4 pixels{label}; got {d0.shape}.")
        if to_kms_factor(unit0)[0]:
            raise u.UnitsError(
                f"mom0 is in velocity units ({unit0}){label}: mom0 and mom1 may be swapped. "
                "mom0 is the integrated intensity, mom1 the velocity."
            )
        to_kms = to_kms_factor(unit1)[1]
        if to_kms is None:
            raise u.UnitsError(f"mom1 must be in velocity units{label}; got {unit1}.")
        # Maps larger than MAX_MAP_SIDE are cut out and binned before any
        # full-size copy is made (astrokin.fitting.binning).
        large = max(d0.shape) > MAX_MAP_SIDE
        if not large:
            # Copies: the caller's arrays are never modified.
            d0 = np.array(d0, dtype=float)
            d1 = np.array(d1, dtype=float)
            if to_kms != 1.0:
                d1 *= to_kms
        wcs0 = resolve_wcs(wcs0)
        if isinstance(wcs1, LazyWCS) and wcs0 is not None and hdr0 is not None and \
                same_grid_cards(hdr0, hdr1):
            wcs1 = wcs0
        wcs1 = resolve_wcs(wcs1)
        wcs = wcs0 if wcs0 is not None else wcs1
        if wcs0 is not None and wcs1 is not None and not np.allclose(
                wcs0.pixel_scale_matrix, wcs1.pixel_scale_matrix, rtol=1e-6, atol=0):
            raise ValueError(
                f"mom0 and mom1 have different pixel grids in their WCS{label}: "
                "they must be maps of the same field on the same pixels."
            )
        if wcs0 is not None and wcs1 is not None and wcs1 is not wcs0:
            apart = _centre_separation(wcs0, wcs1, d0.shape)
            if apart is not None and apart[0] > 0.5 * apart[1]:
                raise ValueError(
                    f"The WCSs of mom0 and mom1{label} place the map's centre {apart[0]:.4g} "
                    f"arcsec apart ({apart[0] / apart[1]:.3g} pixels): they must be maps of the "
                    "same field on the same pixels.")
        flipped, theta, ps = False, 0.0, None
        if wcs is not None and getattr(wcs, "has_celestial", False):
            flipped, theta, ps = wcs_orientation(wcs)
        else:
            wcs = None
        if scales[i] is not None:
            if id(scales[i]) not in given_scales:
                given_scales[id(scales[i])] = (scales[i], pixel_scale_arcsec(scales[i]))
            ps = given_scales[id(scales[i])][1]
        if ps is None:
            raise ValueError(
                f"No pixel scale{label}: give pixel_scale= (e.g. 0.5 * u.arcsec) or maps with "
                "a celestial WCS."
            )
        if not (np.isfinite(ps) and ps > 0):
            raise ValueError(f"The pixel scale must be finite and positive{label}; got {ps} "
                             "arcsec.")
        b = beams[i]
        if b is None:
            for hdr in (hdr0, hdr1):
                if hdr is not None and ("BMAJ" in hdr or "HISTORY" in hdr):
                    from radio_beam import Beam
                    from radio_beam.beam import NoBeamException

                    try:
                        b = Beam.from_fits_header(hdr)
                    except NoBeamException:
                        continue
                    except (TypeError, ValueError) as err:
                        cards = ", ".join(f"{k}={hdr.get(k)!r}" for k in ("BMAJ", "BMIN", "BPA")
                                          if k in hdr)
                        raise ValueError(f"The header's beam ({cards}){label} cannot be read: "
                                         f"{err}. BMAJ and BMIN are FWHM in degrees.") from None
                    break
        if b is not None and b is beams[i]:
            # One beam given for many galaxies is read once.
            if id(b) not in given_beams:
                given_beams[id(b)] = (b, beam_parameters(b))
            bp = given_beams[id(b)][1]
        else:
            bp = beam_parameters(b)
        if bp is not None and bp[0] > max(d0.shape) * ps:
            raise ValueError(
                f"The beam{label} ({bp[0]:.4g} arcsec FWHM) is larger than the whole map "
                f"({max(d0.shape) * ps:.4g} arcsec): a FITS header gives BMAJ and BMIN in "
                "degrees (2 arcsec is 5.56e-4), and a beam= without a unit is in arcsec.")
        if bp is not None:
            # The beam's PA is on the sky (N through E); theta was measured on
            # the grid as fitted (mirrored if need be), so no sign change here.
            bp = (bp[0], bp[1], float(np.remainder(bp[2] + theta, 180.0)))
        rejected = {}
        shape = d0.shape
        keep = None
        for spec, keep_inside, reason in ((masks[i], True, "outside_mask"),
                                          (excludes[i], False, "excluded")):
            if spec is None:
                continue
            from astrokin.masks import pixel_mask

            inside = pixel_mask(spec, shape, wcs, region_format=region_format,
                                what="mask" if keep_inside else "exclude")
            if keep_inside and not inside.any():
                raise ValueError(f"mask= covers no pixel of the map{label} ({shape[1]}x"
                                 f"{shape[0]}): its region lies wholly outside it (check its "
                                 "centre, and that a sky region and the map's WCS agree).")
            drop = ~inside if keep_inside else inside
            rejected[reason] = np.flatnonzero(drop & (np.isfinite(d0) | np.isfinite(d1)))
            if large:
                keep = ~drop if keep is None else keep & ~drop
            else:
                d0[drop] = np.nan
                d1[drop] = np.nan
        reduction = None
        if large:
            d0, d1, reduction = reduce_map(d0, d1, keep, 1.0 if bp is None else bp[0] / ps,
                                           max_side=MAX_MAP_SIDE)
            d1 *= to_kms
            ps *= reduction.binning
        valid0 = np.isfinite(d0)
        if not valid0.any():
            raise ValueError(f"mom0 has no finite pixels{label} (all NaN or masked).")
        if not np.nanmax(np.where(valid0, d0, -np.inf)) > 0:
            raise ValueError(f"mom0 has no positive pixels{label} (all zero or negative).")
        if not (np.isfinite(d1) & valid0).any():
            raise ValueError(f"mom1 has no finite pixels where mom0 has data{label} "
                             "(all NaN or masked).")
        e0, e1 = _noise_in_units(errors[i], unit0, shape, label)
        m2, e2 = (_velocity_map(v, what, shape, label) for v, what in
                  zip(seconds[i], ("mom2", "mom2_err"), strict=True))
        lo, hi = (_velocity_map(w, what, shape, label, width=False) for w, what in
                  zip(windows[i], ("mom2_window[0]", "mom2_window[1]"), strict=True))
        if reduction is not None:
            beam_area = beam_area_pixels(bp, ps / reduction.binning)
            e0, e1, e2 = (reduced_noise(e, reduction, keep, beam_area) for e in (e0, e1, e2))
            m2, lo, hi = (reduced_map(m, reduction, keep) for m in (m2, lo, hi))
        if m2 is not None:
            m2[~(np.isfinite(d1) & np.isfinite(d0))] = np.nan
        read = Observation(d0, d1, ps, bp, wcs, flipped, theta, rejected=rejected,
                           mom0_err=e0, mom1_err=e1, mom2=m2, mom2_err=e2,
                           mom2_low=lo, mom2_high=hi, name=None if names is None else names[i],
                           reduction=reduction)
        return read

    def finish(out, labels):
        from astrokin.fitting import data_quality

        problems = [data_quality.unit_problems(r.mom1, np.isfinite(r.mom0)) for r in out]
        if reject_spurious:
            _reject_spurious(out)
        # The groups of valid pixels serve the data-quality tests, the test for
        # an emptied map and the cut-out.
        groups = [pixel_groups(np.isfinite(r.mom0) & np.isfinite(r.mom1)) for r in out]
        for p, r, g in zip(problems, out, groups, strict=True):
            p.update(data_quality.quality_problems(r.mom0, r.mom1,
                                                   beam_area_pixels(r.beam, r.pixel_scale),
                                                   groups=g))
        data_quality.warn_problems(problems, labels)
        for p, r, name, g in zip(problems, out, labels, groups, strict=True):
            if len(g[1]) == 1:  # no group: no valid pixel
                counts = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in r.rejected.items())
                hint = (" Its values look like m/s: give mom1 with its unit (mom1 * u.m / u.s) or "
                        "a FITS BUNIT of 'm/s'." if "m/s" in p else
                        " Check its units, or pass reject_spurious=False.")
                raise ValueError(f"mom1 ({name}) has no valid pixels left after the spurious-pixel "
                                 f"rejection ({counts}).{hint}")
        return [_cut_and_mirror(read, cutout=cutout, groups=g)
                for read, g in zip(out, groups, strict=True)]

    def blocks():
        for first in range(0, n, step):
            members = range(first, min(first + step, n))
            yield finish([read_galaxy(i) for i in members], [labels[i] for i in members])

    return n, blocks()


#: Most map pixels cleaned in one stack by `_reject_spurious`.
CLEANING_BLOCK = 4_194_304


def _reject_spurious(reads):
    """Spurious-pixel rejection of every galaxy as read, maps of one shape stacked.

    `astrokin.fitting.cleaning.find_spurious` processes a stack of maps in
    one pass (the same flags as one map at a time, several times faster than
    a loop over galaxies); stacks hold at most `CLEANING_BLOCK` pixels, and
    are shared among `torch.get_num_threads` threads
    (`~astrokin.fitting.threads.thread_map`: numpy's sorts and gathers
    release the GIL), four or more stacks per thread so that maps of
    different sizes keep every thread busy. The arrays and ``rejected`` of ``reads``
    (parse_maps' own copies) are updated in place.
    """
    from astrokin.fitting.threads import cpu_workers, thread_map

    workers = cpu_workers("cpu", len(reads))
    by_shape = {}
    for i, read in enumerate(reads):
        by_shape.setdefault(read.mom1.shape, []).append(i)
    # Stacks of about a quarter of a thread's share of the pixels, so that the
    # threads finish together when the shapes differ in size.
    share = -(-sum(r.mom1.size for r in reads) // (4 * workers)) if workers > 1 else CLEANING_BLOCK
    groups = []
    for shape, members in by_shape.items():
        step = max(1, min(CLEANING_BLOCK, share) // (shape[0] * shape[1]))
        groups += [[reads[i] for i in members[start:start + step]]
                   for start in range(0, len(members), step)]
    thread_map(_reject_in_stack, groups, workers)


def _reject_in_stack(group):
    """`_reject_spurious` of galaxies whose maps have one shape."""
    from astrokin.fitting.cleaning import find_spurious

    d1 = np.stack([r.mom1 for r in group])
    valid = np.isfinite(d1) & np.stack([np.isfinite(r.mom0) for r in group])
    areas = [beam_area_pixels(r.beam, r.pixel_scale) for r in group]
    flags = find_spurious(d1, valid, beam_area=areas)
    for k, read in enumerate(group):
        for reason, bad in flags.items():
            if bad[k].any():
                read.rejected[reason] = read.reduction.input_indices(np.flatnonzero(bad[k]),
                                                                     bad[k].shape)
                read.mom1[bad[k]] = np.nan


def _cut_and_mirror(read, *, cutout, groups=None):
    """Cut-out and mirroring of one galaxy as read (after `_reject_spurious`).

    ``read`` holds the whole map as given (not yet mirrored, even when
    ``flipped``); ``groups``, the `pixel_groups` of its valid pixels when
    known. Returns the `Observation` that is fitted.
    """
    d0, d1 = read.mom0, read.mom1
    if read.mom2 is not None:
        read.mom2[~np.isfinite(d1)] = np.nan
    offset = (0, 0)
    errors = [read.mom0_err, read.mom1_err, read.mom2, read.mom2_err, read.mom2_low,
              read.mom2_high]
    if cutout:
        full = d0.shape
        d0, d1, offset = _cut_out(d0, d1, read.beam, read.pixel_scale, groups=groups)
        window = (slice(offset[0], offset[0] + d0.shape[0]),
                  slice(offset[1], offset[1] + d0.shape[1]))
        errors = [None if e is None or e.shape != full else e[window] for e in errors]
    if read.flipped:
        d0, d1 = d0[:, ::-1], d1[:, ::-1]
        errors = [None if e is None else e[:, ::-1] for e in errors]
    e0, e1, m2, e2, lo, hi = (None if e is None else np.ascontiguousarray(e) for e in errors)
    return replace(read, mom0=np.ascontiguousarray(d0), mom1=np.ascontiguousarray(d1),
                   offset=offset, mom0_err=e0, mom1_err=e1, mom2=m2, mom2_err=e2,
                   mom2_low=lo, mom2_high=hi)


def _centre_separation(wcs0, wcs1, shape):
    """``(arcsec between the two WCSs' positions of the map centre, arcsec per pixel)``.

    None when either WCS is not celestial or cannot place the centre.
    """
    if not (getattr(wcs0, "has_celestial", False) and getattr(wcs1, "has_celestial", False)):
        return None
    from astropy.wcs.utils import proj_plane_pixel_scales

    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    try:
        with np.errstate(all="ignore"):
            a = wcs0.celestial.pixel_to_world(cx, cy)
            b = wcs1.celestial.pixel_to_world(cx, cy)
            sep = float(a.separation(b).to_value(u.arcsec))
            scale = float(np.mean(proj_plane_pixel_scales(wcs0.celestial))) * 3600.0
    except (ValueError, TypeError, AttributeError, u.UnitsError):
        return None
    if not (np.isfinite(sep) and np.isfinite(scale) and scale > 0):
        return None
    return sep, scale


def _noise_maps(mom0_err, mom1_err, n):
    """Per galaxy ``((data, unit) or None, (data, unit) or None)`` of the noise maps."""
    if (mom0_err is None) != (mom1_err is None):
        raise ValueError("Give both mom0_err and mom1_err (noise maps of both maps), or "
                         "neither.")
    if mom0_err is None:
        return [(None, None)] * n
    out = []
    for what, value in (("mom0_err", mom0_err), ("mom1_err", mom1_err)):
        maps = split_maps(value, what)
        if len(maps) != n:
            raise ValueError(f"Got {len(maps)} {what} maps for {n} galaxies.")
        out.append(maps)
    return [((a[0], a[1]), (b[0], b[1])) for a, b in zip(out[0], out[1], strict=True)]


def _second_moments(mom2, mom2_err, n):
    """Per galaxy ``((data, unit) or None, (data, unit) or None)`` of mom2 and its noise."""
    if mom2 is None and mom2_err is not None:
        raise ValueError("mom2_err= is the noise of a mom2 map: give mom2= too.")
    out = []
    for what, value in (("mom2", mom2), ("mom2_err", mom2_err)):
        if value is None:
            out.append([None] * n)
            continue
        maps = split_maps(value, what)
        if len(maps) != n:
            raise ValueError(f"Got {len(maps)} {what} maps for {n} galaxies.")
        out.append([(m[0], m[1]) for m in maps])
    return list(zip(out[0], out[1], strict=True))


def _windows(window, mom2, n):
    """Per galaxy ``((data, unit), (data, unit))`` of a mom2 window, or ``(None, None)``."""
    if window is None:
        return [(None, None)] * n
    if mom2 is None:
        raise ValueError("mom2_window= is the velocity range of a mom2 map: give mom2= too.")
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise TypeError("mom2_window must be a pair (v_low, v_high) of velocity maps; got "
                        f"{type(window).__name__}.")
    out = []
    for k, value in enumerate(window):
        maps = split_maps(value, f"mom2_window[{k}]")
        if len(maps) != n:
            raise ValueError(f"Got {len(maps)} mom2_window[{k}] maps for {n} galaxies.")
        out.append([(m[0], m[1]) for m in maps])
    return list(zip(out[0], out[1], strict=True))


def _velocity_map(value, what, shape, label, width=True):
    """A velocity map ``(data, unit)`` as a float array in km/s (None stays None).

    ``width``: a width (mom2, its noise), which is never negative.
    """
    if value is None:
        return None
    data, unit = value
    if data.shape != shape:
        raise ValueError(f"{what} has shape {data.shape}, the maps {shape}{label}.")
    data = np.array(data, dtype=float)
    if unit is not None and unit != u.dimensionless_unscaled:
        if not unit.is_equivalent(_KMS):
            raise u.UnitsError(f"{what} must be in velocity units{label}; got {unit}.")
        data = (data * unit).to_value(_KMS)
    if width and np.any(data[np.isfinite(data)] < 0):
        raise ValueError(f"{what} has negative values{label}: it is a velocity dispersion "
                         "(a width), never below 0.")
    return data


def _noise_in_units(errors, unit0, shape, label):
    """The noise maps of one galaxy as float arrays in mom0's units and km/s."""
    (e0, eu0), (e1, eu1) = [(None, None) if e is None else e for e in errors]
    if e0 is None:
        return None, None
    for what, data in (("mom0_err", e0), ("mom1_err", e1)):
        if data.shape != shape:
            raise ValueError(f"{what} has shape {data.shape}, the maps {shape}{label}.")
    e0 = np.array(e0, dtype=float)
    e1 = np.array(e1, dtype=float)
    if eu0 is not None and eu0 != u.dimensionless_unscaled and unit0 is not None:
        if not eu0.is_equivalent(unit0):
            raise u.UnitsError(f"mom0_err is in {eu0}, not in mom0's unit {unit0}{label}.")
        e0 = (e0 * eu0).to_value(unit0)
    if eu1 is not None and eu1 != u.dimensionless_unscaled:
        if not eu1.is_equivalent(_KMS):
            raise u.UnitsError(f"mom1_err must be in velocity units{label}; got {eu1}.")
        e1 = (e1 * eu1).to_value(_KMS)
    return e0, e1


def _cut_out(d0, d1, beam, pixel_scale, margin=0.15, min_side=16, groups=None):
    """Square cut-out around the valid velocity pixels, with a margin.

    The box is the bounding box of the main groups of pixels where both maps
    are valid (connected groups of at least 10% of the largest one), grown by
    ``margin`` of its size plus one beam on every side, made square (the
    network sees square maps) and at least ``min_side`` pixels; it is only
    used when it is at least 10% smaller than the map. ``groups``: the
    `~astrokin.fitting.binning.pixel_groups` of the valid pixels, when known.
    """
    valid = None if groups is not None else np.isfinite(d1) & np.isfinite(d0)
    r0, r1, c0, c1 = main_groups_box(valid, shape=d0.shape, groups=groups)
    ny, nx = d0.shape
    pad = 1.0 if beam is None else beam[0] / pixel_scale
    side = int(np.ceil(max(r1 - r0, c1 - c0) * (1 + 2 * margin) + 2 * pad))
    side = max(side, min_side)
    if side >= 0.9 * max(ny, nx):
        return d0, d1, (0, 0)
    cy = 0.5 * (r0 + r1 - 1)
    cx = 0.5 * (c0 + c1 - 1)
    y0 = int(np.clip(round(cy - (side - 1) / 2), 0, max(ny - side, 0)))
    x0 = int(np.clip(round(cx - (side - 1) / 2), 0, max(nx - side, 0)))
    sl = (slice(y0, min(y0 + side, ny)), slice(x0, min(x0 + side, nx)))
    return d0[sl].copy(), d1[sl].copy(), (y0, x0)


def _pad_square(a, fill):
    """Pad the last two axes of ``a`` to a square, centred; ``fill`` per leading index."""
    ny, nx = a.shape[-2:]
    s = max(ny, nx)
    py, px = (s - ny) // 2, (s - nx) // 2
    out = np.empty(a.shape[:-2] + (s, s), dtype=float)
    out[...] = np.asarray(fill, dtype=float)[..., None, None]
    out[..., py:py + ny, px:px + nx] = a
    return out, py, px


def _resample(values, mask, size):
    """Normalised bilinear resampling of masked square maps ``(K, n, n)`` to ``size`` x ``size``.

    Returns the ``(K, size, size)`` resampled values (0 where masked) and
    their masks (at least half the weight from valid pixels).
    """
    import torch
    import torch.nn.functional as F

    if values.shape[-1] == size:
        return np.where(mask, values, 0.0), mask.copy()
    v = torch.as_tensor(np.concatenate([np.where(mask, values, 0.0), mask]),
                        dtype=torch.float64)[None]
    kw = {"size": (size, size), "mode": "bilinear", "align_corners": False,
          "antialias": v.shape[-1] > size}
    both = F.interpolate(v, **kw)[0].numpy()
    vs, ws = both[:len(values)], both[len(values):]
    ok = ws >= 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok, vs / np.where(ok, ws, 1.0), 0.0)
    return out, ok


#: Most map pixels normalised in one stack by `prepare_batch` (a stack stays in the cache).
NORMALISING_BLOCK = 65_536


def prepare_batch(observations, size=IMAGE_SIZE):
    """Network inputs, masks and per-galaxy context for a list of observations.

    Parameters
    ----------
    observations : list of `Observation`
    size : int, optional
        Side of the network's maps (64).

    Returns
    -------
    batch : `~astrokin.fitting.batch.PreparedBatch`
        ``mom0``/``mom1`` ``(N, size, size)`` normalised maps (0 where masked),
        ``mask0``/``mask1`` their boolean validity, ``pixel_scale`` (arcsec per
        pixel of the ``size`` grid), ``half_width`` (arcsec), ``v_ref`` and
        ``v_half`` (km/s), ``peak`` (mom0 peak in input units), ``beam``
        ``(N, 3)`` (rows of NaN where there is none), and the padding
        bookkeeping ``side``, ``pad_y``, ``pad_x``; also readable by name
        (``batch["mom0"]``).

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astrokin.fitting.preprocessing import parse_maps, prepare_batch
    >>> y, x = np.mgrid[:100, :128]
    >>> mom0 = np.exp(-np.hypot(x - 63.5, y - 49.5) / 10)
    >>> mom1 = 1000 + (x - 63.5) * 2.0
    >>> b = prepare_batch(parse_maps(mom0, mom1, pixel_scale=0.5 * u.arcsec))
    >>> b["mom0"].shape, float(b["pixel_scale"][0]), float(b["v_ref"][0])
    ((1, 64, 64), 1.0, 1000.0)
    """
    n = len(observations)
    by_shape = {}
    for i, obs in enumerate(observations):
        by_shape.setdefault(np.shape(obs.mom0), []).append(i)
    out = {"mom0": np.zeros((n, size, size)), "mom1": np.zeros((n, size, size)),
           "mask0": np.zeros((n, size, size), dtype=bool),
           "mask1": np.zeros((n, size, size), dtype=bool)}
    for k in ("pixel_scale", "half_width", "v_ref", "v_half", "peak"):
        out[k] = np.zeros(n)
    for k in ("side", "pad_y", "pad_x"):
        out[k] = np.zeros(n, dtype=int)
    out["beam"] = np.array([obs.beam if obs.beam is not None else (np.nan,) * 3
                            for obs in observations], dtype=float).reshape(n, 3)
    for same_shape in by_shape.values():
        # Galaxies whose maps have one shape are normalised in stacks (the same
        # numbers as one at a time: every step is per galaxy) of at most
        # NORMALISING_BLOCK pixels, which stay in the processor's cache.
        step = max(1, NORMALISING_BLOCK // int(np.prod(np.shape(observations[same_shape[0]].mom0))))
        for start in range(0, len(same_shape), step):
            members = same_shape[start:start + step]
            for k, value in _normalised_stack([observations[i] for i in members], size).items():
                out[k][members] = value
    return PreparedBatch(**out)


def _normalised_stack(group, size):
    """`prepare_batch`'s arrays for observations whose maps share one shape."""
    d0 = np.stack([obs.mom0 for obs in group]).astype(float, copy=False)
    d1 = np.stack([obs.mom1 for obs in group]).astype(float, copy=False)
    valid0 = np.isfinite(d0)
    z0 = np.where(valid0, d0, 0.0)
    # A velocity where there is (almost) no emission means nothing: mom1 is
    # used only where mom0 exceeds MIN_RELATIVE_INTENSITY of its peak, as in
    # any clipped moment map (a noiseless model map has velocities out to its
    # corners, at 1e-9 of the peak).
    peak0 = np.where(valid0, d0, -np.inf).max(axis=(1, 2))
    valid1 = np.isfinite(d1) & valid0 & (z0 > MIN_RELATIVE_INTENSITY * peak0[:, None, None])
    empty = ~valid1.any(axis=(1, 2))
    if empty.any():
        raise ValueError(
            f"mom1{_named(group[int(np.argmax(empty))])} has no valid pixels where mom0 is "
            f"above {MIN_RELATIVE_INTENSITY:g} of its peak (all NaN, or no emission)."
        )
    v_ref = map_medians(d1, valid1)
    # 99th percentile rather than the maximum: one spurious pixel must not set
    # the velocity scale of the whole map.
    v_half = _upper_percentiles(np.abs(d1 - v_ref[:, None, None]), valid1, 99.0)
    v_half = np.where(v_half > 0, v_half, 1.0)
    planes = np.stack([z0, valid0, np.where(valid1, d1, v_ref[:, None, None]), valid1], axis=1)
    fill = np.zeros((len(group), 4))
    fill[:, 2] = v_ref
    padded, py, px = _pad_square(planes, fill)
    side = padded.shape[-1]
    values = padded[:, 0::2].reshape(-1, side, side)
    masks = padded[:, 1::2].reshape(-1, side, side).astype(bool)
    resampled, ok = (a.reshape(len(group), 2, size, size) for a in _resample(values, masks, size))
    (r0, r1), (ok0, ok1) = resampled.transpose(1, 0, 2, 3), ok.transpose(1, 0, 2, 3)
    peak = np.where(ok0, r0, -np.inf).max(axis=(1, 2))
    if not (peak > 0).all():
        raise ValueError(f"mom0{_named(group[int(np.argmin(peak > 0))])} has no positive "
                         "pixels after resampling.")
    scale = np.array([obs.pixel_scale for obs in group], dtype=float)
    return {"mom0": np.where(ok0, r0 / peak[:, None, None], 0.0),
            "mom1": np.where(ok1, (r1 - v_ref[:, None, None]) / v_half[:, None, None], 0.0),
            "mask0": ok0, "mask1": ok1 & ok0, "pixel_scale": scale * side / size,
            "half_width": 0.5 * scale * side, "v_ref": v_ref, "v_half": v_half, "peak": peak,
            "side": side, "pad_y": py, "pad_x": px}


def _named(obs):
    return "" if obs.name is None else f" ({obs.name})"


def _upper_percentiles(values, valid, q):
    """``np.percentile(v, q)`` (linear) of each map's valid values ``v``, for a stack of maps.

    Only the top ``(1 - q / 100)`` of each map's values are needed: they are
    found by `torch.topk` rather than a partial sort of the whole map, and
    interpolated exactly as `numpy.percentile` does.
    """
    import torch

    n_maps = len(values)
    v = values.reshape(n_maps, -1)
    ok = valid.reshape(n_maps, -1)
    count = ok.sum(axis=1)
    virtual = (count - 1) * (q / 100)
    below = np.floor(virtual)
    above = below + 1
    top_end = virtual >= count - 1
    below[top_end] = count[top_end] - 1
    above[top_end] = count[top_end] - 1
    below, above = below.astype(int), above.astype(int)
    gamma = virtual - np.floor(virtual)
    depth = int((count - below).max())  # of the largest values, every map's two are in there
    top = torch.topk(torch.as_tensor(np.where(ok, v, -np.inf)), depth, dim=1).values.numpy()
    rows = np.arange(n_maps)
    a, b = top[rows, count - 1 - below], top[rows, count - 1 - above]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def grid_to_input_pixels(x_grid, y_grid, obs, side, pad_y, pad_x, size=IMAGE_SIZE):
    """0-based input-map pixel coordinates of points on the ``size`` grid.

    Undoes the resampling (``align_corners=False``: pixel ``i`` of the grid
    covers input pixels ``[i, i + 1) * side / size - 0.5``), the padding, any
    column mirroring, and the cut-out.

    Parameters
    ----------
    x_grid, y_grid : array-like
        0-based coordinates on the ``size`` x ``size`` grid.
    obs : `Observation`
    side, pad_y, pad_x : int
        Padding bookkeeping from `prepare_batch`.

    Returns
    -------
    x, y : `numpy.ndarray`

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.fitting.preprocessing import Observation, grid_to_input_pixels
    >>> obs = Observation(np.zeros((128, 128)), np.zeros((128, 128)), 1.0, None)
    >>> x, y = grid_to_input_pixels(31.5, 31.5, obs, 128, 0, 0)
    >>> float(x), float(y)
    (63.5, 63.5)
    """
    return FittingFrame.of(obs, side, pad_y, pad_x, size).grid_to_input_pixels(x_grid, y_grid)


def prepare_maps(mom0, mom1, **options):
    """Read, clean and prepare maps in one step: `parse_maps`, `prepare_batch` and the frames.

    Parameters
    ----------
    mom0, mom1
        As for `parse_maps`.
    **options
        Options of `parse_maps` (``pixel_scale``, ``beam``, ``mask``, ...).

    Returns
    -------
    observations : list of `Observation`
    batch : `~astrokin.fitting.batch.PreparedBatch`
    frames : list of `~astrokin.fitting.frames.FittingFrame`
        Each galaxy's fitting frame.

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astrokin.fitting.preprocessing import prepare_maps
    >>> y, x = np.mgrid[:40, :60]
    >>> obs, batch, frames = prepare_maps(np.exp(-np.hypot(x - 30, y - 20) / 8),
    ...                                   5.0 * (x - 30), pixel_scale=1 * u.arcsec)
    >>> frames[0].side, frames[0].pad_y
    (60, 10)
    """
    observations = parse_maps(mom0, mom1, **options)
    batch = prepare_batch(observations)
    return observations, batch, fitting_frames(observations, batch)


def prepare_training_data(training_data):
    """`prepare_maps` of a fitter's ``training_data=``: ``(mom0, mom1)`` or a dict.

    Parameters
    ----------
    training_data : tuple or dict
        ``(mom0, mom1)``, or a dict with keys ``mom0``, ``mom1`` and
        optionally ``pixel_scale``, ``beam``.

    Returns
    -------
    observations, batch, frames
        As `prepare_maps`.

    Raises
    ------
    TypeError
        If ``training_data`` is neither.
    ValueError
        If the dict lacks ``mom0`` or ``mom1``.
    """
    if isinstance(training_data, dict):
        if not {"mom0", "mom1"} <= set(training_data):
            raise ValueError("training_data as a dict needs keys 'mom0' and 'mom1'.")
        args = {k: training_data.get(k) for k in ("mom0", "mom1", "pixel_scale", "beam")}
    elif isinstance(training_data, (tuple, list)) and len(training_data) == 2:
        args = {"mom0": training_data[0], "mom1": training_data[1]}
    else:
        raise TypeError("training_data must be (mom0, mom1) or a dict with mom0, mom1, "
                        "pixel_scale, beam.")
    return prepare_maps(**args)


def with_training_data(model, batch, framed, training_data):
    """A batch and its fixed values, followed by those of a fitter's ``training_data=``.

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        The model fitted (its fixed values, in each galaxy's frame).
    batch : `~astrokin.fitting.batch.PreparedBatch`
    framed : dict
        ``batch``'s fixed values (`~astrokin.fitting.frames.framed_fixed`).
    training_data : tuple or dict
        As `prepare_training_data`.

    Returns
    -------
    batch : `~astrokin.fitting.batch.PreparedBatch`
    framed : dict
    """
    from astrokin.fitting.frames import framed_fixed
    from astrokin.fitting.parameters import fixed_values

    _, extra, extra_frames = prepare_training_data(training_data)
    extra_framed = framed_fixed(fixed_values(model), model, extra_frames)
    both = {k: (np.concatenate([v, extra_framed[k]]) if isinstance(v, np.ndarray) else v)
            for k, v in framed.items()}
    return PreparedBatch.concatenate([batch, extra]), both
