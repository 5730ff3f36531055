"""Moment maps of galaxies simulated with KinMS, the paper's independent simulator."""

import numpy as np

__all__ = ["kinms_cube", "kinms_moments"]


def kinms_cube(*, n=64, cell=1.0, inclination, pa, r_scale=None, r_turn=None, v_max, beam,
               x_off=0.0, y_off=0.0, v_sys=0.0, z_scale=0.0, dv=5.0, n_clouds=2_000_000,
               gas_sigma=5.0, seed=1, profiles=None):
    """A KinMS cube ``(nv, ny, nx)`` in astrokin's orientation, and its channel velocities.

    Lengths are in arcsec. KinMS cubes are (x, y, v) with x along RA: they are
    transposed here, so that rows run North and columns run West->East reversed
    (East along -column), as in a FITS image with CDELT1 < 0. KinMS puts the
    disc centre at 0-based pixel n/2 (plus ``phaseCent``), that is half a pixel
    from astrokin's map centre (n - 1)/2. Channel k is at ``(k - nv/2) dv``.
    """
    from kinms import KinMS

    radius = np.arange(0.0, 2.0 * n * cell, 0.02 * cell)
    if callable(gas_sigma):  # a dispersion profile: KinMS takes it on the radii
        gas_sigma = np.asarray(gas_sigma(radius), dtype=float)
    v_extent = 2.0 * (v_max + 5 * np.max(gas_sigma)) + 2.0 * abs(v_sys) + 40.0
    nv = int(np.ceil(v_extent / dv / 2.0)) * 2
    if profiles is None:
        sb = np.exp(-radius / r_scale)
        vel = 2.0 / np.pi * v_max * np.arctan(radius / r_turn)
    else:
        sb, vel = (np.asarray(f(radius), dtype=float) for f in profiles)
    kin = KinMS(n * cell, n * cell, nv * dv, cell, dv, list(beam), nSamps=int(n_clouds), seed=seed)
    cube = kin.model_cube(inclination, pa, gasSigma=gas_sigma, diskThick=z_scale, sbProf=sb,
                          sbRad=radius, velProf=vel, velRad=radius, phaseCent=[x_off, y_off],
                          vOffset=v_sys)
    cube = np.transpose(cube, (2, 1, 0))
    v = (np.arange(nv) - nv / 2) * dv
    return cube, v


def kinms_moments(moment2=False, **kwargs):
    """mom0 and mom1 (km/s) of an exponential/arctan disc made by KinMS.

    Takes the arguments of `kinms_cube` (``gas_sigma`` may be a function of
    radius); the maps are ``(ny, nx)`` arrays in astrokin's orientation.
    With ``moment2``, also the second moment of the whole (noiseless) cube,
    less the variance a channel adds (Sheppard's ``dv^2 / 12``).
    """
    cube, v = kinms_cube(**kwargs)
    mom0 = cube.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mom1 = (cube * v[:, None, None]).sum(axis=0) / mom0
        if not moment2:
            return mom0, mom1
        dv = v[1] - v[0]
        var = (cube * (v[:, None, None] - mom1) ** 2).sum(axis=0) / mom0 - dv ** 2 / 12
    return mom0, mom1, np.sqrt(np.clip(var, 0, None))
