"""3D-Barolo's 2DFIT (tilted-ring fit of a velocity field) as a peer for astrokin.

`fit_2dfit` runs pyBBarolo's ``FitMod2D`` on a 2D first-moment map held in a
numpy array, with the same first guesses a user would give it, and returns the
ring-by-ring result in astrokin's conventions.

Install (see benchmarks/README.md, "Peer: 3D-Barolo 2DFIT")::

    apt-get install -y libcfitsio-dev libfftw3-dev wcslib-dev
    pip install pybbarolo          # 1.8.0; compiles BBarolo (~40 s)

Conventions (verified with benchmarks/peers/check_barolo.py and the C++
source, src/Tasks/ringmodel.cpp of pybbarolo 1.8.0):

* Pixels: 2DFIT works purely in pixel space with 0-based pixel indices
  (``for rx in [0, nx)``); XPOS/YPOS are 0-based column/row, the same as
  astrokin's ``x_center_pix``/``y_center_pix``. No conversion.
* Position angle: BBarolo's PHI is the angle of the receding half of the
  major axis, measured from +row towards -column (major-axis unit vector
  (-sin PHI, +cos PHI) in (column, row)), i.e. from North through East on a
  map with North = +row and East = -column (CDELT1 < 0). This is astrokin's
  convention, so no conversion is needed for maps in standard orientation.
  (pyBBarolo's docstring says "N->W"; that is wrong for such maps.) 2DFIT
  does not look at the sign of CDELT1: a map stored with East = +column would
  have its PA mirrored.
* Rings: pyBBarolo takes N+1 radii and fits N rings centred on the first N
  radii, of widths radii[i+1] - radii[i] (annulus r +- width/2). Pixels within
  15 deg of the minor axis are excluded ("free angle"), and points are
  weighted by |cos(theta)|^2 (WFUNC=2). Each ring is fitted independently,
  in one pass; there is no regularisation or second stage in 2DFIT.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
import tempfile
import time

import numpy as np

__all__ = ["fit_2dfit", "fit_3dfit"]

_GUESS_KEYS = ("x_center_pix", "y_center_pix", "v_sys", "inclination", "pa", "v_rot")


def _value(x, unit=None):
    """Float from a number or an astropy Quantity (converted to ``unit``)."""
    if hasattr(x, "to") and unit is not None:
        return float(x.to(unit).value)
    return float(x)


@contextlib.contextmanager
def _silenced(log_path):
    """Send everything written to fd 1 and 2 (Python and C++) to ``log_path``."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            libc.fflush(None)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _write_fits(path, mom1, pixel_scale_arcsec, beam_fwhm_arcsec):
    from astropy.io import fits

    ny, nx = mom1.shape
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---SIN", "DEC--SIN"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CDELT1"] = -pixel_scale_arcsec / 3600.0
    h["CDELT2"] = pixel_scale_arcsec / 3600.0
    # FITS CRPIX is 1-based: reference pixel at the 0-based map centre.
    h["CRPIX1"] = (nx - 1) / 2.0 + 1.0
    h["CRPIX2"] = (ny - 1) / 2.0 + 1.0
    h["CRVAL1"], h["CRVAL2"] = 180.0, 0.0
    h["EQUINOX"] = 2000.0
    h["BUNIT"] = "km/s"
    if beam_fwhm_arcsec is not None:
        h["BMAJ"] = h["BMIN"] = beam_fwhm_arcsec / 3600.0
        h["BPA"] = 0.0
    fits.writeto(path, np.asarray(mom1, dtype=np.float32), h, overwrite=True)


def _fold(inc, pa, vrot):
    """Map a ring's (inc, pa, vrot) to inc in [0, 90], vrot >= 0, pa in [0, 360).

    For a velocity field (i, pa, v) == (-i, pa + 180, v) == (i, pa + 180, -v)
    == (180 - i, pa, v).
    """
    inc, pa, vrot = inc.copy(), pa.copy(), vrot.copy()
    neg = inc < 0
    inc[neg], pa[neg] = -inc[neg], pa[neg] + 180.0
    inc = np.mod(inc, 180.0)
    inc = np.where(inc > 90.0, 180.0 - inc, inc)
    neg = vrot < 0
    vrot[neg], pa[neg] = -vrot[neg], pa[neg] + 180.0
    return inc, np.mod(pa, 360.0), vrot


def _angle_median(a, ref):
    """Median of angles (deg) measured as offsets from ``ref``, result in [0, 360)."""
    d = (np.asarray(a) - ref + 180.0) % 360.0 - 180.0
    return float(np.mod(ref + np.median(d), 360.0))


def fit_2dfit(mom1, pixel_scale_arcsec, guess, ring_width_arcsec=None,
              free="VROT INC PA VSYS", workdir=None, *, beam_fwhm_arcsec=None,
              r_max_arcsec=None, side="B", wfunc=2, threads=1, keep_log=False):
    """Fit a velocity field with 3D-Barolo's 2DFIT.

    Parameters
    ----------
    mom1 : (ny, nx) array
        Velocity field in km/s, NaN where there is no data. North = +row,
        East = -column, 0-based pixels.
    pixel_scale_arcsec : float
        Pixel size in arcsec.
    guess : dict
        First guesses, as a user would give them: ``x_center_pix``,
        ``y_center_pix`` (0-based), ``v_sys`` (km/s), ``inclination`` (deg),
        ``pa`` (deg, receding side, North through East) and ``v_rot`` (km/s,
        a number or one value per ring). Fixed parameters stay at these.
    ring_width_arcsec : float, optional
        Ring width; default the beam FWHM if ``beam_fwhm_arcsec`` is given,
        else 2 pixels. Rings are centred on (k + 1/2) * width.
    free : str
        BBarolo FREE string: any of VROT INC PA VSYS XPOS YPOS VRAD.
    workdir : str, optional
        Directory for BBarolo's files (kept). Default: a temporary directory,
        removed afterwards.
    beam_fwhm_arcsec : float, optional
        Written to the FITS header (2DFIT itself ignores the beam).
    r_max_arcsec : float, optional
        Outer edge of the last ring; default the largest sky-plane distance
        of a finite pixel from the guessed centre.
    side : {"B", "R", "A"}
        Fit both halves, the receding or the approaching half.
    wfunc : {0, 1, 2}
        Azimuthal weight: uniform, |cos theta|, cos^2 theta.
    threads : int
        OpenMP threads for BBarolo (rings are fitted in parallel).
    keep_log : bool
        If true, return BBarolo's captured terminal output as ``log``.

    Returns
    -------
    dict with ``radii`` (arcsec), ``vrot``, ``ring_inclination``, ``ring_pa``,
    ``ring_v_sys`` (per ring that converged; astrokin conventions), the ring
    medians ``inclination``, ``pa`` (0-360), ``v_sys``, ``x_center_pix``,
    ``y_center_pix``, ``n_rings`` (attempted), ``n_failed``, and
    ``wall_time_s`` (whole call: FITS writing, fit, reading back).
    """
    t0 = time.perf_counter()
    from pyBBarolo import FitMod2D

    missing = [k for k in _GUESS_KEYS if k not in guess]
    if missing:
        raise KeyError(f"guess lacks {missing}")
    mom1 = np.asarray(mom1, dtype=float)
    if mom1.ndim != 2:
        raise ValueError("mom1 must be a 2D array")
    scale = float(pixel_scale_arcsec)
    x0 = _value(guess["x_center_pix"])
    y0 = _value(guess["y_center_pix"])
    vsys = _value(guess["v_sys"], "km/s")
    inc = _value(guess["inclination"], "deg")
    pa = _value(guess["pa"], "deg")
    vrot_guess = guess["v_rot"]
    if hasattr(vrot_guess, "to"):
        vrot_guess = vrot_guess.to("km/s").value

    if ring_width_arcsec is None:
        ring_width_arcsec = beam_fwhm_arcsec if beam_fwhm_arcsec is not None else 2.0 * scale
    width = float(ring_width_arcsec)
    if r_max_arcsec is None:
        yy, xx = np.nonzero(np.isfinite(mom1))
        if yy.size == 0:
            raise ValueError("mom1 has no finite pixels")
        r_max_arcsec = float(np.hypot(xx - x0, yy - y0).max()) * scale
    n_rings = max(int(np.floor(r_max_arcsec / width)), 1)
    # N + 1 radii -> N rings centred on the first N (see module docstring).
    radii = (np.arange(n_rings + 1) + 0.5) * width
    if np.ndim(vrot_guess) == 0:
        vrot_in = np.full(radii.size, float(vrot_guess))
    else:
        vrot_in = np.asarray(vrot_guess, dtype=float)
        if vrot_in.size != n_rings:
            raise ValueError(f"v_rot has {vrot_in.size} values for {n_rings} rings")
        vrot_in = np.append(vrot_in, vrot_in[-1])

    own_dir = workdir is None
    wdir = tempfile.mkdtemp(prefix="barolo2d_") if own_dir else os.path.abspath(workdir)
    os.makedirs(wdir, exist_ok=True)
    fitsname = os.path.join(wdir, "mom1.fits")
    log_path = os.path.join(wdir, "bbarolo.log")
    cwd = os.getcwd()
    try:
        _write_fits(fitsname, mom1, scale, beam_fwhm_arcsec)
        # pyBBarolo writes rings.txt (and NONEmap_1st.fits) in the current
        # directory, so work inside wdir. Not thread-safe (process-wide cwd).
        os.chdir(wdir)
        with _silenced(log_path):
            f = FitMod2D(fitsname)
            f.inp.fapy = None  # astropy handle pyBBarolo opens and never uses here
            # BBarolo reads NaN blanks as 0 km/s: put the blanks back in its array
            # (a view of the C++ cube), or every blank pixel is a data point at 0.
            f.inp.data[0][~np.isfinite(mom1)] = np.nan
            f.init(radii=radii, xpos=x0, ypos=y0, vsys=vsys, vrot=vrot_in,
                   inc=inc, phi=pa)
            f.set_options(free=free, side=side, wfunc=wfunc, mask="NONE")
            out = f.compute(threads=int(threads))
            del f
        log = open(log_path).read() if keep_log else None
    finally:
        os.chdir(cwd)
        if own_dir:
            shutil.rmtree(wdir, ignore_errors=True)

    out = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in out.items()}
    ok = np.isfinite(out["vrot"]) & np.isfinite(out["inc"]) & np.isfinite(out["phi"])
    r_inc, r_pa, r_vrot = _fold(out["inc"][ok], out["phi"][ok], out["vrot"][ok])
    result = {
        "radii": out["rad"][ok],
        "vrot": r_vrot,
        "ring_inclination": r_inc,
        "ring_pa": r_pa,
        "ring_v_sys": out["vsys"][ok],
        "n_rings": int(n_rings),
        "n_failed": int((~ok).sum()),
    }
    if ok.any():
        result.update(
            inclination=float(np.median(r_inc)),
            pa=_angle_median(r_pa, pa),
            v_sys=float(np.median(out["vsys"][ok])),
            x_center_pix=float(np.median(out["xpos"][ok])),
            y_center_pix=float(np.median(out["ypos"][ok])),
        )
    else:
        result.update(inclination=np.nan, pa=np.nan, v_sys=np.nan,
                      x_center_pix=np.nan, y_center_pix=np.nan)
    if keep_log:
        result["log"] = log
    result["wall_time_s"] = time.perf_counter() - t0
    return result


def _write_cube(path, cube, velocities, pixel_scale_arcsec, beam):
    """A ``(nv, ny, nx)`` cube as FITS: RA/Dec (East = -column), VRAD in m/s, the beam."""
    from astropy.io import fits

    nv, ny, nx = cube.shape
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"], h["CTYPE3"] = "RA---SIN", "DEC--SIN", "VRAD"
    h["CUNIT1"], h["CUNIT2"], h["CUNIT3"] = "deg", "deg", "m/s"
    h["CDELT1"] = -pixel_scale_arcsec / 3600.0
    h["CDELT2"] = pixel_scale_arcsec / 3600.0
    h["CDELT3"] = float(velocities[1] - velocities[0]) * 1e3
    h["CRPIX1"], h["CRPIX2"], h["CRPIX3"] = (nx - 1) / 2.0 + 1.0, (ny - 1) / 2.0 + 1.0, 1.0
    h["CRVAL1"], h["CRVAL2"], h["CRVAL3"] = 180.0, 0.0, float(velocities[0]) * 1e3
    h["EQUINOX"] = 2000.0
    h["BUNIT"] = "JY/BEAM"
    h["RESTFREQ"] = 1.4204058e9
    h["BMAJ"], h["BMIN"], h["BPA"] = beam[0] / 3600.0, beam[1] / 3600.0, float(beam[2])
    fits.writeto(path, np.asarray(cube, dtype=np.float32), h, overwrite=True)


def fit_3dfit(cube, velocities, pixel_scale_arcsec, guess, beam, *, ring_width_arcsec=None,
              free="VROT VDISP INC PA VSYS", r_max_arcsec=None, threads=1, workdir=None):
    """Fit a data cube with 3D-Barolo's 3DFIT, from a user's first guesses.

    Parameters
    ----------
    cube : (nv, ny, nx) array
        Intensities; North = +row, East = -column.
    velocities : (nv,) array
        Channel velocities (km/s), equally spaced.
    pixel_scale_arcsec : float
    guess : dict
        As for `fit_2dfit` (``x_center_pix``, ``y_center_pix``, ``v_sys``,
        ``inclination``, ``pa``, ``v_rot``); the centre stays fixed.
    beam : tuple
        ``(bmaj, bmin, bpa)``: arcsec, arcsec, deg (North through East).
    ring_width_arcsec : float, optional
        Default: the beam's major axis.
    free : str
        BBarolo's FREE string.
    r_max_arcsec : float, optional
        Outer edge of the rings; default the farthest pixel with emission in
        the cube's moment-0 above 3 per cent of its peak.
    threads : int
    workdir : str, optional
        Kept when given; else a temporary directory, removed.

    Returns
    -------
    dict with ``radii``, ``vrot``, ``vdisp``, ``ring_inclination``, ``ring_pa``
    (astrokin conventions), the ring medians ``inclination``, ``pa``, ``v_sys``,
    and ``wall_time_s``. 3DFIT's defaults otherwise: its own source-finding
    mask (SEARCH), azimuthal normalisation, two stages (regularised geometry).
    """
    t0 = time.perf_counter()
    from pyBBarolo import FitMod3D

    cube = np.asarray(cube, dtype=float)
    scale = float(pixel_scale_arcsec)
    x0, y0 = _value(guess["x_center_pix"]), _value(guess["y_center_pix"])
    width = float(ring_width_arcsec or beam[0])
    if r_max_arcsec is None:
        mom0 = np.nansum(cube, axis=0)
        yy, xx = np.nonzero(mom0 > 0.03 * np.nanmax(mom0))
        r_max_arcsec = float(np.hypot(xx - x0, yy - y0).max()) * scale
    n_rings = max(int(np.floor(r_max_arcsec / width)), 2)
    radii = (np.arange(n_rings) + 0.5) * width
    own_dir = workdir is None
    wdir = tempfile.mkdtemp(prefix="barolo3d_") if own_dir else os.path.abspath(workdir)
    os.makedirs(wdir, exist_ok=True)
    fitsname = os.path.join(wdir, "cube.fits")
    cwd = os.getcwd()
    try:
        _write_cube(fitsname, cube, velocities, scale, beam)
        os.chdir(wdir)
        with _silenced(os.path.join(wdir, "bbarolo.log")):
            f = FitMod3D(fitsname)
            f.init(radii=radii, xpos=x0, ypos=y0, vsys=_value(guess["v_sys"]),
                   vrot=_value(guess["v_rot"]), vdisp=10.0, vrad=0.0, z0=0.0,
                   inc=_value(guess["inclination"]), phi=_value(guess["pa"]))
            f.set_options(mask="SEARCH", free=free, wfunc=2, outfolder=wdir, distance=10.0)
            rings, _ = f.compute(threads=int(threads))
            del f
    finally:
        os.chdir(cwd)
        if own_dir:
            shutil.rmtree(wdir, ignore_errors=True)
    rings = np.atleast_2d(rings)
    # rings_final*.txt: RAD(Kpc) RAD(arcs) VROT DISP INC P.A. Z0(pc) Z0(arcs) DENS XPOS
    # YPOS VSYS VRAD
    rad, vrot, vdisp, inc, pa, vsys = (rings[:, k] for k in (1, 2, 3, 4, 5, 11))
    ok = np.isfinite(vrot) & np.isfinite(inc) & np.isfinite(pa)
    r_inc, r_pa, r_vrot = _fold(inc[ok], pa[ok], vrot[ok])
    result = {"radii": rad[ok], "vrot": r_vrot, "vdisp": vdisp[ok], "ring_inclination": r_inc,
              "ring_pa": r_pa, "n_rings": int(n_rings)}
    if ok.any():
        result.update(inclination=float(np.median(r_inc)), pa=_angle_median(r_pa, guess["pa"]),
                      v_sys=float(np.median(vsys[ok])))
    else:
        result.update(inclination=np.nan, pa=np.nan, v_sys=np.nan)
    result["wall_time_s"] = time.perf_counter() - t0
    return result
