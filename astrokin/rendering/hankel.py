r"""Quadrature tables for the Hankel transforms used by the renderer.

A face-on, axisymmetric surface brightness :math:`\Sigma(R)` has the 2D
Fourier transform

.. math:: \hat\Sigma(k) = 2\pi \int_0^\infty \Sigma(R) J_0(2\pi k R) R\, dR,

and an axisymmetric :math:`q(R)` times :math:`\cos\phi` (the pattern of a
rotating disc's line-of-sight velocity) has

.. math:: \widehat{q\cos\phi}(\mathbf{k}) = -2\pi i\, k_X\,
          \frac{1}{k}\int_0^\infty q(R) J_1(2\pi k R) R\, dR ,

and times :math:`\cos 2\phi` (the pattern of the squared line-of-sight
velocity, for the second moment)

.. math:: \widehat{q\cos 2\phi}(\mathbf{k}) = -2\pi\, (k_X^2 - k_Y^2)\,
          \frac{1}{k^2}\int_0^\infty q(R) J_2(2\pi k R) R\, dR .

With fixed radial quadrature nodes :math:`R_n` and a uniform grid of
:math:`k_j`, both integrals are matrix products with constant matrices, built
once per map geometry and cached here.
"""

import functools

import numpy as np
import torch
from scipy import special

__all__ = ["HankelTables", "hankel_tables"]

_GL4_NODES, _GL4_WEIGHTS = np.polynomial.legendre.leggauss(4)


class HankelTables:
    r"""Radial nodes and transform matrices for a given frequency range.

    Parameters
    ----------
    r_max : float
        Outer radius of the radial quadrature, in pixels.
    k_max : float
        Largest spatial frequency needed, in cycles per pixel.
    dk : float
        Spacing of the tabulated frequencies.

    Attributes
    ----------
    radii : numpy.ndarray
        Radial quadrature nodes (pixels).
    w0, w1, w2 : numpy.ndarray
        ``(n_r, n_k)`` matrices: ``sigma @ w0`` is the order-0 transform
        :math:`\hat\Sigma(k_j)`, ``q @ w1`` the order-1 transform divided by
        :math:`k_j`, ``q @ w2`` the order-2 one divided by :math:`k_j^2`
        (both finite at :math:`k=0`).
    dk : float
        Frequency spacing; ``k_j = j * dk``.
    """

    def __init__(self, r_max, k_max, dk):
        # Panels: refined towards the centre (small turnover radii), then of a
        # width that puts ~4 Gauss-Legendre nodes per half period of J(2 pi k R).
        dr = min(0.5, 0.5 / k_max)
        inner = [0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
        outer = np.arange(1.0 + dr, r_max + dr, dr)
        edges = np.concatenate([inner, outer])
        a, b = edges[:-1, None], edges[1:, None]
        half = 0.5 * (b - a)
        radii = (a + half * (_GL4_NODES + 1.0)).ravel()
        weights = (half * _GL4_WEIGHTS).ravel()
        n_k = int(np.ceil(k_max / dk)) + 2
        k = np.arange(n_k) * dk
        arg = 2.0 * np.pi * radii[:, None] * k[None, :]
        self.radii = radii
        self.dk = float(dk)
        self.n_k = n_k
        j0, j1 = special.j0(arg), special.j1(arg)
        self.w0 = 2.0 * np.pi * (weights * radii)[:, None] * j0
        with np.errstate(invalid="ignore", divide="ignore"):
            j1_over_k = np.where(k[None, :] > 0, j1 / k[None, :], np.pi * radii[:, None])
            # J_2 from the recurrence J_2(x) = 2 J_1(x) / x - J_0(x) (ten times
            # cheaper than scipy's J_nu), from its series where that cancels;
            # J_2(x) -> x^2 / 8 at small x: J_2(2 pi k R) / k^2 -> pi^2 R^2 / 2.
            j2 = np.where(arg > 1e-2, 2.0 * j1 / arg - j0,
                          0.125 * arg ** 2 * (1.0 - arg ** 2 / 12.0))
            j2_over_k2 = np.where(k[None, :] > 0, j2 / k[None, :] ** 2,
                                  0.5 * np.pi ** 2 * radii[:, None] ** 2)
        self.w1 = (weights * radii)[:, None] * j1_over_k
        self.w2 = (weights * radii)[:, None] * j2_over_k2

    @functools.lru_cache(maxsize=8)  # noqa: B019 - tables are few and long-lived
    def tensors(self, dtype, device):
        """``(radii, w0, w1, w2)`` as torch tensors of ``dtype`` on ``device``."""
        return tuple(torch.as_tensor(a, dtype=dtype, device=device)
                     for a in (self.radii, self.w0, self.w1, self.w2))


@functools.lru_cache(maxsize=32)
def hankel_tables(r_max, k_max, dk):
    """Cached `HankelTables` for the given radial and frequency ranges."""
    return HankelTables(r_max, k_max, dk)
