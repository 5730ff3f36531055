"""The bad inputs astrokin is tried with, what each should get, and the docs table.

Each `Case` names the input, the public entry point, a call that feeds the bad
input (files are made in the current directory, so messages show short
names), and the exception type(s) it must raise. ``test_bad_inputs.py`` runs
them; running this module writes the table of :doc:`/reliability` from the
actual messages::

    python -m tests.reliability.bad_inputs docs/reliability_table.inc
"""

import contextlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
from astropy import units as u

PS = 1.0 * u.arcsec
BEAM = 2.0 * u.arcsec
KMS = u.km / u.s


@dataclass
class Case:
    what: str
    entry: str
    call: object
    expect: tuple
    mentions: str = ""  # the message must contain this (e.g. the file at fault)


def _maps(shape=(32, 32)):
    from .helpers import galaxy_maps

    return galaxy_maps(shape)


def _fit(mom0, mom1, model=None, **kw):
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    kw.setdefault("pixel_scale", PS)
    fitter = NeuralKinematicFitter(mode="solo", epochs=1, mc_samples=4, seed=0, progress=False)
    return fitter(model if model is not None else ExponentialArctanDisk(), mom0, mom1, **kw)


def _cut(a, radius=12.0):
    """A map blanked beyond ``radius`` pixels from its centre (a source with an edge)."""
    y, x = np.mgrid[:a.shape[0], :a.shape[1]]
    far = np.hypot(x - (a.shape[1] - 1) / 2, y - (a.shape[0] - 1) / 2) > radius
    return np.where(far, np.nan, a)


def _far_circle():
    from regions import CirclePixelRegion, PixCoord

    return CirclePixelRegion(PixCoord(500, 500), radius=5)


def _shifted(header, degrees):
    header["CRVAL2"] = header["CRVAL2"] + degrees
    return header


def _lying_fits(name):
    """A tiny FITS file whose header claims 100000 x 100000 pixels."""
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((2, 2), dtype=np.float32)).writeto(name, overwrite=True)
    with open(name, "rb") as fh:
        raw = fh.read()
    for k in (b"NAXIS1", b"NAXIS2"):
        raw = raw.replace(k + b"  =                    2", k + b"  =               100000")
    with open(name, "wb") as fh:
        fh.write(raw)
    return name


def _blind(mom0, mom1, **kw):
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    fitter = NeuralKinematicFitter.pretrained(mc_samples=4, seed=0, progress=False, refine=False)
    return fitter(ExponentialArctanDisk(), mom0, mom1, pixel_scale=PS, **kw)


def _parse(mom0, mom1, **kw):
    from astrokin.fitting.preprocessing import parse_maps

    return parse_maps(mom0, mom1, **kw)


def _write_fits(name, data, header=None):
    from astropy.io import fits

    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header).writeto(name, overwrite=True)
    return name


def _hdu(data, header):
    from astropy.io import fits

    return fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header)


def _network(name, edit):
    """A saved tiny network, damaged by ``edit(meta)``."""
    import json

    import torch

    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    if not os.path.exists("good.pt"):
        mom0, mom1 = _maps()
        fitter = NeuralKinematicFitter(mode="blind", epochs=1, seed=0, progress=False)
        fitter.train(ExponentialArctanDisk(), mom0, mom1, pixel_scale=PS, beam=BEAM)
        fitter.save("good.pt")
    raw = torch.load("good.pt", weights_only=True)
    meta = json.loads(raw["metadata"])
    edit(meta)
    torch.save({"metadata": json.dumps(meta), "state_dict": raw["state_dict"]}, name)
    return name


def _load(path, **kw):
    from astrokin.fitting import NeuralKinematicFitter

    return NeuralKinematicFitter.load(path, **kw)


def _cubes():
    try:
        from astrokin.cubes import moment_maps
    except ImportError:
        return None
    return moment_maps


def cases():
    """The list of `Case` (some build files in the current directory when called)."""
    from astropy.io import fits

    from astrokin.exceptions import NetworkFormatError
    from astrokin.models import ExponentialArctanDisk, GaussianRingDisk

    from .helpers import sky_header

    mom0, mom1 = _maps()
    m1 = mom1.value
    nan = np.full_like(mom0, np.nan)
    V, T, UE = ValueError, TypeError, u.UnitsError
    from astrokin.exceptions import DataQualityWarning as DQ

    out = [
        # ---- maps (parse_maps, used by every fit)
        Case("mom0 and mom1 of different shapes", "fitter call", lambda: _fit(mom0, m1[:, :-2]),
             (V,)),
        Case("mom1 all NaN", "fitter call", lambda: _fit(mom0, nan), (V,)),
        Case("mom0 all NaN", "fitter call", lambda: _fit(nan, m1), (V,)),
        Case("mom0 all zero", "fitter call", lambda: _fit(np.zeros_like(mom0), m1), (V,)),
        Case("mom0 negative everywhere", "fitter call", lambda: _fit(-mom0, m1), (V,)),
        # ---- odd data: a DataQualityWarning naming the galaxy
        Case("mom1 in m/s as plain numbers", "parse_maps (every fit)",
             lambda: _parse(mom0, m1 * 1000.0, pixel_scale=PS, beam=BEAM, names=["NGC 42"]),
             (V,), "m/s"),
        Case("mom1 x 1e30", "parse_maps (every fit)",
             lambda: _parse(mom0, m1 * 1e30, pixel_scale=PS, beam=BEAM), (V,),
             "no valid pixels left"),
        Case("one hot mom0 pixel (1e30)", "parse_maps (every fit)",
             lambda: _parse(np.where(np.arange(mom0.size).reshape(mom0.shape) == 500, 1e30,
                                     mom0), m1, pixel_scale=PS, beam=BEAM), (DQ,), "hot"),
        Case("a single valid velocity pixel", "parse_maps (every fit)",
             lambda: _parse(mom0, np.where(np.arange(m1.size).reshape(m1.shape) == 500, m1,
                                           np.nan), pixel_scale=PS, beam=BEAM), (DQ,),
             "Too few beams"),
        Case("a map holding two galaxies", "parse_maps (every fit)",
             lambda: _parse(np.hstack([_cut(mom0), _cut(mom0)]),
                            np.hstack([_cut(m1), _cut(m1) + 300.0]), pixel_scale=PS,
                            beam=BEAM), (DQ,), "More than one source"),
        Case("a beam of 1e-6 arcsec (outside the training range)", "fitter call (pre-trained)",
             lambda: _blind(mom0, m1, beam=1e-6 * u.arcsec), (DQ,), "training range"),
        Case("a beam of 20 arcsec on a 32 arcsec map", "fitter call (pre-trained)",
             lambda: _blind(mom0, m1, beam=20 * u.arcsec), (DQ,), "training range"),
        Case("a velocity field without a gradient", "parse_maps (every fit)",
             lambda: _parse(mom0, np.full_like(m1, 1500.0), pixel_scale=PS, beam=BEAM), (DQ,),
             "No velocity gradient"),
        Case("a mask region wholly outside the map", "fitter call",
             lambda: _fit(mom0, m1, mask=_far_circle()), (V,), "outside"),
        Case("mom0 and mom1 WCSs 1 deg apart", "fitter call",
             lambda: _fit(_hdu(mom0, sky_header()), _hdu(m1, _shifted(sky_header(), 1.0))),
             (V,), "apart"),
        Case("a header claiming 10^10 pixels", "fitter call",
             lambda: _fit(_lying_fits("lying.fits"), _lying_fits("lying.fits")), (V,),
             "claims 100000 x 100000"),
        Case("a tie returning NaN", "fitter call",
             lambda: _fit(mom0, m1, ExponentialArctanDisk(tied={"pa": lambda m: np.nan})),
             (V,), "tie of 'pa'"),
        Case("a tie returning a string", "fitter call",
             lambda: _fit(mom0, m1, ExponentialArctanDisk(tied={"pa": lambda m: "abc"})),
             (V,), "tie of 'pa'"),
        Case("a tie outside the bounds (inclination 500 deg)", "fitter call",
             lambda: _fit(mom0, m1, ExponentialArctanDisk(
                 tied={"inclination": lambda m: 500.0})), (V,), "outside its bounds"),
        Case("a fixed centre 150 map widths away", "fitter call",
             lambda: _fit(mom0, m1, ExponentialArctanDisk(
                 x_0=4800 * u.arcsec, bounds={"x_0": (None, None)}, fixed={"x_0": True})),
             (V,), "map widths"),
        Case("maps of 3x3 pixels", "fitter call", lambda: _fit(mom0[:3, :3], m1[:3, :3]), (V,)),
        Case("maps of 1x32 pixels", "fitter call", lambda: _fit(mom0[:1], m1[:1]), (V,)),
        Case("an empty list of maps", "fitter call", lambda: _fit([], []), (V,)),
        Case("an empty stack (0, 32, 32)", "fitter call",
             lambda: _fit(np.zeros((0, 32, 32)), np.zeros((0, 32, 32))), (V,), "no maps"),
        Case("a 4D array", "fitter call", lambda: _fit(mom0[None, None], m1[None, None]), (V,)),
        Case("a list holding a 3D stack", "fitter call",
             lambda: _fit([mom0[None].repeat(2, 0)], [m1[None].repeat(2, 0)]), (V,)),
        Case("a dict instead of a map", "fitter call", lambda: _fit({"a": 1}, m1), (T,)),
        Case("mom1 in Jy/beam (not a velocity)", "fitter call",
             lambda: _fit(mom0, m1 * u.Jy / u.beam), (UE,)),
        Case("mom0 in km/s (a velocity)", "fitter call", lambda: _fit(mom0 * KMS, mom1), (UE,)),
        Case("mom1 HDU with BUNIT = 'Jy/beam'", "fitter call",
             lambda: _fit(_hdu(mom0, sky_header()), _hdu(m1, sky_header(bunit="Jy/beam")),
                          pixel_scale=None), (UE,)),
        Case("mom0 HDU with BUNIT = 'km/s'", "fitter call",
             lambda: _fit(_hdu(mom0, sky_header(bunit="km/s")), _hdu(m1, sky_header()),
                          pixel_scale=None), (UE,)),
        Case("plain arrays, no pixel_scale", "fitter call",
             lambda: _fit(mom0, m1, pixel_scale=None), (V,)),
        Case("HDUs without a WCS, no pixel_scale", "fitter call",
             lambda: _fit(fits.PrimaryHDU(mom0), fits.PrimaryHDU(m1), pixel_scale=None), (V,)),
        Case("pixel_scale = 0 arcsec", "fitter call",
             lambda: _fit(mom0, m1, pixel_scale=0 * u.arcsec), (V,)),
        Case("pixel_scale = -1 arcsec", "fitter call",
             lambda: _fit(mom0, m1, pixel_scale=-1 * u.arcsec), (V,)),
        Case("pixel_scale = NaN arcsec", "fitter call",
             lambda: _fit(mom0, m1, pixel_scale=np.nan * u.arcsec), (V,)),
        Case("pixel_scale = inf arcsec", "fitter call",
             lambda: _fit(mom0, m1, pixel_scale=np.inf * u.arcsec), (V,)),
        Case("pixel_scale = 0.5 (no unit)", "fitter call",
             lambda: _fit(mom0, m1, pixel_scale=0.5), (T,)),
        Case("pixel_scale = 0.5 km/s", "fitter call",
             lambda: _fit(mom0, m1, pixel_scale=0.5 * KMS), (UE,)),
        Case("WCS with CDELT = 0", "fitter call",
             lambda: _fit(_hdu(mom0, sky_header(cdelt=0.0)), _hdu(m1, sky_header(cdelt=0.0)),
                          pixel_scale=None), (V,)),
        Case("beam = 0 arcsec", "fitter call", lambda: _fit(mom0, m1, beam=0 * u.arcsec), (V,)),
        Case("beam = -2 arcsec", "fitter call", lambda: _fit(mom0, m1, beam=-2 * u.arcsec), (V,)),
        Case("beam = NaN arcsec", "fitter call",
             lambda: _fit(mom0, m1, beam=np.nan * u.arcsec), (V,)),
        Case("beam with bmin > bmaj", "fitter call",
             lambda: _fit(mom0, m1, beam=(1 * u.arcsec, 2 * u.arcsec, 0 * u.deg)), (V,)),
        Case("beam = 2 (no unit)", "fitter call", lambda: _fit(mom0, m1, beam=2.0), (T,)),
        Case("beam = 2 km/s", "fitter call", lambda: _fit(mom0, m1, beam=2 * KMS), (UE,)),
        Case("header BMAJ < 0", "fitter call",
             lambda: _fit(_hdu(mom0, _with(sky_header(), BMAJ=-1e-3)),
                          _hdu(m1, _with(sky_header(), BMAJ=-1e-3)), pixel_scale=None), (V,)),
        # ---- FITS files
        Case("a FITS path that does not exist", "fitter call",
             lambda: _fit("missing_mom0.fits", "missing_mom1.fits"), (FileNotFoundError,)),
        Case("a corrupt FITS file (random bytes)", "fitter call",
             lambda: _fit(_garbage("corrupt.fits"), _write_fits("ok1.fits", m1)), (V,),
             "corrupt.fits"),
        Case("a truncated FITS file", "fitter call",
             lambda: _fit(_truncated("truncated.fits", mom0), _write_fits("ok1.fits", m1)), (V,),
             "truncated.fits"),
        Case("an empty file", "fitter call",
             lambda: _fit(_empty("empty.fits"), _write_fits("ok1.fits", m1)), (V,),
             "empty.fits"),
        Case("a FITS spectral cube (3D) given as mom0", "fitter call",
             lambda: _fit(_cube_file("cube.fits"), _write_fits("ok1.fits", m1)), (V,),
             "cube"),
        # ---- the model
        Case("a model with no free parameters", "fitter call",
             lambda: _fit(mom0, m1, model=ExponentialArctanDisk(
                 fixed={n: True for n in ExponentialArctanDisk.param_names})), (V,)),
        Case("a fixed value outside its bounds (inclination 5 deg, bounds 10-90)",
             "fitter call",
             lambda: _fit(mom0, m1, model=ExponentialArctanDisk(
                 inclination=5 * u.deg, fixed={"inclination": True})), (V,)),
        Case("a model class instead of an instance", "fitter call",
             lambda: _fit(mom0, m1, model=ExponentialArctanDisk), (T,)),
        Case("a free parameter with empty bounds (inclination 40-40 deg)", "fitter call",
             lambda: _fit(mom0, m1, model=ExponentialArctanDisk(
                 bounds={"inclination": (40, 40)})), (V,)),
        # ---- fitter options
        Case("device = 'gpu'", "NeuralKinematicFitter()", lambda: _fitter(device="gpu"), (V,)),
        Case("device = 'cuda' without CUDA", "NeuralKinematicFitter()",
             lambda: _fitter(device="cuda"), (V,)),
        Case("learning_rate = NaN", "NeuralKinematicFitter()",
             lambda: _fitter(learning_rate=float("nan")), (V,)),
        Case("epochs = -1", "NeuralKinematicFitter()", lambda: _fitter(epochs=-1), (V,)),
        Case("seed = 'abc'", "NeuralKinematicFitter()", lambda: _fitter(seed="abc"), (V,),
             "seed"),
        Case("epochs = 0 in a solo fit (an untrained network)", "fitter call",
             lambda: _fitter(mode="solo", epochs=0, progress=False)(
                 ExponentialArctanDisk(), mom0, m1, pixel_scale=PS), (V,), "epochs"),
        Case("mc_samples = 2.7 in the call", "fitter call",
             lambda: _fit(mom0, m1, mc_samples=2.7), (V,), "mc_samples"),
        Case("mc_samples = 1 (no spread)", "NeuralKinematicFitter()",
             lambda: _fitter(mc_samples=1), (V,), "mc_samples"),
        Case("mc_samples = 10**12 in a network file", "NeuralKinematicFitter.load",
             lambda: _load(_network("greedy.pt", lambda m: m["recipe"].update(
                 mc_samples=10**12))), (NetworkFormatError,), "mc_samples"),
        Case("mc_samples = 'many' in the call", "fitter call",
             lambda: _fit(mom0, m1, mc_samples="many"), (V,), "mc_samples"),
        Case("refine = 'no' (a string, not False)", "NeuralKinematicFitter()",
             lambda: _fitter(refine="no"), (T,), "refine must be True or False"),
        Case("keep_samples = 1 (not True)", "NeuralKinematicFitter()",
             lambda: _fitter(keep_samples=1), (T,), "keep_samples"),
        Case("fitter.refine = 'no' set after construction", "fitter attribute",
             lambda: setattr(_fitter(), "refine", "no"), (T,), "refine must be True or False"),
        Case("fitter.mode = 'sol' set after construction", "fitter attribute",
             lambda: setattr(_fitter(), "mode", "sol"), (V,), "mode must be one of"),
        Case("fitter.mc_samples = 1 set after construction", "fitter attribute",
             lambda: setattr(_fitter(), "mc_samples", 1), (V,), "mc_samples"),
        Case("inverted bounds (v_max 500-50 km/s)", "fitter call",
             lambda: _fit(mom0, m1, model=ExponentialArctanDisk(bounds={"v_max": (500, 50)})),
             (V,), "v_max"),
        # ---- the second moment
        Case("mom2 negative", "fitter call", lambda: _fit(mom0, m1, mom2=-np.abs(m1)), (V,),
             "mom2"),
        Case("mom2 in Jy/beam", "fitter call",
             lambda: _fit(mom0, m1, mom2=np.abs(m1) * u.Jy / u.beam), (UE,), "mom2"),
        Case("mom2_err without mom2", "fitter call",
             lambda: _fit(mom0, m1, mom2_err=np.ones_like(m1)), (V,), "mom2"),
        Case("mom2 of another shape", "fitter call",
             lambda: _fit(mom0, m1, mom2=np.ones((8, 8))), (V,), "mom2"),
        Case("BMAJ = 2.0 in a header (2 deg, not 2 arcsec)", "fitter call",
             lambda: _fit(_hdu(mom0, _beam_header(2.0, 2.0)), _hdu(m1, sky_header(bunit="km/s")),
                          pixel_scale=None), (V,), "larger than the whole map"),
        Case("BMAJ = 'big' in a header", "fitter call",
             lambda: _fit(_hdu(mom0, _beam_header("big", 1 / 3600)),
                          _hdu(m1, sky_header(bunit="km/s")), pixel_scale=None), (V,), "BMAJ"),
        Case("a boolean array as mom0", "fitter call", lambda: _fit(mom0 > 0, m1), (T,),
             "mom0"),
        Case("a complex array as mom1", "fitter call", lambda: _fit(mom0, m1 + 0j), (T,),
             "mom1"),
        Case("a datetime array as mom0", "fitter call",
             lambda: _fit(np.zeros(mom0.shape, dtype="datetime64[s]"), m1), (T,), "mom0"),
        Case("a single map and no mom1 (not a cube)", "fitter call",
             lambda: _fit(mom0, None), (T,), "mom1"),
        # ---- saved networks
        Case("a network file that does not exist", "NeuralKinematicFitter.load",
             lambda: _load("missing.pt"), (FileNotFoundError,)),
        Case("a truncated network file", "NeuralKinematicFitter.load",
             lambda: _load(_truncated_bytes("cut.pt", _network("full.pt", lambda m: None))),
             (NetworkFormatError,)),
        Case("a network file of random bytes", "NeuralKinematicFitter.load",
             lambda: _load(_garbage("noise.pt")), (NetworkFormatError,)),
        Case("a pickle that would run code", "NeuralKinematicFitter.load",
             lambda: _load(_evil("evil.pt")), (NetworkFormatError,)),
        Case("a network from a newer format (version 99)", "NeuralKinematicFitter.load",
             lambda: _load(_network("future.pt", lambda m: m.update(format_version=99))),
             (NetworkFormatError,)),
        Case("negative calibration factors in a network file", "NeuralKinematicFitter.load",
             lambda: _load(_network("negcal.pt", lambda m: m.update(
                 calibration={"inclination": -1.0, "pa": 1.0}))), (NetworkFormatError,),
             "positive"),
        Case("a slot range low > high in a network file", "NeuralKinematicFitter.load",
             lambda: _load(_network("slots.pt", lambda m: m["layout"]["slots"][0].update(
                 lo=90.0, hi=10.0))), (NetworkFormatError,), "low < high"),
        Case("a slot range 'wide' in a network file", "NeuralKinematicFitter.load",
             lambda: _load(_network("slots2.pt", lambda m: m["layout"]["slots"][0].update(
                 hi="wide"))), (NetworkFormatError,), "finite number"),
        Case("a network without format_version", "NeuralKinematicFitter.load",
             lambda: _load(_network("nover.pt", lambda m: m.pop("format_version"))),
             (NetworkFormatError,)),
        Case("a network for another model class", "NeuralKinematicFitter.load",
             lambda: _load(_network("other.pt", lambda m: None), model=GaussianRingDisk),
             (NetworkFormatError,)),
        Case("a network naming a module not imported", "NeuralKinematicFitter.load",
             lambda: _load(_network("foreign.pt", lambda m: m["layout"].update(
                 model_class="evil_module:Disk"))), (NetworkFormatError,)),
        Case("a slot range rule 'abc' in a network file", "NeuralKinematicFitter.load",
             lambda: _load(_network("rule.pt", lambda m: m["layout"]["slots"][0].update(
                 rule="abc"))), (NetworkFormatError,), "rule"),
        Case("a slot without its encoder in a network file", "NeuralKinematicFitter.load",
             lambda: _load(_network("noenc.pt", lambda m: m["layout"]["slots"][0].pop(
                 "encoder"))), (NetworkFormatError,), "encoder"),
        Case("param_names = 5 in a network file", "NeuralKinematicFitter.load",
             lambda: _load(_network("names.pt", lambda m: m["layout"].update(param_names=5))),
             (NetworkFormatError,), "param_names"),
        Case("loss_history = 'abc' in a network file", "NeuralKinematicFitter.load",
             lambda: _load(_network("loss.pt", lambda m: m.update(loss_history="abc"))),
             (NetworkFormatError,), "loss_history"),
        Case("a network path of None", "NeuralKinematicFitter.load", lambda: _load(None), (T,),
             "path"),
        Case("mode= given to load", "NeuralKinematicFitter.load",
             lambda: _load(_network("mode.pt", lambda m: None), mode="solo"), (T,), "mode"),
        Case("saving over an existing file", "NeuralKinematicFitter.save",
             lambda: _load(_network("exists.pt", lambda m: None)).save("exists.pt"),
             (FileExistsError,)),
        Case("saving into a missing directory", "NeuralKinematicFitter.save",
             lambda: _load(_network("x.pt", lambda m: None)).save("no/such/dir/net.pt"),
             (FileNotFoundError,)),
        # ---- rendering and beams
        Case("render shape (64,) (1D)", "model.render",
             lambda: ExponentialArctanDisk().render((64,), PS), (V,)),
        Case("render shape (2, 64, 64) (3D)", "model.render",
             lambda: ExponentialArctanDisk().render((2, 64, 64), PS), (V,)),
        Case("render shape (64.5, 64)", "model.render",
             lambda: ExponentialArctanDisk().render((64.5, 64), PS), (T,)),
        Case("render pixel_scale = 0", "model.render",
             lambda: ExponentialArctanDisk().render((16, 16), 0 * u.arcsec), (V,)),
        Case("render a model with a NaN parameter", "model.render",
             lambda: ExponentialArctanDisk(pa=np.nan * u.deg).render((16, 16), PS), (V,)),
        Case("render with a negative scale length", "model.render",
             lambda: ExponentialArctanDisk(r_scale=-5 * u.arcsec).render((16, 16), PS), (V,),
             "r_scale"),
        Case("rotation_curve at -5 arcsec", "model.rotation_curve",
             lambda: ExponentialArctanDisk().rotation_curve(-5 * u.arcsec), (V,), "r must"),
        Case("rotation_curve at 2D radii", "model.rotation_curve",
             lambda: ExponentialArctanDisk().rotation_curve(np.ones((2, 2)) * u.arcsec), (V,),
             "1D"),
        Case("beam bpa in km/s", "to_beam",
             lambda: _to_beam((2 * u.arcsec, 1 * u.arcsec, 3 * KMS)), (UE,)),
        # ---- masks
        Case("a mask circle at x = inf", "pixel_mask",
             lambda: _pixel_mask(_circle(np.inf, 5.0, 2.0), (16, 16)), (V,), "not a finite"),
        Case("a mask point region (no area)", "pixel_mask",
             lambda: _pixel_mask(_point(), (16, 16)), (T,), "no area"),
        Case("mask shape None", "pixel_mask",
             lambda: _pixel_mask(_circle(5.0, 5.0, 2.0), None), (T,), "shape"),
        Case("mask wcs = 'RA---TAN' (a string)", "pixel_mask",
             lambda: _pixel_mask(_circle(5.0, 5.0, 2.0), (16, 16), wcs="RA---TAN"), (T,),
             "wcs"),
        Case("region_format = 5", "pixel_mask",
             lambda: _pixel_mask(_region_file("five.reg"), (16, 16), region_format=5), (T,),
             "region_format"),
        Case("an empty region file", "pixel_mask",
             lambda: _pixel_mask(_empty("empty.reg"), (16, 16)), (V,), "holds no region"),
        # ---- calibration
        Case("calibrate level = '0.5' (a string)", "fitter.calibrate",
             lambda: _calibrate(level="0.5"), (T,), "level"),
        Case("calibrate parameters = 'inclination' (not a list)", "fitter.calibrate",
             lambda: _calibrate(parameters="inclination"), (T,), "parameters"),
        Case("calibrate truth with a NaN inclination", "fitter.calibrate",
             lambda: _calibrate(truth={"inclination": [np.nan]}), (V,), "finite"),
        Case("calibrate truth of strings", "fitter.calibrate",
             lambda: _calibrate(truth={"inclination": ["sixty"]}), (T,), "inclination"),
        Case("calibrate truth with two values for one galaxy", "fitter.calibrate",
             lambda: _calibrate(truth={"inclination": [50.0, 60.0]}), (V,), "2 value(s)"),
        # ---- catalogues
        Case("fit_catalogue batch_size = inf", "survey.fit_catalogue",
             lambda: _catalogue(batch_size=float("inf")), (V,), "batch_size"),
        Case("fit_catalogue n_workers = True", "survey.fit_catalogue",
             lambda: _catalogue(n_workers=True), (V,), "n_workers"),
        Case("fit_catalogue seed = 'abc'", "survey.fit_catalogue",
             lambda: _catalogue(seed="abc"), (V,), "seed"),
        Case("fit_catalogue log = 5", "survey.fit_catalogue", lambda: _catalogue(log=5),
             (T,), "log"),
        Case("fit_catalogue network that does not exist", "survey.fit_catalogue",
             lambda: _catalogue(network="missing.pt"), (FileNotFoundError,), "missing.pt"),
        Case("a catalogue map of junk bytes", "survey.fit_catalogue",
             lambda: _catalogue(junk=True), (V,), "corrupt.fits"),
        Case("fit_catalogue resume = 'no' (a string, not False)", "survey.fit_catalogue",
             lambda: _catalogue(resume="no"), (T,), "resume must be True or False"),
        # ---- the command line
        Case("astrokin pretrain --recipe of a FITS file", "astrokin pretrain",
             lambda: _recipe_file(_write_fits("recipe.fits", m1)), (V,), "not a JSON recipe"),
        Case("astrokin pretrain --recipe holding a JSON list", "astrokin pretrain",
             lambda: _recipe_file(_text("list.json", "[1, 2]")), (V,), "JSON list"),
        Case("astrokin pretrain --set 'shapes=[16384]'", "astrokin pretrain",
             lambda: _recipe_items("shapes=[16384]"), (V,), "MAX_MAP_SIDE"),
        Case("astrokin pretrain --set calibration_size=1000000000", "astrokin pretrain",
             lambda: _recipe_items("calibration_size=1000000000"), (V,), "calibration_size"),
        Case("astrokin pretrain --set 'snr_range=\"high\"'", "astrokin pretrain",
             lambda: _recipe_items('snr_range="high"'), (T,), "snr_range"),
        Case("a recipe file with noise_fraction = 1.5", "astrokin pretrain",
             lambda: _recipe_file(_text("noise.json", '{"noise_fraction": 1.5}')), (V,),
             "noise_fraction"),
        Case("a network whose stored recipe has shapes = 'abc' (--calibrate-only)",
             "astrokin pretrain", lambda: _recalibrate(_network(
                 "recipe.pt", lambda m: m.setdefault("recipe_pretraining", {}).update(
                     shapes="abc"))), (NetworkFormatError,), "recipe_pretraining"),
    ]
    moment_maps = _cubes()
    if moment_maps is not None:
        out += [
            Case("a 2D map given as a cube", "cubes.moment_maps",
                 lambda: moment_maps(_write_fits("flat.fits", mom0, sky_header())), (V,)),
            Case("a cube file that does not exist", "cubes.moment_maps",
                 lambda: moment_maps("missing_cube.fits"), (FileNotFoundError,)),
            Case("a corrupt cube file", "cubes.moment_maps",
                 lambda: moment_maps(_garbage("corrupt_cube.fits")), (V,), "corrupt_cube.fits"),
            Case("a cube of NaN", "cubes.moment_maps",
                 lambda: moment_maps(_cube_file("nan_cube.fits", fill=np.nan)), (V,)),
            Case("smooth = -1", "cubes.moment_maps",
                 lambda: moment_maps(_cube_file("c1.fits"), smooth=-1), (V,), "smooth"),
            Case("clip = -5", "cubes.moment_maps",
                 lambda: moment_maps(_cube_file("c2.fits"), clip=-5), (V,), "clip"),
            Case("spectral_smooth = 'wide'", "cubes.moment_maps",
                 lambda: moment_maps(_cube_file("c3.fits"), spectral_smooth="wide"), (V,),
                 "spectral_smooth"),
            Case("rms = 3 km/s (not a flux)", "cubes.moment_maps",
                 lambda: moment_maps(_cube_file("c4.fits"), rms=3 * KMS), (UE,), "rms"),
            Case("smooth = 1e9 beams (a 27 GB kernel)", "cubes.moment_maps",
                 lambda: moment_maps(_cube_file("c6.fits"), smooth=1e9), (V,), "wider than"),
            Case("spectral_smooth = 10**9 channels", "cubes.moment_maps",
                 lambda: moment_maps(_cube_file("c7.fits"), spectral_smooth=10**9), (V,),
                 "more than the cube's"),
            Case("a cube with CDELT3 = 0", "cubes.moment_maps",
                 lambda: moment_maps(_cube_file("c5.fits", cdelt3=0.0)), (V,), "CDELT3"),
        ]
    return out


def _with(header, **cards):
    header.update(cards)
    return header


def _beam_header(bmaj, bmin):
    from .helpers import sky_header

    h = sky_header()
    h["BMAJ"], h["BMIN"], h["BPA"] = bmaj, bmin, 0.0
    return h


def _fitter(**kw):
    from astrokin.fitting import NeuralKinematicFitter

    return NeuralKinematicFitter(**kw)


def _to_beam(beam):
    from astrokin.beams import to_beam

    return to_beam(beam)


def _circle(x, y, r):
    from regions import CirclePixelRegion, PixCoord

    return CirclePixelRegion(PixCoord(x, y), radius=r)


def _point():
    from regions import PixCoord, PointPixelRegion

    return PointPixelRegion(PixCoord(5, 5))


def _pixel_mask(spec, shape, **kw):
    from astrokin.masks import pixel_mask

    return pixel_mask(spec, shape, **kw)


def _region_file(name):
    return _text(name, "image\ncircle(5,5,2)\n")


def _text(name, text):
    with open(name, "w") as f:
        f.write(text)
    return name


def _calibrate(truth=None, **kw):
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    mom0, mom1 = _maps()
    fitter = NeuralKinematicFitter.load(_network("cal.pt", lambda m: None), progress=False,
                                        mc_samples=4, refine=False)
    truth = {"inclination": [55.0], "pa": [130.0]} if truth is None else truth
    return fitter.calibrate(ExponentialArctanDisk(), mom0, mom1, truth, pixel_scale=PS,
                            beam=BEAM, **kw)


def _catalogue(junk=False, **kw):
    from astrokin.survey import fit_catalogue

    mom0, mom1 = _maps()
    pairs = [(_write_fits("c_mom0.fits", mom0), _write_fits("c_mom1.fits", mom1.value))]
    if junk:
        pairs.append((_garbage("corrupt.fits"), "c_mom1.fits"))
    kw.setdefault("network", _network("survey.pt", lambda m: None))
    return fit_catalogue(pairs, "fits.ecsv", pixel_scale=PS, beam=BEAM, mc_samples=4,
                         refine=False, overwrite=True, return_table=False, **kw)


def _recipe_file(name):
    from astrokin.fitting.pretraining import read_recipe

    return read_recipe(name)


def _recipe_items(*items):
    from astrokin.fitting.pretraining import read_recipe

    return read_recipe(items=items)


def _recalibrate(network):
    from astrokin.fitting.pretraining import run

    return run({}, "recalibrated.pt", calibrate_only=network, progress=False,
               log=lambda line: None)


def _garbage(name):
    with open(name, "wb") as f:
        f.write(np.random.default_rng(1).bytes(6000))
    return name


def _empty(name):
    open(name, "wb").close()
    return name


def _truncated(name, data):
    _write_fits(name, data)
    return _truncated_bytes(name, name)


def _truncated_bytes(name, src):
    with open(src, "rb") as f:
        raw = f.read()
    with open(name, "wb") as f:
        f.write(raw[: len(raw) // 2 + 7])
    return name


def _cube_file(name, fill=None, cdelt3=10.0):
    from astropy.io import fits

    from .helpers import sky_header

    h = sky_header()
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = (
        "VRAD", 1000.0, cdelt3, 1.0, "km/s")
    data = np.random.default_rng(2).random((5, 32, 32)).astype(np.float32)
    if fill is not None:
        data[:] = fill
    fits.PrimaryHDU(data, h).writeto(name, overwrite=True)
    return name


class _Payload:
    def __reduce__(self):
        return (print, ("code from the file ran",))


def _evil(name):
    import torch

    torch.save({"metadata": _Payload(), "state_dict": {}}, name)
    return name


def outcome(case):
    """``(exception or warning type, or None; message)`` of one case, run in the current directory.

    A case that expects a warning class gets the warning of that class (the
    one naming ``case.mentions`` when several are given) when the call raises
    nothing.
    """
    wanted = tuple(k for k in case.expect if issubclass(k, Warning))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        try:
            case.call()
        except Exception as err:  # noqa: BLE001 - classifying is the point
            return type(err), str(err)
    hits = [w for w in record if wanted and issubclass(w.category, wanted)]
    # the warning that names the problem, when several warn
    hits.sort(key=lambda w: case.mentions not in str(w.message))
    if hits:
        return hits[0].category, str(hits[0].message)
    return None, ""


def _type_name(kind):
    if kind is None:
        return "(no error)"
    if kind is u.UnitsError:
        return "UnitsError"
    return kind.__name__


def table(results):
    """A reStructuredText list-table of ``(case, type, message)``."""
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 15 15 40",
        "",
        "   * - Bad input",
        "     - Entry point",
        "     - Exception",
        "     - Message",
    ]
    for case, kind, message in results:
        text = " ".join(message.split()).replace("`", "'") or "-"
        lines += [
            f"   * - {case.what}",
            f"     - ``{case.entry}``",
            f"     - ``{_type_name(kind)}``",
            f"     - ``{text}``",
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def in_temporary_directory():
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            yield tmp
        finally:
            os.chdir(old)


def main(argv=None):
    """Write the table of :doc:`/reliability` (``docs/reliability_table.inc``)."""
    argv = sys.argv[1:] if argv is None else argv
    target = os.path.abspath(argv[0] if argv else "docs/reliability_table.inc")
    import torch

    torch.set_num_threads(1)
    with in_temporary_directory():
        results = [(c, *outcome(c)) for c in cases()]
    header = (".. This table is generated from the actual messages by\n"
              "   ``python -m tests.reliability.bad_inputs docs/reliability_table.inc``;\n"
              "   do not edit it by hand.\n\n")
    with open(target, "w") as f:
        f.write(header + table(results))
    bad = [(c.what, _type_name(k)) for c, k, _ in results if k is None or k not in c.expect]
    print(f"wrote {target}: {len(results)} cases, {len(bad)} not as expected: {bad}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
