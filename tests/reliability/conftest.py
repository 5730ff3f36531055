"""Shared fixtures of the reliability tests: small real maps and a tiny trained network."""

import pytest

torch = pytest.importorskip("torch")

from .helpers import BEAM, PIXEL_SCALE, galaxy_maps  # noqa: E402


@pytest.fixture(scope="session")
def maps():
    """One rendered galaxy: plain mom0 array and mom1 Quantity (km/s) with NaN outside."""
    return galaxy_maps()


@pytest.fixture(scope="session")
def tiny_fitter(maps):
    """A blind fitter trained for 2 epochs on one galaxy (for API behaviour, not accuracy)."""
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    fitter = NeuralKinematicFitter(mode="blind", epochs=2, learning_rate=1e-3, mc_samples=8,
                                   seed=1, progress=False)
    mom0, mom1 = maps
    fitter.train(ExponentialArctanDisk(), mom0, mom1, pixel_scale=PIXEL_SCALE, beam=BEAM)
    return fitter


@pytest.fixture(scope="session")
def network_file(tiny_fitter, tmp_path_factory):
    """A saved network (do not modify: copy it first)."""
    path = tmp_path_factory.mktemp("net") / "tiny.pt"
    tiny_fitter.save(path)
    return path
