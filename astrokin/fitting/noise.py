r"""The noise of moment maps, and what it makes of a least-squares fit's errors.

Two sources of the noise of each pixel:

- **given**: noise maps of mom0 and mom1 (``mom0_err=``, ``mom1_err=`` of the
  fitter, or those `astrokin.cubes.moment_maps` derives from a cube);
- **estimated**: one level per map and galaxy, from the residuals of the fit
  , with the degrees of freedom the fit used subtracted.

Pixels of a map made with a beam are not independent: white noise smoothed
by a Gaussian beam of covariance :math:`\Sigma` is correlated with a
Gaussian of covariance :math:`2\Sigma` (`correlation_kernels`). The
covariance of the fitted parameters is then the "sandwich"
:math:`H^{-1} J^T R J H^{-1}` (`parameter_covariance`), with :math:`J` the
Jacobian of the whitened residuals, :math:`H = J^T J` and :math:`R` the
correlation; the plain :math:`H^{-1}` would count every pixel as an
independent measurement and give error bars several times too small.
"""

import math

import torch
from scipy.fft import next_fast_len

__all__ = ["correlate", "correlation_kernels", "effective_dof", "parameter_covariance",
           "residual_correlation"]

#: The empirical correlation of the residuals is tapered by a Gaussian of this many
#: beam FWHM (its estimate at longer lags is noise).
TAPER_BEAMS = 3.0
#: The beam's noise-correlation kernel, ``exp(-d^2 / (4 sigma^2))``, is below 1e-12 of
#: its peak beyond this many sigma of the beam: `correlation_kernels` pads the maps
#: by that much (at most to twice their size) for the convolution to be exact.
KERNEL_REACH = 10.6


def correlation_kernels(shape, beam, pixel_scale, size=None):
    """FFTs of each galaxy's noise-correlation kernel (for `correlate`).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the maps.
    beam : torch.Tensor or None
        ``(B, 3)`` FWHM axes (arcsec) and PA (deg, in the maps' frame), NaN
        rows for galaxies without a beam (their noise is white).
    pixel_scale : torch.Tensor
        ``(B,)`` arcsec.
    size : tuple of int, optional
        The even sides ``(py, px)`` of the FFT grid; by default the maps
        padded by `KERNEL_REACH` sigma of the largest beam (at most doubled),
        which `correlate` then finds from the kernel's shape.

    Returns
    -------
    kernel_fft : torch.Tensor or None
        ``(B, py, px // 2 + 1)``; None when no galaxy has a beam.

    Examples
    --------
    >>> import torch
    >>> from astrokin.fitting.noise import correlate, correlation_kernels
    >>> k = correlation_kernels((32, 32), torch.tensor([[3.0, 3.0, 0.0]], dtype=torch.float64),
    ...                         torch.ones(1, dtype=torch.float64))
    >>> point = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    >>> point[0, 0, 16, 16] = 1.0
    >>> out = correlate(point, k)[0, 0]
    >>> round(float(out[16, 16]), 6), round(float(out.sum()), 1)  # 4 pi sigma^2 pixels
    (1.0, 20.4)
    """
    if beam is None:
        return None
    ny, nx = shape
    to_sigma = 1.0 / math.sqrt(8.0 * math.log(2.0))
    if size is None:
        widths = torch.nan_to_num(beam[:, 0] / pixel_scale * to_sigma)
        reach = math.ceil(KERNEL_REACH * float(widths.max())) if widths.numel() else 0
        size = tuple(min(2 * n, _even_fast_len(n + reach)) for n in (ny, nx))
    py, px = size
    yy = torch.fft.fftfreq(py, d=1.0 / py, dtype=beam.dtype, device=beam.device)
    xx = torch.fft.fftfreq(px, d=1.0 / px, dtype=beam.dtype, device=beam.device)
    y, x = torch.meshgrid(yy, xx, indexing="ij")
    s_maj = (beam[:, 0] / pixel_scale * to_sigma)[:, None, None]
    s_min = (beam[:, 1] / pixel_scale * to_sigma)[:, None, None]
    t = torch.deg2rad(beam[:, 2])[:, None, None]
    # Major axis along (-sin bpa, cos bpa) in (x, y), as the renderer's beam.
    a = -x * torch.sin(t) + y * torch.cos(t)
    b = x * torch.cos(t) + y * torch.sin(t)
    k = torch.exp(-0.25 * ((a / s_maj) ** 2 + (b / s_min) ** 2))
    delta = torch.zeros_like(k)
    delta[:, 0, 0] = 1.0
    none = torch.isnan(beam).any(dim=1)
    k = torch.where(none[:, None, None], delta, torch.nan_to_num(k))
    return torch.fft.rfft2(k)


def _even_fast_len(n):
    """The smallest even FFT-friendly length (5-smooth) of at least ``n``."""
    m = next_fast_len(int(n))
    while m % 2:
        m = next_fast_len(m + 1)
    return m


def correlate(maps, kernel_fft):
    """``maps`` ``(B, K, ny, nx)`` convolved with each galaxy's correlation kernel.

    ``kernel_fft`` is ``(B, py, px // 2 + 1)`` (one kernel per galaxy) or
    ``(B, K, py, px // 2 + 1)`` (one per map) on an FFT grid of even sides
    ``(py, px)`` (`correlation_kernels`, `residual_correlation`), or None (no
    correlation).
    """
    if kernel_fft is None:
        return maps
    ny, nx = maps.shape[-2:]
    size = (kernel_fft.shape[-2], 2 * (kernel_fft.shape[-1] - 1))
    f = torch.fft.rfft2(maps, s=size)
    k = kernel_fft[:, None] if kernel_fft.ndim == 3 else kernel_fft
    return torch.fft.irfft2(f * k, s=size)[..., :ny, :nx]


def residual_correlation(residuals, fitted, beam, pixel_scale):
    """FFTs of the correlation kernels the residuals themselves show, map by map.

    A model that does not describe a galaxy exactly leaves residuals
    correlated over more than a beam, and those count as fewer independent
    measurements than beam-smoothed noise. The autocorrelation of each map's
    whitened residuals (normalised by the overlap of its mask with itself,
    and to 1 at zero lag) is tapered (`TAPER_BEAMS`) and, where smaller,
    replaced by that of beam-smoothed noise (`correlation_kernels`).

    Parameters
    ----------
    residuals : torch.Tensor
        ``(B, K, ny, nx)`` whitened residuals, one map per ``K``.
    fitted : torch.Tensor
        ``(B, K, ny, nx)`` booleans.
    beam : torch.Tensor or None
        ``(B, 3)`` as for `correlation_kernels`.
    pixel_scale : torch.Tensor
        ``(B,)`` arcsec.

    Returns
    -------
    kernel_fft : torch.Tensor
        ``(B, K, 2 ny, nx + 1)`` (an FFT grid of twice the maps' sides), for
        `correlate`.
    """
    b, k, ny, nx = residuals.shape
    size = (2 * ny, 2 * nx)
    m = fitted.to(residuals.dtype)
    r = residuals * m
    num = torch.fft.irfft2(torch.fft.rfft2(r, s=size).abs() ** 2, s=size)
    den = torch.fft.irfft2(torch.fft.rfft2(m, s=size).abs() ** 2, s=size)
    # Lags the masks barely overlap at say nothing.
    enough = den > 0.25 * den[..., :1, :1]
    acf = torch.where(enough, num / den.clamp(min=1.0), torch.zeros_like(num))
    acf = acf / acf[..., :1, :1].clamp(min=1e-300)
    yy = torch.fft.fftfreq(size[0], d=1.0 / size[0], dtype=r.dtype, device=r.device)
    xx = torch.fft.fftfreq(size[1], d=1.0 / size[1], dtype=r.dtype, device=r.device)
    lag2 = yy[:, None] ** 2 + xx[None, :] ** 2
    if beam is None:
        width = torch.full((b,), 2.0, dtype=r.dtype, device=r.device)
    else:
        ok = ~torch.isnan(beam).any(dim=1)
        width = torch.where(ok, torch.sqrt(beam[:, 0] * beam[:, 1]) / pixel_scale, 2.0)
        width = width.clamp(min=2.0).to(r.dtype)
    taper = torch.exp(-0.5 * lag2 / (TAPER_BEAMS * width[:, None, None]) ** 2)
    acf = acf * taper[:, None]
    floor = correlation_kernels((ny, nx), beam, pixel_scale, size=size)
    if floor is not None:
        acf = torch.maximum(acf, torch.fft.irfft2(floor, s=size)[:, None])
    else:
        acf[..., 0, 0] = torch.clamp(acf[..., 0, 0], min=1.0)
    return torch.fft.rfft2(acf)


def parameter_covariance(jac, shape, kernel_fft, prior_precision=None):
    r"""The sandwich covariance of least-squares parameters with correlated pixels.

    Parameters
    ----------
    jac : torch.Tensor
        ``(B, K ny nx, P)`` Jacobian of the whitened residuals of ``K`` maps
        (mom0 pixels, then mom1 pixels; or mom2 pixels alone), zero where a
        pixel is not fitted.
    shape : tuple of int
        ``(ny, nx)``.
    kernel_fft : torch.Tensor or None
        From `correlation_kernels` (one for every map) or
        `residual_correlation` (one per map; None: independent pixels).

    Returns
    -------
    cov : torch.Tensor
        ``(B, P, P)``, for whitened residuals of unit variance.
    trace : torch.Tensor
        ``(B,)`` :math:`{\rm tr}(H^{-1} J^T R J)`: the degrees of freedom the
        fit takes from the residuals (`effective_dof`).
    """
    b, n, p = jac.shape
    ny, nx = shape
    h = jac.transpose(1, 2) @ jac
    if prior_precision is not None:
        h = h + prior_precision
    eye = torch.eye(p, dtype=jac.dtype, device=jac.device)
    scale = torch.diagonal(h, dim1=1, dim2=2).clamp(min=1e-300).sqrt()
    # Inverse of the curvature, equilibrated (and damped for the degenerate).
    hs = h / (scale[:, :, None] * scale[:, None, :])
    h_inv = torch.linalg.inv(hs + 1e-12 * eye) / (scale[:, :, None] * scale[:, None, :])
    if kernel_fft is None:
        meat = h if prior_precision is None else jac.transpose(1, 2) @ jac
    else:
        n_maps = n // (ny * nx)
        cols = jac.transpose(1, 2).reshape(b, p, n_maps, ny, nx)
        meat = torch.zeros_like(h)
        for k in range(n_maps):
            kernel = kernel_fft if kernel_fft.ndim == 3 else kernel_fft[:, k]
            meat = meat + _correlated_gram(cols[:, :, k], kernel)
    meat = 0.5 * (meat + meat.transpose(1, 2))
    trace = torch.diagonal(h_inv @ meat, dim1=1, dim2=2).sum(dim=1)
    if prior_precision is not None:
        meat = meat + prior_precision
    cov = h_inv @ meat @ h_inv
    return 0.5 * (cov + cov.transpose(1, 2)), trace


#: Galaxies whose Jacobians `_correlated_gram` transforms at once (bounds its memory).
GRAM_CHUNK = 32


def _correlated_gram(cols, kernel_fft):
    r"""The symmetric part of ``cols^T (k * cols)`` ``(B, P, P)``, ``cols`` ``(B, P, ny, nx)``.

    By Parseval: the maps are zero beyond their own pixels, so the sum over
    them of one map times the other convolved (`correlate`, on the same
    padded grid) is the sum over the grid,
    :math:`\frac{1}{N}\sum_f \hat a_f^* K_f \hat b_f` (the half-plane's
    columns but the first and the Nyquist one counted twice), whose
    symmetric part is :math:`\frac{1}{N}\sum_f {\rm Re} K_f
    ({\rm Re}\,\hat a_f {\rm Re}\,\hat b_f + {\rm Im}\,\hat a_f
    {\rm Im}\,\hat b_f)`: one forward transform, no inverse, and a real
    matrix product.
    """
    size = (kernel_fft.shape[-2], 2 * (kernel_fft.shape[-1] - 1))
    w = torch.full((kernel_fft.shape[-1],), 2.0, dtype=cols.dtype, device=cols.device)
    w[0] = w[-1] = 1.0
    kw = (kernel_fft.real * w / (size[0] * size[1])).flatten(-2)
    kw = kw[..., None].expand(*kw.shape, 2).flatten(-2)[:, None]  # (re, im) interleaved
    out = []
    for i in range(0, cols.shape[0], GRAM_CHUNK):
        f = torch.view_as_real(torch.fft.rfft2(cols[i:i + GRAM_CHUNK], s=size)).flatten(-3)
        out.append(f @ (f * kw[i:i + GRAM_CHUNK]).transpose(1, 2))
    return torch.cat(out)


def effective_dof(n_fitted, trace):
    """Residual degrees of freedom: fitted pixels less what the fit took (at least 1)."""
    return torch.clamp(n_fitted - trace, min=1.0)
