"""Fuzz the public entry points with odd arguments (hypothesis).

Each call must succeed or raise one of the documented types (ValueError,
TypeError, astropy.units.UnitsError; astrokin's own exceptions subclass
them) with a message that says something, and must leave its inputs exactly
as they were. Never an IndexError, KeyError, AttributeError or anything else
from deep inside numpy, torch or astropy.
"""

import contextlib
import signal
import uuid
import warnings

import numpy as np
import pytest
from astropy import units as u
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import digest, documented_outcome, galaxy_maps

pytest.importorskip("torch")

ALLOWED = (ValueError, TypeError, u.UnitsError)
#: Where a path is involved: also a missing or an existing file (docs/reliability.rst).
WITH_FILES = ALLOWED + (FileNotFoundError, FileExistsError)
# Derandomised: the same examples on every run, so CI cannot fail by chance (a
# random run once drew smooth=1e9 beams, whose 27 GB Gaussian kernel was then
# allocated; moment_maps now refuses smoothing wider than the cube).
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

mom0_ref, mom1_ref = galaxy_maps((16, 16))

#: Odd scalars: the values a script or a careless header gives.
ODD = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "abc", "2", "1e3", "nan", b"x", [], [1, 2], {}, (1,), object()]),
    st.sampled_from([2 * u.arcsec, -1 * u.arcsec, 0 * u.deg, 3 * u.km / u.s, 1 * u.Jy,
                     np.nan * u.arcsec, np.inf * u.arcsec, 1e-9 * u.arcsec, 5 * u.deg]),
)


def _outcome(call, allowed=ALLOWED):
    return documented_outcome(call, allowed)


@st.composite
def maps(draw):
    """A pair of maps of random size, values and dtype, with NaN and inf sprinkled in."""
    ny, nx = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m0 = rng.normal(1.0, draw(st.floats(0, 10)), (ny, nx))
    m1 = rng.normal(1500.0, draw(st.floats(0, 1e4)), (ny, nx))
    for m in (m0, m1):
        bad = rng.random((ny, nx)) < draw(st.floats(0, 1))
        m[bad] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300, 0.0]))
    kind = draw(st.sampled_from(["float", "float32", "int", "stack", "list", "quantity"]))
    if kind == "float32":
        m0, m1 = m0.astype(np.float32), m1.astype(np.float32)
    elif kind == "int":
        m0, m1 = (np.nan_to_num(m).clip(-1e9, 1e9).astype(np.int64) for m in (m0, m1))
    elif kind == "stack":
        m0, m1 = np.stack([m0, m0]), np.stack([m1, m1])
    elif kind == "list":
        m0, m1 = [m0, m0[: max(ny - 1, 1)]], [m1, m1[: max(ny - 1, 1)]]
    elif kind == "quantity":
        m1 = m1 * draw(st.sampled_from([u.km / u.s, u.m / u.s, u.Jy, u.one]))
    return m0, m1


def _copies(*values):
    return [v.copy() if hasattr(v, "copy") else [a.copy() for a in v] if isinstance(v, list)
            else v for v in values]


def _same(a, b):
    if isinstance(a, list):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


@SETTINGS
@given(maps(), ODD, ODD)
def test_parse_maps_takes_odd_maps_scales_and_beams(pair, pixel_scale, beam):
    from astrokin.fitting.preprocessing import parse_maps

    mom0, mom1 = pair
    before = _copies(mom0, mom1)
    scale = 1 * u.arcsec if pixel_scale is None else pixel_scale
    _outcome(lambda: parse_maps(mom0, mom1, pixel_scale=scale, beam=beam))
    assert _same(mom0, before[0]) and _same(mom1, before[1])


#: The constructor's boolean options: True or False only (``refine='no'`` is refused).
BOOLEAN_OPTIONS = ("progress", "keep_samples", "refine", "data_weighted")


@SETTINGS
@given(st.dictionaries(st.sampled_from(["epochs", "batch_size", "learning_rate", "mc_samples",
                                        "seed", "dropout", "lr_decay", "lr_decay_every",
                                        "mode", "device", *BOOLEAN_OPTIONS]),
                       st.one_of(ODD, st.sampled_from([True, False, np.True_, "no", "False",
                                                       0, 1, None])),
                       max_size=3))
def test_the_fitter_constructor_checks_every_argument(kwargs):
    from astrokin.fitting import NeuralKinematicFitter

    kind = _outcome(lambda: NeuralKinematicFitter(**{"progress": False, **kwargs}))
    # a value the constructor accepted must not fail later for being the wrong type
    if kind is None and kwargs:
        for name, value in kwargs.items():
            if name in ("epochs", "batch_size", "mc_samples", "lr_decay_every"):
                assert int(value) == value
            if name in BOOLEAN_OPTIONS:
                assert isinstance(value, (bool, np.bool_)), (name, value)
    bad = [name for name, value in kwargs.items()
           if name in BOOLEAN_OPTIONS and not isinstance(value, (bool, np.bool_))]
    if bad:
        assert kind is not None and issubclass(kind, (TypeError, ValueError)), (bad, kind)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["inclination", "pa", "r_scale", "v_max", "x_0",
                                        "z_scale", "r_turn"]),
                       st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=3),
       st.one_of(st.tuples(st.integers(-3, 40), st.integers(-3, 40)), ODD), ODD, ODD)
def test_render_takes_odd_parameters_shapes_scales_and_beams(values, shape, pixel_scale, beam):
    from astrokin.models import ExponentialArctanDisk

    def call():
        model = ExponentialArctanDisk(**values)
        model.render(shape=shape, pixel_scale=pixel_scale, beam=beam)

    _outcome(call)


@SETTINGS
@given(st.one_of(ODD, st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5)))
def test_rotation_curve_takes_odd_radii(radii):
    from astrokin.models import ExponentialArctanDisk

    model = ExponentialArctanDisk()
    r = radii * u.arcsec if isinstance(radii, list) else radii
    _outcome(lambda: model.rotation_curve(r))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["clip", "smooth", "spectral_smooth", "rms"]), ODD,
                       max_size=2),
       st.integers(0, 2**32 - 1))
def test_moment_maps_takes_odd_options(options, seed):
    pytest.importorskip("specutils")
    from astropy.io import fits

    from astrokin.cubes import moment_maps

    from .helpers import sky_header

    h = sky_header((12, 12))
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = (
        "VRAD", 1000.0, 10.0, 1.0, "km/s")
    h["BUNIT"] = "Jy/beam"
    data = np.random.default_rng(seed).random((6, 12, 12)).astype(np.float32)
    hdu = fits.PrimaryHDU(data, h)
    before = data.copy()
    _outcome(lambda: moment_maps(hdu, **options))
    assert np.array_equal(hdu.data, before)


# ----------------------------------------------------------------------
# pixel_mask, network files, calibrate, fit_catalogue and the command line.
# Fewer examples: each builds files or runs a (tiny) fit.
FEW = settings(max_examples=20, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])
#: Odd values as JSON gives them (metadata of network files, recipe overrides).
JSON_ODD = st.sampled_from([None, True, False, 0, -1, 1.5, 10**12, -1e308, 1e308, "", "abc",
                            "nan", [], [1, 2], ["a"], {}, {"a": 1}, [[1, 2], [3]], {"lo": None}])
PATHLIKE_ODD = st.sampled_from([None, 5, 1.5, b"x", [], {}, object(), True])


class _Hang(BaseException):
    """Raised by `_time_limit` (a BaseException: astrokin's handlers never swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds):
    """Fail a call that runs more than ``seconds`` (a hang, or nonsense taken as a huge job)."""
    def stop(signum, frame):
        raise _Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _bounded(call, seconds=30):
    def run():
        with _time_limit(seconds):
            return call()
    return run


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A directory for the files of every example (unique names per example)."""
    return tmp_path_factory.mktemp("fuzz")


def _name(scratch, suffix):
    return scratch / f"{uuid.uuid4().hex[:10]}{suffix}"


# ---- astrokin.masks.pixel_mask
REGION_TEXT = st.sampled_from([
    "", "junk", "\0\1\2\xff", "image\ncircle(5,5,2)\n", "# Region file format: DS9\nimage\n"
    "box(4,4,3,2,0)\n", "image\ncircle(5,5,\n", "image\ncircle(nan,nan,nan)\n",
    "image\ncircle(5,5,1e6)\n", "image\ncircle(1e300,1e300,1e300)\n", "image\ncircle(5,5,-2)\n",
    "image\npolygon(1,2)\n", "image\npoint(3,3)\n", "image\ntext(3,3) # text={hi}\n",
    "fk5\ncircle(150.0,2.0,3\")\n", "fk5\ncircle(400.0,95.0,3\")\n", "physical\nellipse(5,5,3)\n",
    "image\nannulus(5,5,2,1)\n", "#CRTF\ncircle[[5pix, 5pix], 2pix]\n", "image\n" * 3000,
])


@st.composite
def mask_specs(draw, scratch):
    from astropy.coordinates import SkyCoord
    from regions import (
        CirclePixelRegion,
        CircleSkyRegion,
        EllipsePixelRegion,
        PixCoord,
        PointPixelRegion,
        PolygonPixelRegion,
        Regions,
    )

    kind = draw(st.sampled_from(["bool", "array", "region", "sky", "regions", "file", "list",
                                 "odd"]))
    number = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e5, 1e300])
    if kind == "bool":
        dims = draw(st.lists(st.integers(0, 20), min_size=0, max_size=3))
        return np.random.default_rng(draw(st.integers(0, 9))).random(dims) > 0.5
    if kind == "array":
        dtype = draw(st.sampled_from(["int8", "float64", "complex128", "U1", "object", "uint8"]))
        return np.ones((12, 12), dtype=dtype)
    if kind == "region":
        x, y, r = draw(number), draw(number), draw(number)
        shape = draw(st.sampled_from(["circle", "ellipse", "polygon", "point"]))

        def make():
            if shape == "circle":
                return CirclePixelRegion(PixCoord(x, y), radius=r)
            if shape == "ellipse":
                return EllipsePixelRegion(PixCoord(x, y), width=r, height=2.0, angle=5 * u.deg)
            if shape == "polygon":
                return PolygonPixelRegion(PixCoord([x, 5.0, 1.0], [y, 9.0, 2.0]))
            return PointPixelRegion(PixCoord(x, y))
        try:
            return make()
        except (ValueError, TypeError):  # regions itself refused it
            return CirclePixelRegion(PixCoord(5, 5), radius=2)
    if kind == "sky":
        ra, dec = draw(st.floats(-400, 400)), draw(st.floats(-89, 89))
        return CircleSkyRegion(SkyCoord(ra, dec, unit="deg"), radius=draw(
            st.sampled_from([2 * u.arcsec, 1 * u.deg, 100 * u.deg])))
    if kind == "regions":
        return Regions([CirclePixelRegion(PixCoord(3, 3), radius=2),
                        CirclePixelRegion(PixCoord(8, 8), radius=draw(st.floats(0.1, 1e4)))])
    if kind == "file":
        suffix = draw(st.sampled_from([".reg", ".crtf", ".fits", ".txt", ""]))
        path = _name(scratch, suffix)
        if draw(st.booleans()):
            path.write_text(draw(REGION_TEXT), errors="surrogateescape")
        else:
            return draw(st.sampled_from([str(path), str(scratch), ""]))  # missing, a directory
        return str(path) if draw(st.booleans()) else path
    if kind == "list":
        return [CirclePixelRegion(PixCoord(3, 3), radius=2), draw(
            st.sampled_from([None, 1, "no_such.reg", [True, False], np.ones((12, 12), bool)]))]
    return draw(ODD)


@settings(FEW, max_examples=30)
@given(st.data())
def test_pixel_mask_takes_odd_specs(scratch, data):
    from astropy.wcs import WCS

    from astrokin.masks import pixel_mask

    from .helpers import sky_header

    spec = data.draw(mask_specs(scratch))
    wcs = WCS(sky_header((12, 12))) if data.draw(st.booleans()) else None
    region_format = data.draw(st.sampled_from([None, None, None, "ds9", "crtf", "xyz"]))
    before = digest(spec) if isinstance(spec, np.ndarray) else None
    _outcome(_bounded(lambda: pixel_mask(spec, (12, 12), wcs, region_format=region_format)),
             WITH_FILES)
    if before is not None:
        assert digest(spec) == before


@FEW
@given(st.one_of(st.tuples(st.integers(-2, 30), st.integers(-2, 30)),
                 st.sampled_from([(12,), (1, 2, 3), (12.5, 12), ("a", 3), (10**12, 10**12),
                                  (np.nan, 3), (True, 3), "ab"]), ODD),
       st.sampled_from(["sky", "none", "spectral", "odd", "cube"]),
       st.one_of(st.none(), st.sampled_from(["ds9", "crtf", "fits", "xyz", ""]), ODD),
       st.sampled_from(["circle", "sky", "array", "file"]))
def test_pixel_mask_takes_odd_shapes_wcs_and_formats(scratch, shape, wcs, region_format, kind):
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS
    from regions import CirclePixelRegion, CircleSkyRegion, PixCoord

    from astrokin.masks import pixel_mask

    from .helpers import sky_header

    wcs = {"sky": lambda: WCS(sky_header((12, 12))), "none": lambda: None,
           "spectral": lambda: WCS(naxis=1), "odd": lambda: "RA---TAN",
           "cube": lambda: WCS(naxis=3)}[wcs]()
    if kind == "file":
        spec = _name(scratch, ".reg")
        spec.write_text("image\ncircle(5,5,2)\n")
    else:
        spec = {"circle": CirclePixelRegion(PixCoord(5, 5), radius=2),
                "sky": CircleSkyRegion(SkyCoord(150.0, 2.0, unit="deg"), radius=3 * u.arcsec),
                "array": np.ones((12, 12), dtype=bool)}[kind]
    _outcome(_bounded(lambda: pixel_mask(spec, shape, wcs, region_format=region_format)),
             WITH_FILES)


def test_a_huge_region_is_rasterised_on_the_map_only():
    """A circle of radius 1e5 pixels covers a small map without a 40 GB bounding box."""
    from regions import CirclePixelRegion, PixCoord

    from astrokin.masks import pixel_mask

    big = CirclePixelRegion(PixCoord(5, 5), radius=1e5)
    with _time_limit(10):
        assert pixel_mask(big, (11, 13)).all()
        far = CirclePixelRegion(PixCoord(1e5 + 10, 5), radius=1e5)
        inside = pixel_mask(far, (11, 13))
    assert inside[:, -1].all() and not inside[:, 0].any()


# ---- NeuralKinematicFitter.load
def _meta_paths(node, prefix=()):
    """Every key path of a metadata tree (dict keys and list indices)."""
    if prefix:
        yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        yield from _meta_paths(value, prefix + (key,))


@pytest.fixture(scope="module")
def saved_network(network_file):
    """``(raw bytes, metadata dict, state dict, metadata key paths)`` of a small saved network."""
    import json

    import torch

    raw = torch.load(network_file, weights_only=True)
    meta = json.loads(raw["metadata"])
    return (network_file.read_bytes(), meta, raw["state_dict"],
            list(_meta_paths(meta)))


def _load_and_fit(path):
    """Load a network file; when it loads, it must also fit (blind, cheaply)."""
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    from .helpers import BEAM, PIXEL_SCALE

    fitter = NeuralKinematicFitter.load(path, progress=False, mc_samples=2, refine=False)
    try:
        fitter(ExponentialArctanDisk(), mom0_ref, mom1_ref, pixel_scale=PIXEL_SCALE, beam=BEAM)
    except ALLOWED as err:
        raise AssertionError(f"{path} loaded, but fitting with it fails: "
                             f"{type(err).__name__}: {err}") from None


def _load_outcome(path):
    from astrokin.exceptions import NetworkFormatError

    kind = _outcome(_bounded(lambda: _load_and_fit(path)), (NetworkFormatError,))
    assert kind in (None, NetworkFormatError)


@settings(FEW, max_examples=30)
@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["delete", "replace"]),
                          JSON_ODD), min_size=1, max_size=2))
def test_load_takes_network_files_with_damaged_metadata(scratch, saved_network, edits):
    import copy
    import json

    import torch

    _, meta, state, paths = saved_network
    meta = copy.deepcopy(meta)
    for index, action, value in edits:
        path = paths[index % len(paths)]
        parent = meta
        try:
            for key in path[:-1]:
                parent = parent[key]
            if action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, list) and action == "delete":
                parent.pop(path[-1])
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier edit removed or retyped it
            continue
    target = _name(scratch, ".pt")
    torch.save({"metadata": json.dumps(meta), "state_dict": state}, target)
    _load_outcome(target)


@FEW
@given(st.sampled_from(["truncate", "random", "flip"]), st.floats(0, 1),
       st.lists(st.integers(0, 2**31), min_size=1, max_size=8), st.binary(max_size=64))
def test_load_takes_truncated_random_and_flipped_bytes(scratch, saved_network, how, fraction,
                                                        positions, noise):
    raw = bytearray(saved_network[0])
    if how == "truncate":
        raw = raw[:int(fraction * len(raw))]
    elif how == "random":
        raw = bytearray(np.random.default_rng(positions[0]).bytes(int(fraction * 4096))) + noise
    else:
        for p in positions:
            raw[p % len(raw)] ^= 0xFF
    target = _name(scratch, ".pt")
    target.write_bytes(bytes(raw))
    _load_outcome(target)


@FEW
@given(st.one_of(PATHLIKE_ODD, st.sampled_from(["", ".", "missing.pt", "dir"])),
       st.dictionaries(st.sampled_from(["model", "device", "mc_samples", "seed", "mode"]), ODD,
                       max_size=2))
def test_load_takes_odd_paths_and_options(scratch, network_file, path, options):
    from astrokin.fitting import NeuralKinematicFitter

    path = {"dir": scratch, "missing.pt": scratch / "missing.pt"}.get(path, path) \
        if isinstance(path, str) else path
    _outcome(_bounded(lambda: NeuralKinematicFitter.load(path, progress=False, **options)),
             WITH_FILES)
    _outcome(_bounded(lambda: NeuralKinematicFitter.load(network_file, progress=False,
                                                         **options)))


# ---- NeuralKinematicFitter.calibrate
TRUTH = {"inclination": [55.0, 55.0, 55.0], "pa": [130.0, 130.0, 130.0],
         "v_max": [200.0, 200.0, 200.0] * u.km / u.s}


@FEW
@given(st.dictionaries(st.sampled_from(["inclination", "pa", "v_max", "vsini", "nope"]),
                       st.one_of(ODD, st.lists(st.floats(allow_nan=True, allow_infinity=True),
                                               max_size=4)), max_size=3),
       st.one_of(st.none(), st.none(), st.none(), st.sampled_from(
           ["inclination", ["pa"], ["nope"], [], [1], ("pa", "vsini")]), ODD),
       st.one_of(st.just(0.6827), st.just(0.6827), st.just(0.6827), st.just(0.9), ODD),
       st.sampled_from(["good", "good", "model class", "two galaxies", "odd"]))
def test_calibrate_takes_odd_truths_parameters_and_levels(network_file, truth, parameters,
                                                         level, what):
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.models import ExponentialArctanDisk

    from .helpers import BEAM, PIXEL_SCALE

    truth = {**TRUTH, **truth} if truth.get("nope") is None else truth
    fitter = NeuralKinematicFitter.load(network_file, progress=False, mc_samples=4,
                                        refine=False)
    model = ExponentialArctanDisk if what == "model class" else ExponentialArctanDisk()
    n = 2 if what == "two galaxies" else 3
    mom0 = np.stack([mom0_ref] * n) if what != "odd" else "mom0.fits"
    mom1 = np.stack([mom1_ref.value] * n)
    before = _copies(mom0, mom1) + [{k: np.copy(v) for k, v in truth.items()}]
    _outcome(_bounded(lambda: fitter.calibrate(model, mom0, mom1, truth, parameters=parameters,
                                               level=level, pixel_scale=PIXEL_SCALE,
                                               beam=BEAM)), WITH_FILES)
    assert (mom0 == before[0] if isinstance(mom0, str) else _same(mom0, before[0]))
    assert _same(mom1, before[1])
    assert all(np.array_equal(np.asarray(truth[k]), np.asarray(v), equal_nan=True)
               if np.asarray(v).dtype.kind in "fc" else True for k, v in before[2].items())


# ---- astrokin.survey.fit_catalogue
@pytest.fixture(scope="module")
def small_catalogue(tmp_path_factory):
    """Two galaxies as FITS pairs with WCS and beam, and a catalogue table of them."""
    from astropy.io import fits
    from astropy.table import Table

    from .helpers import sky_header

    directory = tmp_path_factory.mktemp("catalogue")
    mom0, mom1 = galaxy_maps((32, 32))
    for name in ("a", "b"):
        fits.PrimaryHDU(mom0.astype(np.float32), sky_header()).writeto(
            directory / f"{name}_mom0.fits")
        fits.PrimaryHDU(mom1.value.astype(np.float32), sky_header(bunit="km/s")).writeto(
            directory / f"{name}_mom1.fits")
    (directory / "junk.fits").write_bytes(b"SIMPLE  = junk" * 50)
    table = Table({"id": ["A", "B"], "mom0": [str(directory / "a_mom0.fits"),
                                              str(directory / "b_mom0.fits")],
                   "mom1": [str(directory / "a_mom1.fits"), str(directory / "b_mom1.fits")]})
    table.write(directory / "catalogue.ecsv")
    return directory, table


@st.composite
def catalogues(draw, directory, table):
    from astropy.table import Table

    kind = draw(st.sampled_from(["table", "table", "path", "pairs", "no column", "odd ids",
                                 "missing file", "junk file", "empty", "odd"]))
    t = Table(table, copy=True)
    if kind == "path":
        return draw(st.sampled_from([str(directory / "catalogue.ecsv"), directory / "nope.csv",
                                     str(directory), directory / "a_mom0.fits"]))
    if kind == "pairs":
        return draw(st.sampled_from([list(zip(t["mom0"], t["mom1"], strict=True)),
                                     [(t["mom0"][0],)], [("a", "b", "c")], [1, 2], "ab"]))
    if kind == "no column":
        t.remove_column(draw(st.sampled_from(["mom0", "mom1"])))
    elif kind == "odd ids":
        t["id"] = draw(st.sampled_from([[1, 2], ["A", "A"], ["", ""], [1.5, np.nan],
                                        ["x" * 500, "y"]]))
    elif kind in ("missing file", "junk file"):
        t["mom1"][1] = str(directory / ("nope.fits" if kind == "missing file" else "junk.fits"))
    elif kind == "empty":
        t = t[:0]
    elif kind == "odd":
        return draw(ODD)
    return t


@FEW
@given(st.data())
def test_fit_catalogue_takes_odd_catalogues_paths_and_options(scratch, network_file,
                                                              small_catalogue, data):
    import torch
    from astropy.table import Table

    from astrokin.survey import fit_catalogue

    directory, table = small_catalogue
    catalogue = data.draw(catalogues(directory, table))
    output = data.draw(st.one_of(
        st.just(_name(scratch, ".ecsv")), st.just(_name(scratch, ".ecsv")),
        st.sampled_from([_name(scratch, ".txt"), scratch / "no" / "such.ecsv", str(scratch),
                         _name(scratch, "")]), PATHLIKE_ODD))
    options = data.draw(st.dictionaries(st.sampled_from(
        ["batch_size", "mc_samples", "seed", "on_error", "max_in_flight", "pixel_scale", "beam",
         "device", "model", "log", "resume", "network", "scheduler", "n_workers",
         "threads_per_worker"]), ODD, max_size=2))
    # never start a cluster or connect to one: a value accepted for these is refused by
    # giving both (at most one of client=, scheduler= and n_workers= may be given)
    if "n_workers" in options or "scheduler" in options:
        options.update(n_workers=options.get("n_workers", 1), scheduler=options.get(
            "scheduler", "tcp://127.0.0.1:1"))
    options.setdefault("network", network_file)
    options.setdefault("mc_samples", 2)
    threads = torch.get_num_threads()
    before = Table(catalogue, copy=True) if isinstance(catalogue, Table) else None
    try:
        _outcome(_bounded(lambda: fit_catalogue(catalogue, output, refine=False,
                                                return_table=False, **options), 60),
                 WITH_FILES)
    finally:
        torch.set_num_threads(threads)
    if before is not None:
        assert before.colnames == catalogue.colnames
        assert all(list(before[c]) == list(catalogue[c]) for c in before.colnames
                   if before[c].dtype.kind != "f")


# ---- the command line (astrokin.cli.main), in process
def _cli(argv):
    """``(status, stderr)`` of ``astrokin ARGV``; argparse's usage errors give status 2."""
    import io

    from astrokin.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), \
            warnings.catch_warnings(), _time_limit(60):
        warnings.simplefilter("ignore")
        try:
            status = main([str(a) for a in argv])
        except SystemExit as stop:
            status = stop.code
            assert status == 2, f"argparse exited with {status!r}"
            assert "usage:" in err.getvalue() and "error:" in err.getvalue()
    return status, err.getvalue()


@st.composite
def command_lines(draw, directory, network):
    """An ``astrokin`` command line with at least one bad part (none runs a long job)."""
    good0, good1 = directory / "a_mom0.fits", directory / "a_mom1.fits"
    files = st.sampled_from([good0, good1, directory / "junk.fits", directory / "nope.fits",
                             directory, directory / "catalogue.ecsv", "", "-", "*.fits"])
    number = st.sampled_from(["0", "-1", "1.5", "abc", "nan", "inf", "1e9", "", "10**9"])
    command = draw(st.sampled_from(["fit", "fit", "fit", "train", "pretrain", "demo"]))
    out = str(_name(directory, ".ecsv" if command == "fit" else ".pt"))
    bad = {
        "fit": [["--mc-samples", draw(number)], ["--batch-size", draw(number)],
                ["--pixel-scale", draw(st.sampled_from(["0", "-1", "nan", "2 km/s", "abc"]))],
                ["--beam", draw(st.sampled_from(["0", "-2", "1,2", "3,2,abc", "2 Jy", "1,2,3"]))],
                ["--fix", draw(st.sampled_from(["pa", "=3", "nope=1", "pa=abc", "pa=1 Jy",
                                                "inclination=500"]))],
                ["--mask", draw(files)], ["--network", draw(files)], ["--mom2", draw(files)],
                ["--distance", draw(number)], ["--rings", draw(number)],
                ["--model", draw(st.sampled_from(["Disk", "", "TiltedRingDisk"]))],
                ["--device", draw(st.sampled_from(["gpu", "cuda:99", "", "cpu:x"]))],
                ["--corner"], ["--scheduler", "tcp://127.0.0.1:1", "--mode", "solo"],
                ["--workers", draw(number), "--figures", str(directory)],
                ["--catalogue", draw(files)], ["-o", draw(st.sampled_from(
                    ["x.txt", str(directory / "no" / "x.ecsv"), "", str(directory)]))],
                ["--rest-value", draw(st.sampled_from(["abc", "-1", "1 km/s"]))],
                ["--epochs", draw(number), "--mode", "solo"],
                ["--learning-rate", draw(number), "--mode", "solo"]],
        "train": [["--epochs", draw(number)], ["--init", draw(files)],
                  ["--learning-rate", draw(number)], ["--batch-size", draw(number)],
                  ["--catalogue", draw(files)], ["--seed", draw(number)]],
        "pretrain": [["--recipe", draw(files)],
                     ["--set", draw(st.sampled_from(["nope=1", "seed", "shapes=abc",
                                                     "supervised_steps='a'", "priors=[1,2]"]))],
                     ["--calibrate-only", draw(files)], ["--init", draw(files)],
                     ["--threads", draw(number)], ["--device", "gpu"]],
        "demo": [["--mc-samples", draw(number)], ["--device", "gpu"],
                 ["-o", str(directory / "no" / "such" / "dir"), "--mc-samples", "0"]],
    }[command]
    parts = draw(st.lists(st.sampled_from(bad), min_size=1, max_size=3, unique_by=str))
    argv = [command]
    if command in ("fit", "train"):
        argv += draw(st.sampled_from([[good0, good1], [good0], [draw(files), good1], []]))
        argv += ["-q", "--no-refine", "--mc-samples", "2"] if command == "fit" else ["-q"]
        argv += ["--network", network] if command == "fit" else []
    if command != "demo":
        argv += ["-o", out]
    for part in parts:
        argv += part
    return argv


@settings(FEW, max_examples=30)
@given(st.data())
def test_the_command_line_reports_bad_input_in_one_line(network_file, small_catalogue, data):
    directory, _ = small_catalogue
    argv = data.draw(command_lines(directory, network_file))
    status, err = _cli(argv)
    assert "Traceback" not in err, err
    if status == 2:
        return  # argparse: usage and one error line
    lines = [line for line in err.splitlines() if ": error: " in line]
    if status == 0:
        return  # every part was acceptable after all (e.g. --fix pa=... within the bounds)
    assert status == 1, f"{argv}: status {status}"
    assert len(lines) == 1 and lines[0].startswith(f"astrokin {argv[0]}: error: "), err
    assert len(lines[0]) > len(f"astrokin {argv[0]}: error: ") + 10, err
