"""Input parsing, normalisation, resampling and the parameter layout."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import NDData
from astropy.wcs import WCS

pytest.importorskip("torch")

from astrokin.fitting.parameters import ParameterLayout  # noqa: E402
from astrokin.fitting.preprocessing import (  # noqa: E402
    grid_to_input_pixels,
    parse_maps,
    prepare_batch,
)
from astrokin.models import ExponentialArctanDisk  # noqa: E402


def _wcs(n, cdelt_arcsec=0.5, flip=False):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    s = cdelt_arcsec / 3600
    w.wcs.cdelt = [s if flip else -s, s]
    return w


def _maps(ny=48, nx=48):
    y, x = np.mgrid[:ny, :nx]
    mom0 = np.exp(-np.hypot(x - (nx - 1) / 2, y - (ny - 1) / 2) / 6)
    mom1 = 1500.0 - 3.0 * (x - (nx - 1) / 2)
    mom1[mom0 < 0.05] = np.nan
    return mom0, mom1


def test_hdu_supplies_pixel_scale_and_beam():
    mom0, mom1 = _maps()
    header = _wcs(48).to_header()
    header["BMAJ"], header["BMIN"], header["BPA"] = 2 / 3600, 1 / 3600, 30.0
    h0 = fits.PrimaryHDU(mom0, header)
    h1 = fits.ImageHDU(mom1 * 1000, header)
    h1.header["BUNIT"] = "m/s"
    (obs,) = parse_maps(h0, fits.HDUList([fits.PrimaryHDU(), h1]))
    assert obs.pixel_scale == pytest.approx(0.5)
    assert obs.beam == pytest.approx((2.0, 1.0, 30.0))
    assert np.nanmax(obs.mom1) == pytest.approx(np.nanmax(mom1))  # m/s -> km/s
    assert obs.wcs is not None and not obs.flipped


def test_nddata_and_explicit_arguments_win():
    mom0, mom1 = _maps()
    nd0 = NDData(mom0, wcs=_wcs(48))
    nd1 = NDData(mom1, wcs=_wcs(48), unit=u.km / u.s)
    (obs,) = parse_maps(nd0, nd1, pixel_scale=0.25 * u.arcsec, beam=1 * u.arcsec)
    assert obs.pixel_scale == 0.25 and obs.beam == (1.0, 1.0, 0.0)


def test_flipped_wcs_is_mirrored():
    mom0, mom1 = _maps()
    (obs,) = parse_maps(mom0, mom1, pixel_scale=None) if False else parse_maps(
        fits.PrimaryHDU(mom0, _wcs(48, flip=True).to_header()),
        fits.PrimaryHDU(mom1, _wcs(48, flip=True).to_header()))
    assert obs.flipped
    np.testing.assert_array_equal(obs.mom1, mom1[:, ::-1])


def test_stacks_lists_and_per_galaxy_arguments():
    mom0, mom1 = _maps()
    obs = parse_maps(np.stack([mom0, mom0]), np.stack([mom1, mom1]) * u.km / u.s,
                     pixel_scale=[0.5, 1.0] * u.arcsec, beam=[None, 2 * u.arcsec])
    assert len(obs) == 2 and obs[1].pixel_scale == 1.0 and obs[0].beam is None
    small0, small1 = _maps(30, 40)
    obs = parse_maps([mom0, small0], [mom1, small1], pixel_scale=0.5 * u.arcsec)
    assert [o.shape for o in obs] == [(48, 48), (30, 40)]
    batch = prepare_batch(obs)
    assert batch["mom0"].shape == (2, 64, 64)
    assert batch["side"].tolist() == [48, 40]
    np.testing.assert_allclose(batch["pixel_scale"], [0.5 * 48 / 64, 0.5 * 40 / 64])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.ones((8, 8)), np.ones((8, 9))), {"pixel_scale": 1 * u.arcsec}, ValueError, "shapes"),
        ((np.ones((8, 8)), np.ones((8, 8))), {}, ValueError, "pixel scale"),
        ((np.ones((2, 8, 8)), np.ones((3, 8, 8))), {"pixel_scale": 1 * u.arcsec}, ValueError,
         "2 mom0 maps but 3"),
        ((np.ones(8), np.ones(8)), {"pixel_scale": 1 * u.arcsec}, ValueError, "2D map"),
        ((np.ones((8, 8)), np.ones((8, 8)) * u.kg), {"pixel_scale": 1 * u.arcsec},
         u.UnitsError, "velocity"),
        (("a", "b"), {"pixel_scale": 1 * u.arcsec}, FileNotFoundError, "mom0: no such file 'a'"),
        (({"a": 1}, np.ones((8, 8))), {"pixel_scale": 1 * u.arcsec}, TypeError,
         "must be a numpy array"),
        ((np.ones((8, 8)), np.full((8, 8), np.nan)), {"pixel_scale": 1 * u.arcsec},
         ValueError, "no finite"),
    ],
)
def test_invalid_input_messages(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        parse_maps(*args, **kwargs)


def test_normalisation_and_masks():
    mom0, mom1 = _maps(128, 128)
    (obs,) = parse_maps(mom0 * 7.0, mom1, pixel_scale=0.5 * u.arcsec, cutout=False)
    b = prepare_batch([obs])
    assert b["mom0"].max() == pytest.approx(1.0)
    valid = b["mask1"][0]
    assert 0.04 < valid.mean() < 0.09  # pi 18^2 / 128^2: NaNs of mom1 stay masked after resampling
    assert np.abs(b["mom1"][0][valid]).max() <= 1.0 + 1e-12
    assert np.all(b["mom1"][0][~valid] == 0)
    assert b["v_ref"][0] == pytest.approx(np.nanmedian(mom1))
    assert b["pixel_scale"][0] == 1.0 and b["half_width"][0] == 32.0


def test_stacked_normalisation_is_each_galaxys_own():
    """Galaxies of one shape are normalised as a stack, each by its own median and percentile.

    Every number equals that of the galaxy's batch of one, whatever the others.
    """
    rng = np.random.default_rng(3)
    maps0, maps1 = [], []
    for k in range(40):
        ny, nx = ((48, 48), (30, 40), (100, 100))[k % 3]
        mom0, mom1 = _maps(ny, nx)
        mom1 = mom1 + rng.normal(0, 5, mom1.shape) + 30 * k
        mom1[rng.random(mom1.shape) < 0.1 * (k % 4)] = np.nan  # odd and even valid counts
        maps0.append(mom0)
        maps1.append(mom1)
    obs = parse_maps(maps0, maps1, pixel_scale=0.5 * u.arcsec, reject_spurious=False)
    batch = prepare_batch(obs)
    assert len(batch["mom0"]) == 40
    counts = set()
    for i, o in enumerate(obs):
        alone = prepare_batch([o])
        for key in batch.keys():
            np.testing.assert_array_equal(batch[key][i], alone[key][0], err_msg=key)
        v = o.mom1[np.isfinite(o.mom1) & (o.mom0 > 1e-3 * np.nanmax(o.mom0))]
        counts.add(v.size % 2)
        assert batch["v_ref"][i] == np.median(v)
        assert batch["v_half"][i] == np.percentile(np.abs(v - np.median(v)), 99.0)
    assert counts == {0, 1}


def test_a_galaxy_without_usable_velocities_is_named():
    """The stack's error names the galaxy whose mom1 is valid only where mom0 is negligible."""
    mom0 = np.full((32, 32), 1e-6)
    mom0[16, 16] = 1.0
    mom1 = np.full((32, 32), 100.0)
    mom1[16, 16] = np.nan
    good0, good1 = _maps(32, 32)
    with pytest.warns(UserWarning):
        obs = parse_maps([good0, mom0], [good1, mom1], pixel_scale=1 * u.arcsec,
                         reject_spurious=False, cutout=False, names=["NGC 1", "NGC 2"])
    with pytest.raises(ValueError, match=r"mom1 \(NGC 2\) has no valid pixels where mom0 is above"):
        prepare_batch(obs)


def test_grid_to_input_pixels_inverts_padding():
    mom0, mom1 = _maps(30, 40)
    (obs,) = parse_maps(mom0, mom1, pixel_scale=1 * u.arcsec)
    b = prepare_batch([obs])
    x, y = grid_to_input_pixels(31.5, 31.5, obs, b["side"][0], b["pad_y"][0], b["pad_x"][0])
    # the centre of the 64x64 grid is the centre of the padded square
    assert float(x) == pytest.approx(19.5) and float(y) == pytest.approx(19.5 - 5)


def test_layout_free_fixed_tied_and_ranges():
    import torch

    model = ExponentialArctanDisk()
    model.fixed["x_0"] = True
    model.tied["r_turn"] = lambda m: 0.5 * m.r_scale
    layout = ParameterLayout(model)
    assert "x_0" not in layout.free_names and "r_turn" not in layout.free_names
    assert "amplitude" not in layout.free_names and "z_scale" not in layout.free_names
    slots = {s["name"]: s for s in layout.slots}
    assert slots["pa"]["kind"] == "angle" and slots["pa"]["encoder"] == "velocity"
    assert slots["inclination"]["encoder"] == "intensity"
    assert slots["r_scale"]["rule"] == "half_width"
    assert (slots["r_scale"]["lo"], slots["r_scale"]["hi"]) == (0.1, 0.35)
    out = {k: torch.zeros(2, n) for k, n in layout.n_outputs.items()}
    out["velocity"][:, 0] = 1.0  # cos PA = 1, sin PA = 0 -> PA = 0
    ctx = {"half_width": torch.tensor([16.0, 32.0]), "v_ref": torch.tensor([1000.0, 0.0]),
           "v_half": torch.tensor([200.0, 100.0])}
    params = layout.to_parameters(out, ctx, model.canonical_values())
    assert params["inclination"].tolist() == [50.0, 50.0]
    assert params["pa"].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(params["r_scale"], [16 * 0.225, 32 * 0.225])
    np.testing.assert_allclose(params["r_turn"], 0.5 * params["r_scale"])
    np.testing.assert_allclose(params["v_sys"], [1000.0, 0.0])
    assert params["x_0"].tolist() == [0.0, 0.0]


def test_layout_rejects_unusable_bounds():
    model = ExponentialArctanDisk()
    model.bounds["inclination"] = (50, 40)
    with pytest.raises(ValueError, match="empty bounds"):
        ParameterLayout(model)
    model = ExponentialArctanDisk()
    model.fixed.update({n: True for n in ("inclination", "r_scale")})
    with pytest.raises(ValueError, match="intensity encoder"):
        ParameterLayout(model)
