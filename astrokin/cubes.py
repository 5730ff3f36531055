"""Moment maps from spectral-line cubes, with a source-finder style mask.

`moment_maps` turns a position-position-velocity cube (a FITS file or HDU,
or a `specutils.Spectrum` with a 3D WCS) into the integrated-intensity
(moment 0) and intensity-weighted velocity (moment 1) maps that
`~astrokin.fitting.NeuralKinematicFitter` fits, as FITS HDUs that carry the
celestial WCS and the restoring beam, so they can be passed straight on.

The mask follows the smooth-and-clip method of source finders (e.g. Dame
2011, arXiv:1101.1499): the noise is estimated robustly from the cube
(`astropy.stats.mad_std`, emission being sparse); the cube is smoothed
spatially by a Gaussian of ``smooth`` beams and spectrally over
``spectral_smooth`` channels; voxels where the smoothed cube exceeds
``clip`` times its own noise form the mask, which is applied to the
unsmoothed cube. The moments themselves are computed by
`specutils.analysis.moment` over the masked cube, with the spectral axis
converted to km/s (radio or optical convention, the rest frequency from the
header or given).
"""

import os
import warnings

import numpy as np
from astropy import units as u

from astrokin._maps import check_data_size

__all__ = ["MIN_CHANNELS_MOM2", "cube_moments", "moment_maps"]

_KMS = u.km / u.s


def _load(cube, beam):
    """``(data (nchan, ny, nx), celestial WCS, spectral axis, unit, header, beam)`` of a cube."""
    from astropy.io import fits
    from astropy.wcs import WCS

    header = None
    if isinstance(cube, (str, os.PathLike)):
        path = os.fspath(cube)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No such cube file {path!r}.")
        data = None
        try:
            with fits.open(path, memmap=False) as hdul:
                hdu = None
                for h in hdul:
                    if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU)):
                        check_data_size(h, path, "cube")
                    if getattr(h, "data", None) is not None and h.data.ndim >= 3:
                        hdu = h
                        break
                if hdu is not None:
                    data, header = np.array(hdu.data, dtype=float), hdu.header.copy()
        except (OSError, ValueError, TypeError, IndexError, KeyError) as err:
            raise ValueError(f"{path!r} is not a readable FITS file ({err}).") from err
        if data is None:
            raise ValueError(f"{path!r} has no HDU with a 3D cube.")
    elif isinstance(cube, fits.HDUList):
        hdu = next((h for h in cube if getattr(h, "data", None) is not None
                    and h.data.ndim >= 3), None)
        if hdu is None:
            raise ValueError("The HDUList has no HDU with a 3D cube.")
        data, header = np.array(hdu.data, dtype=float), hdu.header
    elif isinstance(cube, (fits.PrimaryHDU, fits.ImageHDU)):
        if cube.data is None:
            raise ValueError("The cube HDU has no data.")
        data, header = np.array(cube.data, dtype=float), cube.header
    else:
        return _load_spectrum(cube, beam)
    if beam is None:
        from radio_beam import Beam
        from radio_beam.beam import NoBeamException

        try:
            beam = Beam.from_fits_header(header)
        except NoBeamException:
            beam = None
    from astropy.wcs import FITSFixedWarning, InvalidTransformError, SingularMatrixError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header)
            wcs.wcs.set()
        except (SingularMatrixError, InvalidTransformError, ValueError) as err:
            cards = ", ".join(f"{k}={header.get(k)!r}" for k in
                              ("CDELT1", "CDELT2", "CDELT3", "CD3_3", "PC3_3") if k in header)
            reason = str(err).strip().splitlines()[-1].rstrip(".")
            raise ValueError(f"The cube's WCS cannot be used ({cards}): {reason}. A zero "
                             "CDELT (channel width or pixel size) is the usual cause.") from None
    # Drop degenerate (length-1) axes such as Stokes, keeping 2 celestial + spectral.
    shape_fits = data.shape[::-1]
    for k in reversed(range(wcs.naxis)):
        if wcs.naxis > 3 and (k >= len(shape_fits) or shape_fits[k] == 1):
            wcs = wcs.dropaxis(k)
    data = data.reshape([n for n in data.shape if n != 1])
    if data.ndim != 3 or wcs.naxis != 3 or not wcs.has_celestial or not wcs.has_spectral:
        raise ValueError(
            f"Expected a cube with two celestial axes and one spectral axis; got data of shape "
            f"{data.shape} with axes {list(wcs.wcs.ctype)}."
        )
    if wcs.wcs.spec != 2:
        raise ValueError("Expected the spectral axis to be the third FITS axis (CTYPE3); got "
                         f"axes {list(wcs.wcs.ctype)}.")
    unit = u.one
    if "BUNIT" in header:
        parsed = u.Unit(header["BUNIT"], format="fits", parse_strict="silent")
        if isinstance(parsed, u.UnrecognizedUnit):
            parsed = u.Unit(str(header["BUNIT"]).lower().replace("jy/beam", "Jy / beam"),
                            parse_strict="silent")
        unit = u.one if isinstance(parsed, u.UnrecognizedUnit) else parsed
    spectral = wcs.spectral.pixel_to_world(np.arange(data.shape[0]))
    return data, wcs.celestial, spectral, unit, header, beam


def _load_spectrum(cube, beam):
    from specutils import Spectrum

    if not isinstance(cube, Spectrum):
        raise TypeError(
            "cube must be a FITS file name, an HDU or HDUList, or a specutils Spectrum; got "
            f"{type(cube).__name__}."
        )
    celestial = getattr(cube.wcs, "celestial", None)
    if cube.flux.ndim != 3 or celestial is None or celestial.naxis != 2:
        raise ValueError(
            "The Spectrum must be a cube: 3D flux with a FITS WCS that has two celestial "
            f"axes; got flux of shape {cube.flux.shape}."
        )
    index = getattr(cube, "spectral_axis_index", cube.flux.ndim - 1)
    data = np.moveaxis(np.array(cube.flux.value, dtype=float), index, 0)
    header = cube.meta.get("header") if hasattr(cube.meta, "get") else None
    if beam is None and header is not None and "BMAJ" in header:
        from radio_beam import Beam

        beam = Beam.from_fits_header(header)
    return data, celestial, cube.spectral_axis, cube.flux.unit, header, beam


def _velocities(spectral, header, velocity_convention, rest_value):
    """Channel velocities in km/s."""
    from astropy.coordinates import SpectralCoord

    if velocity_convention not in ("radio", "optical", "relativistic"):
        raise ValueError("velocity_convention must be 'radio', 'optical' or 'relativistic'; "
                         f"got {velocity_convention!r}.")
    q = u.Quantity(spectral)
    if q.unit.is_equivalent(_KMS):
        return q.to_value(_KMS)
    if rest_value is None:
        for key in ("RESTFRQ", "RESTFREQ"):
            if header is not None and key in header and float(header[key]) > 0:
                rest_value = float(header[key]) * u.Hz
                break
    if rest_value is None:
        raise ValueError(
            f"The cube's spectral axis is in {q.unit}; converting it to velocity needs a rest "
            "frequency: give rest_value= (e.g. 230.538 * u.GHz) or a RESTFRQ header keyword."
        )
    sc = SpectralCoord(q, doppler_rest=u.Quantity(rest_value),
                       doppler_convention=velocity_convention)
    return sc.to_value(_KMS, doppler_convention=velocity_convention)


def moment_maps(cube, *, beam=None, velocity_convention="radio", rest_value=None, mask="auto",
                clip=4.0, smooth=1.5, spectral_smooth=3, rms=None, errors=False, moment2=False,
                window=False):
    r"""Moment-0 and moment-1 maps of a spectral cube (and moment 2).

    Parameters
    ----------
    cube : str, path-like, HDU, HDUList, or `specutils.Spectrum`
        The cube: a FITS file (the first HDU with 3D data; length-1 axes
        such as Stokes are dropped) or a Spectrum with a 3D WCS (two
        celestial axes and a spectral one).
    beam : `radio_beam.Beam` or Quantity, optional
        Restoring beam; default from the header (``BMAJ``/``BMIN``/``BPA``
        or CASA/AIPS ``HISTORY``).
    velocity_convention : {'radio', 'optical', 'relativistic'}, optional
        Used when the spectral axis is a frequency or wavelength. A
        velocity axis is used as it is.
    rest_value : `~astropy.units.Quantity`, optional
        Rest frequency (or wavelength) of the line; default from the
        header (``RESTFRQ``/``RESTFREQ``).
    mask : 'auto', bool array, or None, optional
        ``'auto'``: smooth-and-clip (see the module docstring); a boolean
        array of the cube's shape ``(nchan, ny, nx)``: voxels to use; None:
        no mask (every voxel; moment 1 is then dominated by noise).
    clip : float, optional
        Clipping level of the smoothed cube, in units of its noise.
    smooth : float, optional
        Spatial smoothing FWHM in beams (in pixels when there is no beam).
    spectral_smooth : int, optional
        Spectral smoothing width in channels (a boxcar; 1 for none).
    rms : `~astropy.units.Quantity` or float, optional
        Noise per voxel of the unsmoothed cube; default measured
        (`astropy.stats.mad_std` over the cube).
    errors : bool, optional
        Also return the noise maps of the moments, propagated from ``rms``
        through the channels in the mask of each sightline: for mom0
        :math:`\sigma \Delta v \sqrt{N}`, for mom1
        :math:`\sigma \Delta v \sqrt{\sum_i (v_i - \bar v)^2} / M_0` (the
        fitter's ``mom0_err``/``mom1_err``; refinement weighs each pixel by
        them); with ``moment2``, for mom2
        :math:`\sigma \Delta v \sqrt{\sum_i [(v_i - \bar v)^2 - s^2]^2} / (2 s M_0)`.
    moment2 : bool, optional
        Also return the second moment: the intensity-weighted velocity
        dispersion :math:`s` about mom1 (`specutils.analysis.moment` of
        order 2, its square root), over the same mask, on sightlines with at
        least `MIN_CHANNELS_MOM2` channels in it.
    window : bool, optional
        With ``moment2``, also return the velocity range each sightline's
        mask keeps (its first and last channels' edges): what the second
        moment of a line is cut to, which the fitter models
        (``mom2_window=`` of `~astrokin.fitting.NeuralKinematicFitter`).

    Returns
    -------
    mom0, mom1 : `~astropy.io.fits.PrimaryHDU`
        Integrated intensity (flux unit times km/s) and intensity-weighted
        velocity (km/s, NaN where no voxel is in the mask), each with the
        cube's celestial WCS and beam in its header, and the noise, clip
        level and number of masked voxels recorded (``ASK_RMS``,
        ``ASK_CLIP``, ``ASK_NVOX``).
    mom2 : `~astropy.io.fits.PrimaryHDU`
        With ``moment2=True`` (after mom1): the velocity dispersion in km/s,
        NaN where mom1 is. A mask leaves out the faint wings of each line,
        so it is biased low where the line's peak is a few times the noise
        (measured in ``benchmarks/dispersion.py``).
    mom0_err, mom1_err : `~astropy.io.fits.PrimaryHDU`
        With ``errors=True``: their 1-sigma noise maps, in the same units
        (NaN where mom1 is); and ``mom2_err`` after them with ``moment2``.
    v_low, v_high : `~astropy.io.fits.PrimaryHDU`
        Last, with ``moment2`` and ``window``: the mask's velocity range on
        each sightline (km/s, NaN where mom2 is).

    Raises
    ------
    ValueError
        If the cube is not 3D with celestial and spectral axes, the
        spectral axis cannot be turned into velocity, or no voxel passes
        the mask.

    Examples
    --------
    A simulated disc in a cube, with noise:

    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astropy.io import fits
    >>> from astrokin.cubes import moment_maps
    >>> rng = np.random.default_rng(1)
    >>> v = np.arange(1400.0, 1601.0, 10.0)
    >>> y, x = np.mgrid[:48, :48] - 23.5
    >>> vlos = 1500 + 80 * np.tanh(x / 5)
    >>> cube = np.exp(-np.hypot(x, y) / 8) * np.exp(-0.5 * ((v[:, None, None] - vlos) / 15) ** 2)
    >>> hdu = fits.PrimaryHDU(cube + rng.normal(0, 0.02, cube.shape))
    >>> for k, (t, val, d, n) in enumerate([("RA---SIN", 180.0, -1 / 3600, 24.5),
    ...                                     ("DEC--SIN", 10.0, 1 / 3600, 24.5),
    ...                                     ("VRAD", 1400.0, 10.0, 1.0)], start=1):
    ...     hdu.header.update({f"CTYPE{k}": t, f"CRVAL{k}": val, f"CDELT{k}": d,
    ...                        f"CRPIX{k}": n})
    >>> hdu.header.update(CUNIT3="km/s", BUNIT="Jy/beam", BMAJ=3 / 3600, BMIN=3 / 3600, BPA=0)
    >>> mom0, mom1 = moment_maps(hdu)
    >>> mom1.header["BUNIT"], round(float(mom1.data[24, 40]))
    ('km/s', 1574)
    >>> _, _, err0, err1 = moment_maps(hdu, errors=True)
    >>> bool(0 < err1.data[24, 40] < 10)  # km/s
    True
    >>> _, _, mom2 = moment_maps(hdu, moment2=True)
    >>> bool(12 < mom2.data[24, 30] < 16)  # the line's 15 km/s, a little less in the mask
    True
    """
    from astrokin._validation import check_bool, check_integer, check_real

    for name, value in (("errors", errors), ("moment2", moment2), ("window", window)):
        check_bool(name, value)
    check_real("clip", clip, 0.0)
    check_real("smooth", smooth, -1e-300)  # 0: no spatial smoothing
    check_integer("spectral_smooth", spectral_smooth, 1)
    if rms is not None:
        rms_value = rms.value if isinstance(rms, u.Quantity) else rms
        check_real("rms", rms_value, 0.0)
    data, celestial, spectral, unit, header, beam = _load(cube, beam)
    velocity = _velocities(spectral, header, velocity_convention, rest_value)
    finite = np.isfinite(data)
    if not finite.any():
        raise ValueError("The cube has no finite values.")
    from astropy.stats import mad_std
    from astropy.wcs.utils import proj_plane_pixel_scales

    pix = float(np.sqrt(np.prod(proj_plane_pixel_scales(celestial)))) * 3600.0
    if rms is None:
        noise = float(mad_std(data[finite]))
    elif isinstance(rms, u.Quantity) and rms.unit != u.one:
        if unit == u.one or not rms.unit.is_equivalent(unit):
            raise u.UnitsError(f"rms is in {rms.unit}, not in the cube's flux unit "
                               f"({unit if unit != u.one else 'none: give a plain number'}).")
        noise = float(rms.to_value(unit))
    else:
        noise = float(u.Quantity(rms).value)
    if isinstance(mask, str):
        if mask != "auto":
            raise ValueError(f"mask must be 'auto', a boolean array, or None; got {mask!r}.")
        from scipy import ndimage

        if beam is not None:
            from astrokin.beams import beam_parameters

            bmaj, bmin, _ = beam_parameters(beam)
            fwhm_pix = smooth * np.sqrt(bmaj * bmin) / pix
        else:
            fwhm_pix = float(smooth)
        if not fwhm_pix <= max(data.shape[1:]):
            raise ValueError(f"smooth={smooth} is {fwhm_pix:.4g} pixels FWHM, wider than the "
                             f"cube ({data.shape[2]}x{data.shape[1]} pixels); give a few beams "
                             "(default 1.5).")
        if int(spectral_smooth) > data.shape[0]:
            raise ValueError(f"spectral_smooth={spectral_smooth} channels is more than the "
                             f"cube's {data.shape[0]}; give a few channels (default 3).")
        sigma = fwhm_pix / np.sqrt(8 * np.log(2))
        smoothed = ndimage.gaussian_filter(np.where(finite, data, 0.0),
                                           sigma=(0.0, sigma, sigma))
        if int(spectral_smooth) > 1:
            smoothed = ndimage.uniform_filter1d(smoothed, int(spectral_smooth), axis=0)
        keep = finite & (smoothed > float(clip) * mad_std(smoothed[finite]))
    elif mask is None:
        keep = finite
    else:
        keep = np.asarray(mask, dtype=bool)
        if keep.shape != data.shape:
            raise ValueError(f"mask has shape {keep.shape}; the cube has {data.shape} "
                             "(nchan, ny, nx).")
        keep = keep & finite
    if not keep.any():
        raise ValueError(
            f"No voxel of the cube passes the mask (clip={clip} x noise {noise:.3g}); lower clip= "
            "or give mask=."
        )
    from specutils import Spectrum
    from specutils.analysis import moment

    # specutils wants the spectral axis last and increasing.
    order = np.argsort(velocity)
    flux = np.moveaxis(np.where(keep, data, 0.0)[order], 0, -1)
    masked = Spectrum(flux=flux * unit, spectral_axis=velocity[order] * _KMS)
    m0 = moment(masked, order=0).to(unit * _KMS)
    with np.errstate(all="ignore"):
        m1 = moment(masked, order=1).to(_KMS)
    detected = keep.any(axis=0)
    mom1 = np.where(detected & (m0.value > 0), m1.value, np.nan)
    mom0 = np.where(detected, m0.value, 0.0)
    hdr = celestial.to_header()
    if beam is not None:
        from astrokin.beams import to_beam

        hdr = to_beam(beam).attach_to_header(hdr)
    hdr["ASK_RMS"] = (noise, "noise per voxel of the cube, flux units")
    hdr["ASK_CLIP"] = (float(clip) if isinstance(mask, str) else 0.0, "smooth-and-clip level")
    hdr["ASK_NVOX"] = (int(keep.sum()), "voxels in the moment mask")
    hdr["HISTORY"] = "Moment maps made by astrokin.cubes.moment_maps"
    h0 = hdr.copy()
    h0["BUNIT"] = (unit * _KMS).to_string("fits")
    h1 = hdr.copy()
    h1["BUNIT"] = "km/s"
    from astropy.io import fits

    maps = [fits.PrimaryHDU(mom0, h0), fits.PrimaryHDU(mom1, h1)]
    if moment2:
        with np.errstate(all="ignore"):
            var = moment(masked, order=2).to_value(_KMS ** 2)
        mom2 = np.where(np.isfinite(mom1), np.sqrt(np.clip(var, 0, None)), np.nan)
        n_chan = keep.sum(axis=0)
        mom2 = np.where(n_chan >= MIN_CHANNELS_MOM2, mom2, np.nan)
        maps.append(fits.PrimaryHDU(mom2, h1.copy()))
        if window:
            half = 0.5 * (float(np.median(np.abs(np.diff(np.sort(velocity)))))
                          if velocity.size > 1 else 1.0)
            v_masked = np.where(keep, velocity[:, None, None], np.nan)
            edges = []
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # sightlines outside the mask
                for edge, shift in ((np.nanmin(v_masked, axis=0), -half),
                                    (np.nanmax(v_masked, axis=0), half)):
                    edges.append(fits.PrimaryHDU(np.where(np.isfinite(mom2), edge + shift,
                                                          np.nan), h1.copy()))
    if not moment2 or not window:
        edges = []
    if not errors:
        return (*maps, *edges)
    dv = float(np.median(np.abs(np.diff(np.sort(velocity))))) if velocity.size > 1 else 1.0
    n_chan = keep.sum(axis=0)
    with np.errstate(all="ignore"):
        spread = np.sqrt(np.where(keep, (velocity[:, None, None] - mom1[None]) ** 2,
                                  0.0).sum(axis=0))
        err0 = np.where(detected, noise * dv * np.sqrt(n_chan), np.nan)
        err1 = np.where(np.isfinite(mom1), noise * dv * spread / mom0, np.nan)
    maps += [fits.PrimaryHDU(err0, h0.copy()), fits.PrimaryHDU(err1, h1.copy())]
    if moment2:
        with np.errstate(all="ignore"):
            dev = np.where(keep, (velocity[:, None, None] - mom1[None]) ** 2 - mom2[None] ** 2,
                           0.0)
            err2 = noise * dv * np.sqrt((dev ** 2).sum(axis=0)) / (2.0 * mom2 * mom0)
            # The linear propagation can vanish for a line a few channels wide: no
            # second moment is known better than half a channel.
            err2 = np.maximum(err2, 0.5 * dv)
        maps.append(fits.PrimaryHDU(np.where(mom2 > 0, err2, np.nan), h1.copy()))
    return (*maps, *edges)


#: Fewest channels in a sightline's mask for its second moment to be given.
MIN_CHANNELS_MOM2 = 3


def cube_moments(cube, **options):
    """The moment maps a fit of a cube uses: moments 0-2 and their noise maps.

    Parameters
    ----------
    cube : str, path-like, HDU, HDUList, `specutils.Spectrum` or ``spectral_cube.SpectralCube``
        A cube, as `moment_maps` reads it (a SpectralCube through its
        ``hdu``, beam included).
    **options
        Options of `moment_maps` (``clip``, ``smooth``, ``rest_value``...).

    Returns
    -------
    mom0, mom1, mom2, mom0_err, mom1_err, mom2_err, v_low, v_high : `~astropy.io.fits.PrimaryHDU`

    Raises
    ------
    TypeError
        If ``cube`` is a plain array (a moment map without its mom1, or a
        cube without the WCS that gives its velocities).
    """
    from astropy.io import fits

    if isinstance(cube, np.ndarray) or (isinstance(cube, (list, tuple))
                                        and not isinstance(cube, fits.HDUList)):
        raise TypeError(
            "Got one map without mom1: give mom0 and mom1, or a cube as a FITS file, HDU, "
            "specutils Spectrum or SpectralCube (an array has no WCS for its velocities).")
    for key in ("errors", "moment2", "window"):
        if key in options:
            raise TypeError(f"cube_options may not set {key!r}: a fit uses every moment and "
                            "noise map.")
    if type(cube).__name__ in ("SpectralCube", "VaryingResolutionSpectralCube") \
            and hasattr(cube, "hdu"):
        cube = cube.hdu
    return moment_maps(cube, errors=True, moment2=True, window=True, **options)
