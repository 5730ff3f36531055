r"""Is the disc model good enough for this galaxy? Structure in the velocity residuals.

A rotating flat disc leaves mom1 residuals that are noise. A warp, a bar, an
oval distortion or radial flows leave residuals that vary *smoothly around
the ellipses* of the disc: harmonic terms :math:`\cos m\phi, \sin m\phi`
(:math:`m = 1, 2, 3`) of the azimuth :math:`\phi` in the disc plane, as in a
harmonic decomposition of the velocity field (Schoenmakers et al. 1997).
`mom1_harmonics` fits those terms to the residuals ring by ring and reports
the largest amplitude that is significant, and a flag when it is large
enough to matter (`STRUCTURE_FRACTION` of :math:`V \sin i`, at
`STRUCTURE_SIGMA` significance against the scatter about the harmonics, with
pixels counted by beams).
"""

import math

import torch

from astrokin.models.core import disc_coordinates

__all__ = ["STRUCTURE_FRACTION", "STRUCTURE_SIGMA", "mom1_harmonics"]

#: A harmonic counts as structure above this fraction of V sin i ...
STRUCTURE_FRACTION = 0.03
#: ... and this many standard errors.
STRUCTURE_SIGMA = 5.0
#: Harmonic orders fitted.
ORDERS = (1, 2, 3)
#: Width of the rings, in beam FWHM.
RING_BEAMS = 2.0


def mom1_harmonics(residual, fitted, geometry, pixel_scale, beam, sigma, vsini):
    """The largest significant harmonic amplitude of mom1 residuals, and a structure flag.

    Parameters
    ----------
    residual : torch.Tensor
        ``(B, ny, nx)`` mom1 data minus model, km/s.
    fitted : torch.Tensor
        ``(B, ny, nx)`` booleans: the mom1 pixels fitted.
    geometry : dict of torch.Tensor
        ``inclination``, ``pa`` (deg, map frame), ``x_0``, ``y_0`` (arcsec
        from the map centre), each ``(B,)``.
    pixel_scale : torch.Tensor
        ``(B,)`` arcsec.
    beam : torch.Tensor or None
        ``(B, 3)`` (NaN rows: none); sets the ring width and the pixels per
        independent measurement.
    sigma : torch.Tensor
        ``(B,)`` mom1 noise, km/s; the significance uses the scatter of each
        ring about its harmonics (which structure does not inflate), down
        to 1e-3 of this.
    vsini : torch.Tensor or None
        ``(B,)`` km/s, the scale of "large enough"; None: any significant
        harmonic is flagged.

    Returns
    -------
    amplitude : torch.Tensor
        ``(B,)`` km/s: the largest amplitude over rings and orders that is
        `STRUCTURE_SIGMA` significant (0 where none is).
    structure : torch.Tensor
        ``(B,)`` booleans: that amplitude exceeds `STRUCTURE_FRACTION` of
        ``vsini``.

    Examples
    --------
    A velocity field with a bar-like m = 2 term of 15 km/s left in the
    residuals is flagged; noise alone is not:

    >>> import torch
    >>> from astrokin.fitting.goodness import mom1_harmonics
    >>> y, x = torch.meshgrid(torch.arange(64.0) - 31.5, torch.arange(64.0) - 31.5,
    ...                       indexing="ij")
    >>> phi = torch.atan2(y, x)
    >>> res = torch.stack([15 * torch.cos(2 * phi), torch.randn(64, 64)]).double()
    >>> ok = (x ** 2 + y ** 2 < 28 ** 2).expand(2, 64, 64)
    >>> geo = {k: torch.zeros(2, dtype=torch.float64) for k in ("inclination", "pa",
    ...                                                          "x_0", "y_0")}
    >>> amp, flag = mom1_harmonics(res, ok, geo, torch.ones(2, dtype=torch.float64), None,
    ...                            torch.ones(2, dtype=torch.float64),
    ...                            torch.full((2,), 200.0, dtype=torch.float64))
    >>> [round(float(a)) for a in amp], flag.tolist()
    ([15, 0], [True, False])
    """
    b, ny, nx = residual.shape
    dtype, dev = residual.dtype, residual.device
    ps = pixel_scale.to(dtype)[:, None, None]
    yy, xx = torch.meshgrid(torch.arange(ny, dtype=dtype, device=dev) - (ny - 1) / 2,
                            torch.arange(nx, dtype=dtype, device=dev) - (nx - 1) / 2,
                            indexing="ij")
    g = {k: v.to(dtype=dtype, device=dev)[:, None, None] for k, v in geometry.items()}
    dx, dy = xx * ps - g["x_0"], yy * ps - g["y_0"]
    xm, ym = disc_coordinates(torch, dx, dy, g["pa"], g["inclination"])
    radius = torch.hypot(xm, ym)
    phi = torch.atan2(ym, xm)
    if beam is None:
        fwhm = torch.full((b,), 2.0, dtype=dtype, device=dev) * pixel_scale.to(dtype)
        area = torch.ones(b, dtype=dtype, device=dev)
    else:
        ok = ~torch.isnan(beam).any(dim=1)
        fwhm = torch.where(ok, torch.sqrt(beam[:, 0] * beam[:, 1]), 2.0 * pixel_scale)
        # Pixels per independent measurement of beam-smoothed noise: 4 pi sigma^2.
        area = torch.where(ok, math.pi / (2 * math.log(2.0)) * beam[:, 0] * beam[:, 1]
                           / pixel_scale ** 2, torch.ones_like(pixel_scale)).to(dtype)
        fwhm = torch.maximum(fwhm, 2.0 * pixel_scale).to(dtype)
    ring = torch.floor(radius / (RING_BEAMS * fwhm[:, None, None])).long()
    n_rings = int(ring[fitted].max()) + 1 if bool(fitted.any()) else 1
    ring = torch.where(fitted, ring, torch.full_like(ring, n_rings))  # a bin for the rest
    cols = [torch.ones_like(phi)]
    for order in ORDERS:
        cols += [torch.cos(order * phi), torch.sin(order * phi)]
    design = torch.stack(cols, dim=-1).reshape(b, ny * nx, -1)  # (B, N, K)
    k = design.shape[-1]
    flat_ring = ring.reshape(b, -1)
    y = torch.where(fitted, residual, torch.zeros_like(residual)).reshape(b, -1)
    xtx = torch.zeros(b, n_rings + 1, k, k, dtype=dtype, device=dev)
    xty = torch.zeros(b, n_rings + 1, k, dtype=dtype, device=dev)
    outer = design[:, :, :, None] * design[:, :, None, :]
    index = flat_ring[:, :, None, None].expand(-1, -1, k, k)
    xtx.scatter_add_(1, index, outer)
    xty.scatter_add_(1, flat_ring[:, :, None].expand(-1, -1, k), design * y[:, :, None])
    xtx, xty = xtx[:, :n_rings], xty[:, :n_rings]
    count = torch.diagonal(xtx, dim1=2, dim2=3)[..., 0]
    eye = torch.eye(k, dtype=dtype, device=dev)
    coef = torch.linalg.solve(xtx + 1e-9 * (count[..., None, None] + 1.0) * eye,
                              xty[..., None])[..., 0]
    cov = torch.linalg.inv(xtx + 1e-9 * (count[..., None, None] + 1.0) * eye)
    # The noise of each ring: the scatter about its harmonics (structure does not
    # inflate it), at least the noise given.
    yy_sum = torch.zeros(b, n_rings + 1, dtype=dtype, device=dev)
    yy_sum.scatter_add_(1, flat_ring, y * y)
    rss = (yy_sum[:, :n_rings] - (coef * xty).sum(dim=-1)).clamp(min=0.0)
    scatter = torch.sqrt(rss / (count - k).clamp(min=1.0))
    noise = torch.maximum(scatter, 1e-3 * sigma.to(dtype)[:, None])
    # Standard errors of the coefficients, pixels counted by beams.
    se = torch.sqrt(torch.diagonal(cov, dim1=2, dim2=3).clamp(min=0)
                    * area[:, None, None]) * noise[..., None]
    amps, zs = [], []
    for j in range(len(ORDERS)):
        c, s = coef[..., 1 + 2 * j], coef[..., 2 + 2 * j]
        amp = torch.hypot(c, s)
        err = torch.sqrt(0.5 * (se[..., 1 + 2 * j] ** 2 + se[..., 2 + 2 * j] ** 2))
        amps.append(amp)
        zs.append(amp / err.clamp(min=1e-300))
    amp = torch.stack(amps, dim=-1)
    z = torch.stack(zs, dim=-1)
    # A ring needs enough independent measurements around it to say anything.
    usable = (count / area[:, None] >= 2.0 * k)[..., None]
    significant = usable & (z > STRUCTURE_SIGMA)
    biggest = torch.where(significant, amp, torch.zeros_like(amp)).flatten(1).amax(dim=1)
    limit = 0.0 if vsini is None else STRUCTURE_FRACTION * vsini.to(dtype).abs()
    return biggest, biggest > limit
