"""Regenerate the bundled example galaxy: ``python -m astrokin.examples.make_example_data``.

A KinMS simulation (the paper's independent simulator, not astrokin's own
renderer) of a CO disc observed at 0.5"/pixel with a 1.6"x1.2" beam: an
exponential disc (scale length 4"), an arctan rotation curve (v_max 220 km/s,
r_turn 1.5"), inclination 55 deg, PA 125 deg, systemic velocity 1350 km/s,
centred 0.75" West and 0.5" North of the map centre. The cube gets
beam-correlated noise (peak S/N ~25 per channel) and is clipped with a
smoothed 3-sigma mask (its largest connected region) before taking moments,
as real moment maps are. The
truth is written into the FITS headers (``TRUE_*`` keywords). Requires
``kinms``; writes ``astrokin/data/examples/example_mom0.fits`` and
``example_mom1.fits``.
"""

import pathlib

import numpy as np
from astropy.io import fits
from scipy import ndimage

from astrokin._io import atomic_path

__all__ = ["TRUTH", "main"]

TRUTH = dict(inclination=55.0, pa=125.0, r_scale=4.0, r_turn=1.5, v_max=220.0, v_sys=1350.0,
             x_0=0.75, y_0=0.5)
N, CELL, DV = 64, 0.5, 10.0
BEAM = (1.6, 1.2, 20.0)  # bmaj, bmin (arcsec), bpa (deg, North through East)
_KEYWORDS = {"TRUE_INC": "inclination", "TRUE_PA": "pa", "TRUE_RSC": "r_scale",
             "TRUE_RTU": "r_turn", "TRUE_VMX": "v_max", "TRUE_VSY": "v_sys", "TRUE_X0": "x_0",
             "TRUE_Y0": "y_0"}


def _header(kind):
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---SIN", "DEC--SIN"
    h["CRVAL1"], h["CRVAL2"] = 187.5, 8.0
    h["CRPIX1"], h["CRPIX2"] = (N - 1) / 2 + 1, (N - 1) / 2 + 1
    h["CDELT1"], h["CDELT2"] = -CELL / 3600, CELL / 3600
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["RADESYS"], h["EQUINOX"] = "ICRS", 2000.0
    h["BMAJ"], h["BMIN"], h["BPA"] = BEAM[0] / 3600, BEAM[1] / 3600, BEAM[2]
    h["BUNIT"] = "Jy km s-1 beam-1" if kind == "mom0" else "km/s"
    h["OBJECT"] = "astrokin example (KinMS)"
    for key, name in _KEYWORDS.items():
        h[key] = (TRUTH[name], f"true {name} of the simulated disc")
    return h


def main(outdir=None):
    """Simulate the example galaxy with KinMS and write its moment maps."""
    from kinms import KinMS

    rng = np.random.default_rng(2021)
    t = TRUTH
    nv = int(2 * (t["v_max"] + 80) / DV) // 2 * 2
    radius = np.arange(0.0, 2 * N * CELL, 0.01)
    kin = KinMS(N * CELL, N * CELL, nv * DV, CELL, DV, [BEAM[0], BEAM[1], -BEAM[2]],
                nSamps=1_000_000, seed=3)
    # KinMS centres the disc on pixel n/2, half a pixel from the map centre (n-1)/2.
    cube = kin.model_cube(t["inclination"], t["pa"], gasSigma=8.0, sbRad=radius,
                          sbProf=np.exp(-radius / t["r_scale"]), velRad=radius,
                          velProf=2 / np.pi * t["v_max"] * np.arctan(radius / t["r_turn"]),
                          phaseCent=[t["x_0"] - CELL / 2, t["y_0"] - CELL / 2],
                          intFlux=30.0)
    cube = np.transpose(cube, (2, 1, 0))  # (v, y, x)
    sigma_px = np.sqrt(BEAM[0] * BEAM[1]) / CELL / 2.3548
    noise = ndimage.gaussian_filter(rng.standard_normal(cube.shape), (0, sigma_px, sigma_px))
    noise *= cube.max() / 25.0 / noise.std()
    noisy = cube + noise
    smooth = ndimage.gaussian_filter(noisy, (1.0, sigma_px, sigma_px))
    mask = smooth > 3.0 * ndimage.gaussian_filter(noise, (1.0, sigma_px, sigma_px)).std()
    # Keep the galaxy: the largest connected region of the mask (source finders
    # drop the small noise islands a plain clip leaves).
    labels, n_regions = ndimage.label(mask)
    if n_regions > 1:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n_regions + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    v = t["v_sys"] + (np.arange(nv) - nv / 2) * DV
    masked = np.where(mask, noisy, 0.0)
    mom0 = masked.sum(axis=0) * DV
    with np.errstate(invalid="ignore", divide="ignore"):
        mom1 = (masked * v[:, None, None]).sum(axis=0) * DV / mom0
    mom1[~(mask.any(axis=0) & (mom0 > 0))] = np.nan
    out = pathlib.Path(outdir or pathlib.Path(__file__).parents[1] / "data" / "examples")
    out.mkdir(parents=True, exist_ok=True)
    for name, data in (("mom0", mom0), ("mom1", mom1)):
        with atomic_path(out / f"example_{name}.fits", overwrite=True) as tmp:
            fits.PrimaryHDU(data.astype(np.float32), _header(name)).writeto(tmp, overwrite=True)
    print(f"wrote {out / 'example_mom0.fits'} and {out / 'example_mom1.fits'}")


if __name__ == "__main__":
    main()
