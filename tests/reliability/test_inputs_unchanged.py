"""Inputs are never modified: arrays, read-only arrays, Quantities, HDUs, files, models."""

import copy

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits

from astrokin.fitting import NeuralKinematicFitter
from astrokin.fitting.preprocessing import parse_maps
from astrokin.models import ExponentialArctanDisk

from .helpers import BEAM, PIXEL_SCALE, digest, file_state, sky_header

pytest.importorskip("torch")


def _noisy(maps):
    mom0, mom1 = maps
    mom0 = mom0.copy()
    mom1 = mom1.copy()
    mom0[:3] = np.nan  # missing rows, and a spurious velocity
    mom1[16, 16] = 5e4 * u.km / u.s
    return mom0, mom1


def _fitters(tiny_fitter):
    solo = NeuralKinematicFitter(mode="solo", epochs=1, mc_samples=4, seed=0, progress=False)
    return [tiny_fitter, solo]


def test_arrays_and_quantities_are_not_modified(maps, tiny_fitter):
    mom0, mom1 = _noisy(maps)
    stack0, stack1 = np.stack([mom0, mom0]), np.stack([mom1.value, mom1.value])
    inputs = [mom0, mom1, stack0, stack1]
    before = [digest(a) for a in inputs] + [mom1.unit]
    for fitter in _fitters(tiny_fitter):
        fitter(ExponentialArctanDisk(), mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
        fitter(ExponentialArctanDisk(), stack0, stack1, pixel_scale=PIXEL_SCALE, beam=BEAM)
        fitter(ExponentialArctanDisk(), [mom0, mom0[:, 2:]], [mom1, mom1[:, 2:]],
               pixel_scale=PIXEL_SCALE, beam=BEAM)
    parse_maps(mom0, mom1, pixel_scale=PIXEL_SCALE)
    assert [digest(a) for a in inputs] + [mom1.unit] == before


def test_read_only_arrays_work(maps, tiny_fitter):
    mom0, mom1 = _noisy(maps)
    mom0, mom1 = mom0.copy(), mom1.value.copy()
    mom0.flags.writeable = False
    mom1.flags.writeable = False
    fitted = tiny_fitter(ExponentialArctanDisk(), mom0, mom1, pixel_scale=PIXEL_SCALE,
                         beam=BEAM)
    assert np.isfinite(fitted.inclination.value)
    NeuralKinematicFitter(mode="solo", epochs=1, mc_samples=4, progress=False).train(
        ExponentialArctanDisk(), mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    quantity = mom1 * u.km / u.s  # a Quantity view of read-only data is read-only too
    tiny_fitter(ExponentialArctanDisk(), mom0, quantity, pixel_scale=PIXEL_SCALE, beam=BEAM)


@pytest.mark.parametrize("east_left", [True, False])  # East along +column gets mirrored
def test_hdus_are_not_modified(maps, tiny_fitter, east_left):
    mom0, mom1 = _noisy(maps)
    h0 = fits.PrimaryHDU(mom0.astype(np.float32), sky_header(east_left=east_left))
    h1 = fits.PrimaryHDU(mom1.value.astype(np.float32),
                         sky_header(bunit="km/s", east_left=east_left))
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(mom0, sky_header(east_left=east_left))])
    state = [(h.header.tostring(), digest(h.data)) for h in (h0, h1, hdul[1])]
    for fitter in _fitters(tiny_fitter):
        fitter(ExponentialArctanDisk(), h0, h1)
        fitter(ExponentialArctanDisk(), hdul, h1)
    parse_maps(h0, h1)
    assert [(h.header.tostring(), digest(h.data)) for h in (h0, h1, hdul[1])] == state


def test_files_are_not_modified(maps, tiny_fitter, tmp_path, network_file):
    mom0, mom1 = _noisy(maps)
    p0, p1 = tmp_path / "mom0.fits", tmp_path / "mom1.fits"
    fits.PrimaryHDU(mom0.astype(np.float32), sky_header()).writeto(p0)
    fits.PrimaryHDU(mom1.value.astype(np.float32), sky_header(bunit="km/s")).writeto(p1)
    state = [file_state(p) for p in (p0, p1, network_file)]
    for fitter in _fitters(tiny_fitter):
        fitter(ExponentialArctanDisk(), p0, p1)
        fitter(ExponentialArctanDisk(), str(p0), str(p1))
    NeuralKinematicFitter.load(network_file)
    assert [file_state(p) for p in (p0, p1, network_file)] == state


def test_models_are_not_modified(maps, tiny_fitter):
    mom0, mom1 = maps
    model = ExponentialArctanDisk(pa=123 * u.deg, fixed={"pa": True},
                                  bounds={"inclination": (20, 80)})
    before = (model.parameters.copy(), dict(model.fixed), dict(model.bounds),
              copy.deepcopy(model.tied))
    for fitter in _fitters(tiny_fitter):
        fitted = fitter(model, mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
        assert fitted is not model
        assert np.array_equal(model.parameters, before[0])
        assert (dict(model.fixed), dict(model.bounds)) == before[1:3]
