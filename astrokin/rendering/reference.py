"""A slow, independent real-space renderer used to validate `DiskRenderer`."""

import numpy as np
from scipy import signal

from astrokin._validation import pixel_scale_arcsec
from astrokin.beams import FWHM_TO_SIGMA, beam_parameters

__all__ = ["render_reference"]


def render_reference(model, shape, pixel_scale, beam=None, oversample=16, texture=None,
                     moment2=False):
    """Moment maps by brute force: oversampled point evaluation, then beam and binning.

    The model is evaluated at ``oversample x oversample`` points in every
    pixel by its own line-of-sight quadrature
    (`~astrokin.models.KinematicDiskModel.evaluate`), intensity and
    intensity x velocity are convolved with the beam sampled on that fine
    grid, and both are averaged back to pixels. It shares no code with
    `~astrokin.rendering.DiskRenderer` beyond the profile functions, so
    agreement between the two checks the Fourier-space renderer. It is slow
    (seconds per map): use it for validation, not fitting.

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        A single model (not a model set).
    shape : tuple of int
        ``(ny, nx)`` of the maps.
    pixel_scale : `~astropy.units.Quantity`
        Angular size of a pixel.
    beam : beam-like or None
        See `astrokin.beams.to_beam`.
    oversample : int
        Sub-pixels per pixel along each axis.
    texture : callable, optional
        ``texture(x, y)``: a positive factor on the intensity (not the
        velocity) at sky offsets ``(x, y)`` in arcsec (as
        `~astrokin.models.KinematicDiskModel.evaluate` takes them), e.g.
        clumps or arms (`astrokin.synthetic.texture_field`). The mom1 map is
        then weighted by the textured intensity, as a real disc's is.
    moment2 : bool, optional
        Also return the second moment: intensity x (dispersion^2 +
        velocity^2) along each sight line
        (`~astrokin.models.KinematicDiskModel.line_of_sight_dispersion`),
        convolved and binned like the others, less mom1 squared.

    Returns
    -------
    mom0 : numpy.ndarray
        Pixel-averaged, beam-convolved intensity (plain floats).
    mom1 : numpy.ndarray
        Intensity-weighted velocity in km/s (NaN where the intensity is 0).
    mom2 : numpy.ndarray
        With ``moment2=True``: the velocity dispersion in km/s.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.rendering import render_reference
    >>> disk = ExponentialArctanDisk(inclination=45 * u.deg)
    >>> mom0, mom1 = render_reference(disk, (16, 16), 1 * u.arcsec, oversample=4)
    >>> mom0.shape
    (16, 16)
    """
    ps = pixel_scale_arcsec(pixel_scale)
    ny, nx = (int(n) for n in shape)
    s = int(oversample)
    bp = beam_parameters(beam)
    # Pad the fine grid by 3 beam FWHM so the convolution sees emission outside the map.
    pad = 0 if bp is None else int(np.ceil(3.0 * bp[0] / ps))
    fy = (np.arange((ny + 2 * pad) * s) + 0.5) / s - 0.5 - pad
    fx = (np.arange((nx + 2 * pad) * s) + 0.5) / s - 0.5 - pad
    xx, yy = np.meshgrid((fx - (nx - 1) / 2.0) * ps, (fy - (ny - 1) / 2.0) * ps)
    values = model.canonical_values()
    intensity, velocity = model.evaluate(xx, yy, *(values[n] for n in model.param_names))
    if texture is not None:
        intensity = intensity * np.asarray(texture(xx, yy), dtype=float)
    # Velocities about v_sys (the second moment does not depend on it).
    v_sys = float(values["v_sys"])
    fields = [intensity, np.where(intensity > 0, intensity * (velocity - v_sys), 0.0)]
    if moment2:
        disp = model.line_of_sight_dispersion(xx, yy).value
        fields.append(np.where(intensity > 0, intensity * (disp ** 2 + (velocity - v_sys) ** 2),
                               0.0))
    sl = (slice(pad * s, (pad + ny) * s), slice(pad * s, (pad + nx) * s))
    binned = []
    for f in fields:
        if bp is not None:
            f = signal.fftconvolve(f, _gaussian_kernel(bp, ps / s), mode="same")
        binned.append(f[sl].reshape(ny, s, nx, s).mean(axis=(1, 3)))
    mom0 = binned[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mom0 > 0, binned[1] / mom0, np.nan)
        if not moment2:
            return mom0, v_sys + mean
        mom2 = np.sqrt(np.clip(binned[2] / mom0 - mean ** 2, 0, None))
    return mom0, v_sys + mean, np.where(mom0 > 0, mom2, np.nan)


def _gaussian_kernel(bp, step):
    bmaj, bmin, bpa = bp
    s_maj, s_min = bmaj * FWHM_TO_SIGMA, bmin * FWHM_TO_SIGMA
    half = int(np.ceil(4.0 * s_maj / step))
    c = np.arange(-half, half + 1) * step
    x, y = np.meshgrid(c, c)
    t = np.deg2rad(bpa)
    # Major axis along (-sin bpa, cos bpa): North through East with East = -x.
    a = -x * np.sin(t) + y * np.cos(t)
    b = x * np.cos(t) + y * np.sin(t)
    k = np.exp(-0.5 * ((a / s_maj) ** 2 + (b / s_min) ** 2))
    return k / k.sum()

