"""Built-in disc models: the paper's exponential/arctan disc and an HI ring disc."""

import numpy as np
from astropy import units as u
from astropy.modeling import Parameter

from .core import KinematicDiskModel

__all__ = ["ExponentialArctanDisk", "GaussianRingDisk"]


class ExponentialArctanDisk(KinematicDiskModel):
    r"""Exponential disc with an arctan rotation curve (Dawson et al. 2021).

    Parameters
    ----------
    amplitude, inclination, pa, x_0, y_0, v_sys, z_scale
        Geometry and scale, see `~astrokin.models.KinematicDiskModel`.
    r_scale : `~astropy.units.Quantity`
        Exponential scale length of the surface brightness.
    r_turn : `~astropy.units.Quantity`
        Turnover radius of the rotation curve.
    v_max : `~astropy.units.Quantity`
        Asymptotic (deprojected) rotation speed.
    v_disp : `~astropy.units.Quantity`
        Intrinsic (one-dimensional, line-of-sight) velocity dispersion of the
        gas, the same at every radius. It changes the second moment only:
        fitted when a mom2 map (or a cube) is given, otherwise left as it is.

    Other Parameters
    ----------------
    bounds
        ``inclination`` 10-90 deg and ``v_max`` 50-500 km/s follow the
        paper's Table 2 (which bounds :math:`V_{\rm max}\sin i`; here the
        deprojected speed is bounded). ``r_scale`` and ``r_turn`` have no
        default bounds in arcsec: the paper gives them as fractions of the
        map (0.1-0.35 and 0.01-0.8 of its half-width), and the neural fitter
        applies those fractions to each map when the bounds are None.

    Notes
    -----
    .. math::

        \Sigma(r) = A\, e^{-r / r_{\rm scale}}, \qquad
        V(r) = \frac{2 V_{\rm max}}{\pi} \arctan\frac{r}{r_{\rm turn}}

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> disk = ExponentialArctanDisk(inclination=50 * u.deg, r_scale=5 * u.arcsec,
    ...                              r_turn=2 * u.arcsec, v_max=250 * u.km / u.s)
    >>> disk.rotation_curve([2, 1e6] * u.arcsec).round(1)
    <Quantity [125., 250.] km / s>

    .. plot::
        :include-source:

        import astropy.units as u
        import matplotlib.pyplot as plt
        from astrokin.models import ExponentialArctanDisk

        disk = ExponentialArctanDisk(inclination=60 * u.deg, pa=120 * u.deg,
                                     r_scale=6 * u.arcsec, r_turn=3 * u.arcsec,
                                     v_max=220 * u.km / u.s)
        mom0, mom1 = disk.render((64, 64), 1 * u.arcsec, beam=3 * u.arcsec)
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(8, 3.5))
        ax0.imshow(mom0.value, origin="lower")
        im = ax1.imshow(mom1.value, origin="lower", cmap="RdBu_r")
        fig.colorbar(im, ax=ax1, label="km/s")
    """

    velocity_scale_parameter = "v_max"

    r_scale = Parameter(default=5.0, unit=u.arcsec, bounds=(0.0, None),
                        description="Exponential scale length of the surface brightness")
    r_turn = Parameter(default=2.0, unit=u.arcsec, bounds=(0.0, None),
                       description="Turnover radius of the arctan rotation curve")
    v_max = Parameter(default=200.0, unit=u.km / u.s, bounds=(50.0, 500.0),
                      description="Asymptotic deprojected rotation speed")
    v_disp = Parameter(default=10.0, unit=u.km / u.s, bounds=(0.0, 300.0),
                       description="Intrinsic velocity dispersion (constant)")

    @staticmethod
    def surface_brightness(xp, r, r_scale):
        """Exponential surface brightness, 1 at the centre."""
        return xp.exp(-r / r_scale)

    @staticmethod
    def rotation_velocity(xp, r, v_max, r_turn):
        """Arctan rotation curve rising to ``v_max``."""
        return (2.0 / np.pi) * v_max * xp.arctan(r / r_turn)

    @staticmethod
    def velocity_dispersion(xp, r, v_disp):
        """A constant intrinsic dispersion."""
        return v_disp + 0.0 * r


class GaussianRingDisk(KinematicDiskModel):
    r"""HI-like disc: a Gaussian ring with a Courteau (1997) rotation curve.

    HI discs often have a central depression, filled by molecular gas, and
    rotation curves that turn over sharply and may decline (Dawson et al.
    2021, section 3.5). This model has a Gaussian-ring surface brightness and
    the multi-parameter rotation curve of Courteau (1997, AJ 114, 2402,
    eq. 2), whose ``gamma`` sets the sharpness of the turnover and ``beta``
    a rise (``beta < 0``) or fall (``beta > 0``) towards ``v_c`` outside it.

    Parameters
    ----------
    amplitude, inclination, pa, x_0, y_0, v_sys, z_scale
        Geometry and scale, see `~astrokin.models.KinematicDiskModel`.
    r_ring : `~astropy.units.Quantity`
        Radius of the peak of the surface brightness (0 gives a centrally
        peaked Gaussian disc).
    ring_width : `~astropy.units.Quantity`
        Gaussian standard deviation of the ring.
    v_c : `~astropy.units.Quantity`
        Asymptotic rotation speed at large radii.
    r_turn : `~astropy.units.Quantity`
        Turnover radius.
    beta : float
        Outer slope parameter; 0 is flat, positive values overshoot then
        decline towards ``v_c``.
    gamma : float
        Sharpness of the turnover; large values give a sharp knee.
    v_disp : `~astropy.units.Quantity`
        Intrinsic velocity dispersion, constant (see `ExponentialArctanDisk`).

    Notes
    -----
    .. math::

        \Sigma(r) = A \exp\left[-\frac{(r - r_{\rm ring})^2}{2 w^2}\right], \qquad
        V(r) = v_c \frac{(1 + x)^\beta}{(1 + x^\gamma)^{1/\gamma}},
        \quad x = r_{\rm turn} / r

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import GaussianRingDisk
    >>> ring = GaussianRingDisk(r_ring=10 * u.arcsec, ring_width=3 * u.arcsec)
    >>> float(ring.intensity_profile(10 * u.arcsec).value)
    1.0
    >>> bool(ring.intensity_profile(0 * u.arcsec) < 0.01)
    True
    """

    velocity_scale_parameter = "v_c"

    r_ring = Parameter(default=10.0, unit=u.arcsec, bounds=(0.0, None),
                       description="Radius of the ring's peak")
    ring_width = Parameter(default=4.0, unit=u.arcsec, bounds=(0.0, None),
                           description="Gaussian width (sigma) of the ring")
    v_c = Parameter(default=150.0, unit=u.km / u.s, bounds=(20.0, 400.0),
                    description="Asymptotic rotation speed")
    r_turn = Parameter(default=3.0, unit=u.arcsec, bounds=(0.0, None),
                       description="Turnover radius")
    beta = Parameter(default=0.0, bounds=(-0.5, 1.0),
                     description="Outer slope: 0 flat, > 0 declining towards v_c")
    gamma = Parameter(default=2.0, bounds=(0.5, 10.0),
                      description="Sharpness of the turnover")
    v_disp = Parameter(default=10.0, unit=u.km / u.s, bounds=(0.0, 300.0),
                       description="Intrinsic velocity dispersion (constant)")

    @staticmethod
    def surface_brightness(xp, r, r_ring, ring_width):
        """Gaussian ring surface brightness, 1 at ``r_ring``."""
        return xp.exp(-0.5 * ((r - r_ring) / ring_width) ** 2)

    @staticmethod
    def rotation_velocity(xp, r, v_c, r_turn, beta, gamma):
        """Courteau (1997) multi-parameter rotation curve."""
        # Written in terms of q = r / r_turn so that r = 0 is finite:
        # (1 + x)^beta / (1 + x^gamma)^(1/gamma) with x = 1/q equals
        # q^(1 - beta) (1 + q)^beta / (1 + q^gamma)^(1/gamma).
        q = xp.abs(r) / r_turn
        return v_c * q ** (1.0 - beta) * (1.0 + q) ** beta / (1.0 + q ** gamma) ** (1.0 / gamma)

    @staticmethod
    def velocity_dispersion(xp, r, v_disp):
        """A constant intrinsic dispersion."""
        return v_disp + 0.0 * r
