"""Real-observation paths: FITS files and headers, masks, spurious pixels, cut-outs, distances."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

torch = pytest.importorskip("torch")

from astrokin.fitting import NeuralKinematicFitter  # noqa: E402
from astrokin.fitting.preprocessing import parse_maps  # noqa: E402
from astrokin.models import ExponentialArctanDisk  # noqa: E402

KMS = u.km / u.s
PIX = 0.5  # arcsec
BEAM = 1.5  # arcsec


@pytest.fixture(scope="module")
def blind():
    return NeuralKinematicFitter.pretrained(mc_samples=200, seed=3, progress=False)


def _truth(**kw):
    p = dict(inclination=55 * u.deg, pa=130 * u.deg, r_scale=4 * u.arcsec,
             r_turn=1.5 * u.arcsec, v_max=230 * KMS, v_sys=1400 * KMS)
    p.update(kw)
    return ExponentialArctanDisk(**p)


def _maps(model, n=64):
    mom0, mom1 = model.render((n, n), PIX * u.arcsec, beam=BEAM * u.arcsec)
    return mom0.value, mom1.to_value(KMS)


def _header(n, *, cdelt1=-PIX / 3600, extra_spectral=True, bunit=None, rotation=0.0):
    """A WISDOM-like header: SIN projection, beam, and leftover spectral keywords."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cdelt = [cdelt1, PIX / 3600]
    if rotation:
        t = np.deg2rad(rotation)
        w.wcs.pc = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    h = w.to_header()
    h["BMAJ"], h["BMIN"], h["BPA"] = BEAM / 3600, BEAM / 3600, 0.0
    if extra_spectral:
        h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = (
            "VRAD", 1.67e6, 1e4, 1.0, "m/s")
        h["RESTFRQ"] = 2.30538e11
    if bunit:
        h["BUNIT"] = bunit
    return h


def _write(tmp_path, name, data, header):
    path = tmp_path / name
    fits.PrimaryHDU(data, header).writeto(path)
    return path


def test_fits_paths_equal_arrays_and_mom1_in_m_per_s(tmp_path, blind):
    """A FITS file (m/s, leftover spectral axis keywords) fits exactly as the arrays do."""
    mom0, mom1 = _maps(_truth())
    h = _header(64)
    p0 = _write(tmp_path, "m0.fits", mom0, h.copy())
    h1 = h.copy()
    h1["BUNIT"] = "m/s"
    p1 = _write(tmp_path, "m1.fits", mom1 * 1000.0, h1)
    before = (p0.read_bytes(), p1.read_bytes())
    blind(ExponentialArctanDisk(), p0, p1)
    from_files = blind.fit_info["table"]
    # the same maps as arrays, mirrored into the file's orientation (East to -column is
    # the standard one, so no mirroring here), with pixel scale and beam given
    blind(ExponentialArctanDisk(), mom0, mom1, pixel_scale=PIX * u.arcsec, beam=BEAM * u.arcsec)
    from_arrays = blind.fit_info["table"]
    for name in ("inclination", "pa", "v_max", "r_scale", "v_sys", "x_0", "y_0"):
        assert from_files[name][0].value == pytest.approx(from_arrays[name][0].value, abs=1e-6)
    assert (p0.read_bytes(), p1.read_bytes()) == before  # files untouched
    assert "center" in from_files.colnames
    assert abs(from_files["pa"][0].value - 130) < 5


def test_degenerate_axes_are_dropped_and_cubes_refused(tmp_path):
    mom0, mom1 = _maps(_truth(), n=32)
    h = _header(32)
    h4 = h.copy()
    h4["CTYPE4"], h4["CRVAL4"], h4["CDELT4"], h4["CRPIX4"] = "STOKES", 1.0, 1.0, 1.0
    p0 = _write(tmp_path, "m0.fits", mom0[None, None], h4)
    p1 = _write(tmp_path, "m1.fits", mom1[None, None], h4)
    (obs,) = parse_maps(p0, p1)
    assert obs.full_shape == (32, 32) and obs.pixel_scale == pytest.approx(PIX)
    assert obs.beam == pytest.approx((BEAM, BEAM, 0.0))
    cube = np.repeat(mom0[None], 5, axis=0)
    pc = _write(tmp_path, "cube.fits", cube, h)
    with pytest.raises(ValueError, match=r"spectral cube .* astrokin.cubes.moment_maps"):
        parse_maps(pc, pc)


def test_mom0_with_velocity_units_and_garbage_files(tmp_path):
    mom0, mom1 = _maps(_truth(), n=32)
    h = _header(32)
    p1 = _write(tmp_path, "m1.fits", mom1, _header(32, bunit="km/s"))
    with pytest.raises(u.UnitsError, match="mom0 is in velocity units.*swapped"):
        parse_maps(p1, p1)
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b"garbage" * 50)
    with pytest.warns(Warning), pytest.raises(ValueError, match="not a readable FITS file"):
        parse_maps(bad, p1)
    with pytest.raises(FileNotFoundError, match="no such file"):
        parse_maps(tmp_path / "missing.fits", p1)
    p0 = _write(tmp_path, "m0.fits", mom0, h)
    hh = _header(32)
    hh["CDELT2"] = 2 * hh["CDELT2"]
    with pytest.raises(ValueError, match="different pixel grids"):
        parse_maps(p0, _write(tmp_path, "ns1.fits", mom1, hh))
    with pytest.raises(ValueError, match="non-square pixels"):
        parse_maps(_write(tmp_path, "ns0.fits", mom0, hh), _write(tmp_path, "ns2.fits", mom1, hh))


@pytest.mark.parametrize("rotation", [0.0, 30.0])
@pytest.mark.parametrize("east_right", [False, True])
def test_pa_is_astronomical_whatever_the_wcs(blind, rotation, east_right):
    """The PA is N through E on the sky for East-left, East-right and rotated WCSs.

    The maps are made on the sky, independently of astrokin's frame handling:
    each pixel's offset East and North of the centre comes from the WCS
    (astropy's spherical offsets), and the model is evaluated there (its
    ``x`` runs West, ``y`` North).
    """
    truth_pa = 130.0
    model = _truth(pa=truth_pa * u.deg)
    h = _header(64, cdelt1=PIX / 3600 if east_right else -PIX / 3600, rotation=rotation)
    w = WCS(h).celestial
    yy, xx = np.mgrid[:64, :64]
    centre = w.pixel_to_world(31.5, 31.5)
    d_east, d_north = centre.spherical_offsets_to(w.pixel_to_world(xx, yy))
    mom0, mom1 = model(-d_east.to(u.arcsec), d_north.to(u.arcsec))
    mom1 = np.where(mom0.value > 1e-3 * mom0.value.max(), mom1.to_value(KMS), np.nan)
    hdus = fits.PrimaryHDU(mom0.value, h), fits.PrimaryHDU(mom1, h)
    (obs,) = parse_maps(*hdus)
    assert obs.flipped == east_right
    blind(ExponentialArctanDisk(), *hdus, beam=None)
    t = blind.fit_info["table"]
    pa = t["pa"][0].to_value(u.deg)
    assert abs((pa - truth_pa + 180) % 360 - 180) < 5
    # the kinematic centre lands on the sky position of the disc centre
    assert t["center"][0].separation(centre).to_value(u.arcsec) < 2 * PIX
    # a PA fixed by the user is a sky PA too: with it the other parameters stay right
    fixed = ExponentialArctanDisk(pa=truth_pa * u.deg, fixed={"pa": True})
    blind(fixed, *hdus, beam=None)
    t = blind.fit_info["table"]
    assert t["pa"][0].to_value(u.deg) == truth_pa
    assert abs(t["inclination"][0].to_value(u.deg) - 55) < 5
    assert abs(t["v_max"][0].to_value(KMS) - 230) < 30


def test_masks_from_arrays_pixel_and_sky_regions_and_files(tmp_path):
    from astropy.coordinates import SkyCoord
    from regions import CirclePixelRegion, CircleSkyRegion, PixCoord, Regions

    mom0, mom1 = _maps(_truth(), n=48)
    h = _header(48)
    hdu0, hdu1 = fits.PrimaryHDU(mom0, h), fits.PrimaryHDU(mom1, h)
    circle = CirclePixelRegion(PixCoord(23.5, 23.5), radius=10)
    inside = circle.to_mask(mode="center").to_image((48, 48)).astype(bool)
    kw = dict(reject_spurious=False, cutout=False)
    (by_array,) = parse_maps(hdu0, hdu1, mask=inside, **kw)
    (by_region,) = parse_maps(hdu0, hdu1, mask=circle, **kw)
    sky = CircleSkyRegion(WCS(h).celestial.pixel_to_world(23.5, 23.5), radius=10 * PIX * u.arcsec)
    (by_sky,) = parse_maps(hdu0, hdu1, mask=sky, **kw)
    path = tmp_path / "galaxy.reg"
    Regions([sky]).write(path, format="ds9")
    (by_file,) = parse_maps(hdu0, hdu1, mask=str(path), **kw)
    expected = np.flatnonzero(~inside)
    for obs in (by_array, by_region, by_sky, by_file):
        assert np.array_equal(obs.rejected["outside_mask"], expected)
        assert np.array_equal(np.isfinite(obs.mom1), inside & np.isfinite(mom1))
    (ex,) = parse_maps(hdu0, hdu1, exclude=[circle], **kw)
    assert np.array_equal(ex.rejected["excluded"], np.flatnonzero(inside))
    assert not np.isfinite(ex.mom1[inside]).any()
    with pytest.raises(ValueError, match="no celestial WCS"):
        parse_maps(mom0, mom1, pixel_scale=PIX * u.arcsec, mask=sky)
    with pytest.raises(ValueError, match=r"mask= has shape \(10, 10\)"):
        parse_maps(hdu0, hdu1, mask=np.ones((10, 10), bool))
    assert SkyCoord  # imported for the sky region


def test_spurious_pixels_are_rejected_and_recorded(blind):
    """Wild and spiky velocities (as in NGC0524) are removed; the fit matches the clean one."""
    mom0, mom1 = _maps(_truth())
    dirty = mom1.copy()
    wild = [(5, 40), (50, 12), (33, 33)]
    for (y, x), v in zip(wild, (48121.0, -3331.0, 9000.0), strict=True):
        dirty[y, x] = v
    spike = (20, 44)
    dirty[spike] += 400.0
    keep = dirty.copy()
    kw = dict(pixel_scale=PIX * u.arcsec, beam=BEAM * u.arcsec)
    blind(ExponentialArctanDisk(), mom0, mom1, **kw)
    clean = blind.fit_info["table"]
    fitted = blind(ExponentialArctanDisk(), mom0, dirty, **kw)
    robust = blind.fit_info["table"]
    rejected = blind.fit_info["rejected"][0]
    assert sorted(zip(*rejected["velocity_limit"], strict=True)) == sorted(wild)
    assert list(zip(*rejected["local_outliers"], strict=True)) == [spike]
    assert robust["n_rejected"][0] == 4
    assert np.array_equal(dirty, keep)  # the input is not modified
    for name, tol in (("inclination", 1.0), ("pa", 1.0), ("v_max", 5.0), ("v_sys", 2.0)):
        assert abs(robust[name][0].value - clean[name][0].value) < tol, name
    blind(ExponentialArctanDisk(), mom0, dirty, reject_spurious=False, **kw)
    naive = blind.fit_info["table"]
    assert naive["n_rejected"][0] == 0
    assert fitted.v_sys.unit == KMS


def test_cutout_finds_a_small_offset_galaxy_in_a_large_map(blind):
    """A galaxy filling a sixth of a 256x256 map, off centre, is cut out and fitted."""
    small = _truth(inclination=60 * u.deg, r_scale=3 * u.arcsec)
    mom0, mom1 = small.render((64, 64), PIX * u.arcsec, beam=BEAM * u.arcsec)
    big0, big1 = np.zeros((256, 256)), np.full((256, 256), np.nan)
    y0, x0 = 150, 40
    big0[y0:y0 + 64, x0:x0 + 64] = mom0.value
    big1[y0:y0 + 64, x0:x0 + 64] = np.where(mom0.value > 1e-3 * mom0.value.max(),
                                            mom1.value, np.nan)
    kw = dict(pixel_scale=PIX * u.arcsec, beam=BEAM * u.arcsec)
    (obs,) = parse_maps(big0, big1, **kw)
    assert obs.shape[0] < 100 and obs.full_shape == (256, 256)
    blind(ExponentialArctanDisk(), big0, big1, **kw)
    t = blind.fit_info["table"]
    assert t["x_center_pix"][0] == pytest.approx(x0 + 31.5, abs=1.0)
    assert t["y_center_pix"][0] == pytest.approx(y0 + 31.5, abs=1.0)
    assert abs(t["inclination"][0].value - 60) < 5
    # The network alone (refinement finds the galaxy in either) reads the cut-out
    # far better than the whole map.
    refine, blind.refine = blind.refine, False
    try:
        blind(ExponentialArctanDisk(), big0, big1, **kw)
        t = blind.fit_info["table"]
        blind(ExponentialArctanDisk(), big0, big1, cutout=False, **kw)
        uncut = blind.fit_info["table"]
    finally:
        blind.refine = refine
    assert abs(uncut["inclination"][0].value - 60) > abs(t["inclination"][0].value - 60)


def test_distance_gives_kpc_and_rotation_curve_band(blind):
    mom0, mom1 = _maps(_truth())
    kw = dict(pixel_scale=PIX * u.arcsec, beam=BEAM * u.arcsec)
    d = 16.5 * u.Mpc
    fitted = blind(ExponentialArctanDisk(), mom0, mom1, distance=d, **kw)
    t = blind.fit_info["table"]
    kpc_per_arcsec = (d * (1 * u.arcsec).to_value(u.rad)).to_value(u.kpc)
    assert t["r_scale_kpc"][0].to_value(u.kpc) == pytest.approx(
        t["r_scale"][0].to_value(u.arcsec) * kpc_per_arcsec, rel=1e-12)
    assert t["r_turn_kpc_std"][0] > 0 * u.kpc
    band = fitted.rotation_curve([0.2, 1.0, 3.0] * u.kpc)
    assert band["radius_arcsec"].to_value(u.arcsec) == pytest.approx(
        np.array([0.2, 1.0, 3.0]) / kpc_per_arcsec)
    assert np.all(band["v_rot_lower"] <= band["v_rot_median"])
    assert np.all(band["v_rot_median"] <= band["v_rot_upper"])
    assert np.all(band["v_rot_upper"] - band["v_rot_lower"] > 0 * KMS)
    # far out the curve is flat at v_max: the band's spread is v_max's
    far = fitted.rotation_curve([1e4] * u.arcsec)
    scale = (blind.fit_info["std_scale"] or {}).get("v_max", 1.0)  # the factors applied
    v_std = np.std(blind.fit_info["samples"]["v_max"].value) * scale
    assert far["v_rot_std"][0].to_value(KMS) == pytest.approx(v_std, rel=0.02)
    plain = fitted.rotation_curve([1.0, 2.0] * u.arcsec, band=False)
    assert plain.unit == KMS and plain.shape == (2,)
    with pytest.raises(u.UnitsError, match="need a distance"):
        _truth().rotation_curve(1 * u.kpc)
    with pytest.raises(ValueError, match="no Monte Carlo samples"):
        _truth().rotation_curve(1 * u.arcsec, band=True)
    with pytest.raises(u.UnitsError, match="distance must be a length"):
        blind(ExponentialArctanDisk(), mom0, mom1, distance=16.5, **kw)


def test_a_masked_array_keeps_its_mask():
    import numpy as np
    from astropy import units as u

    from astrokin.fitting.preprocessing import parse_maps

    y, x = np.mgrid[:40, :40] - 19.5
    mom0 = np.exp(-np.hypot(x, y) / 6)
    mom1 = 3.0 * x
    junk = np.zeros_like(mom1, dtype=bool)
    junk[:, :8] = True  # junk velocities under the mask
    masked = np.ma.masked_array(np.where(junk, 1e4, mom1), mask=junk)
    obs = parse_maps(mom0, masked, pixel_scale=1 * u.arcsec, reject_spurious=False,
                     cutout=False)[0]
    assert np.all(np.isnan(obs.mom1[:, :8])) and np.all(np.isfinite(obs.mom1[:, 8:]))
    assert not np.isnan(masked.data).any()  # the input is not modified
