"""Shared fixtures of the survey tests: synthetic catalogues of FITS moment maps."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

torch = pytest.importorskip("torch")

#: Size of the synthetic catalogue (the issue asks for "a few hundred").
N_GALAXIES = 300
PIXEL_SCALE = 1.0  # arcsec


def header(beam, kind, ra=150.0, dec=2.0, n=40):
    """A celestial WCS (East to the left), the beam and the unit of a moment map."""
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---SIN", "DEC--SIN"
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CRPIX1"], h["CRPIX2"] = (n - 1) / 2 + 1, (n - 1) / 2 + 1
    h["CDELT1"], h["CDELT2"] = -PIXEL_SCALE / 3600, PIXEL_SCALE / 3600
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["RADESYS"] = "ICRS"
    h["BMAJ"], h["BMIN"], h["BPA"] = beam[0] / 3600, beam[1] / 3600, beam[2]
    h["BUNIT"] = "Jy km s-1 beam-1" if kind == "mom0" else "km/s"
    return h


def write_catalogue(directory, n=N_GALAXIES, seed=0, shape=(40, 40)):
    """``n`` synthetic galaxies as FITS pairs plus ``catalogue.ecsv`` (relative paths)."""
    from astrokin.models import ExponentialArctanDisk
    from astrokin.synthetic import BeamPrior, make_galaxies

    gals = make_galaxies(ExponentialArctanDisk(), n, shape=shape,
                         pixel_scale=PIXEL_SCALE * u.arcsec, seed=seed,
                         beam=BeamPrior(major=(1.5, 3) * u.pix, axis_ratio=(0.6, 1)),
                         noise=(10, 50), mask_snr=3, alias_order=0)
    rows = []
    for i in range(n):
        ra = 150.0 + 0.01 * i
        for kind, maps in (("mom0", gals.mom0), ("mom1", gals.mom1)):
            fits.PrimaryHDU(maps[i], header(gals.beams[i], kind, ra=ra, n=shape[0])).writeto(
                directory / f"gal{i:04d}_{kind}.fits")
        rows.append((f"G{i:04d}", f"gal{i:04d}_mom0.fits", f"gal{i:04d}_mom1.fits"))
    table = Table(rows=rows, names=("id", "mom0", "mom1"))
    table.write(directory / "catalogue.ecsv")
    return gals


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory):
    """Path of the catalogue of N_GALAXIES FITS pairs (shared; never modified by tests)."""
    directory = tmp_path_factory.mktemp("catalogue")
    write_catalogue(directory)
    return directory / "catalogue.ecsv"


def numeric_columns(table):
    """Names of the numeric columns of a result table."""
    return [c for c in table.colnames if np.asarray(table[c]).dtype.kind in "fiu"]
