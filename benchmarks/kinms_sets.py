"""Cached test sets of KinMS galaxies with known truth (a benchmark helper).

Two sets of moment maps made with KinMS (Davis et al. 2013, 2020), the
simulator Dawson et al. (2021) tested their network on, are generated once and
cached as compressed ``.npz`` files (default ``~/.cache/astrokin-benchmarks/``):

``paper``
    As in the paper's section 3.1: 64x64 px at 1"/px, a round 2" beam, no
    noise; parameters drawn uniformly from Table 2: inclination 10-90 deg,
    V_max sin i 50-500 km/s (so v_max = vsini / sin i), r_scale 0.1-0.35 and
    r_turn 0.01-0.8 of the half-width (32 px); PA fixed at 0 deg (Table 2;
    astrokin/KinMS convention: receding half of the major axis towards North),
    centre at the map centre, v_sys 0. mom0 is the sum over channels (times
    dv); mom1 the intensity-weighted velocity, NaN where mom0 < 1e-3 of its
    peak (the paper's code masked with the footprint of the KinMS clouds).
``hard``
    Random PA (0-360 deg), centre offsets uniform in +-4 px on each axis,
    v_sys uniform in +-200 km/s, elliptical beams (bmaj 2-4 px, bmin 2 px to
    bmaj, bpa 0-180 deg), half 64x64 and half 100x100 maps (r_scale, r_turn
    ranges scaled with the half-width), cube noise correlated by the beam with
    a peak S/N per channel of 10-30, and a smooth-and-clip mask: the cube is
    smoothed by the beam spatially and a 3-channel Hanning spectrally, cores
    are voxels above 4 sigma (of the smoothed noise) in at least three adjacent
    channels, grown into the connected region above 2 sigma, and regions
    covering less than one beam area on the sky are dropped; mom0 and mom1
    are moments of the masked (unsmoothed) cube; mom1 is NaN where no voxel of
    a sightline is in the mask, mom0 is 0 there.

Both: dv = 10 km/s, gasSigma = 10 km/s, thin discs (diskThick = 0,
z_scale = 0), exponential surface brightness (untruncated) and arctan rotation
curve, 2e5 clouds per galaxy by default. KinMS is run without its beam
(``cleanOut=True``) and the cube is convolved here with an exact elliptical
Gaussian: KinMS 3.0.14's ``makebeam`` squares ``sin(2 bpa)`` in the cross
term, so its beam is wrong for position angles that are not multiples of
45 deg (a 4"x2" beam at bpa 30 comes out 3.73"x2.04" at 28.2 deg). It is
exact for the round beam of the paper set.

Conventions of what is stored (astrokin's, see ``docs``): maps are
``(ny, nx)`` with North along +row and East along -column; ``pa`` is the
position angle of the receding half of the major axis, North through East;
``x_0``, ``y_0`` (arcsec) are the centre offsets along +column/+row from the
map centre ``((nx-1)/2, (ny-1)/2)`` -- KinMS puts its centre at pixel
``n/2``, so the generator shifts KinMS's ``phaseCent`` by -0.5 px and stores
the offsets from astrokin's centre; the beam is ``(bmaj, bmin, bpa)`` in
arcsec, arcsec, deg (North through East; KinMS is given ``-bpa`` where its own
beam is used).

Run: ``python benchmarks/kinms_sets.py {paper,hard,both} [--n 1000] [--out DIR]
[--clouds 200000] [--seed 1] [--force]``. Prints the generation time per
galaxy. Load with `load_set` (used by ``benchmarks/accuracy.py``).
"""

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path(os.environ.get("ASTROKIN_BENCHMARK_CACHE",
                                    "~/.cache/astrokin-benchmarks")).expanduser()
#: Names of the true parameters stored per galaxy (astrokin convention).
PARAMETERS = ("inclination", "pa", "x_0", "y_0", "v_sys", "r_scale", "r_turn", "v_max",
              "z_scale", "vsini")
FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))

#: Design of the two sets. Lengths: r_scale/r_turn as fractions of the map
#: half-width, centre offsets and beams in pixels.
DESIGNS = {
    "paper": {
        "shapes": [[64, 64]],
        "pixel_scale": 1.0,
        "inclination": [10.0, 90.0],
        "vsini": [50.0, 500.0],
        "r_scale_fraction": [0.1, 0.35],
        "r_turn_fraction": [0.01, 0.8],
        "pa": 0.0,
        "centre_px": 0.0,
        "v_sys": 0.0,
        "beam_px": {"bmaj": [2.0, 2.0], "bmin": "round", "bpa": 0.0},
        "noise": None,
        "mom1_mask": "mom0 < 1e-3 * max(mom0)",
        "mom1_threshold": 1e-3,
    },
    "hard": {
        "shapes": [[64, 64], [100, 100]],
        "pixel_scale": 1.0,
        "inclination": [10.0, 90.0],
        "vsini": [50.0, 500.0],
        "r_scale_fraction": [0.1, 0.35],
        "r_turn_fraction": [0.01, 0.8],
        "pa": [0.0, 360.0],
        "centre_px": [-4.0, 4.0],
        "v_sys": [-200.0, 200.0],
        "beam_px": {"bmaj": [2.0, 4.0], "bmin": "uniform(2, bmaj)", "bpa": [0.0, 180.0]},
        "noise": {"peak_snr_per_channel": [10.0, 30.0],
                  "correlation": "white noise convolved with the beam, renormalised"},
        "mask": {"smooth": "beam (spatial) + 3-channel Hanning", "core_sigma": 4.0,
                 "core_channels": 3, "grow_sigma": 2.0, "min_area_beams": 1.0},
    },
}
COMMON = {"dv": 10.0, "gas_sigma": 10.0, "disk_thick": 0.0}


# ----------------------------------------------------------------------
# Parameters
def draw_parameters(name, n, rng):
    """True parameters (astrokin convention) and observing setup of ``n`` galaxies.

    Returns
    -------
    params : dict of numpy.ndarray
        `PARAMETERS` plus ``ny``, ``nx``, ``pixel_scale`` (arcsec), ``bmaj``,
        ``bmin`` (arcsec), ``bpa`` (deg) and ``snr`` (peak S/N per channel,
        inf for no noise).
    """
    d = DESIGNS[name]
    shapes = np.array(d["shapes"])
    which = np.arange(n) % len(shapes)  # alternate shapes: half and half
    ny, nx = shapes[which, 0], shapes[which, 1]
    ps = np.full(n, float(d["pixel_scale"]))
    half = 0.5 * np.minimum(ny, nx) * ps  # half-width in arcsec
    inc = rng.uniform(*d["inclination"], n)
    vsini = rng.uniform(*d["vsini"], n)
    r_scale = rng.uniform(*d["r_scale_fraction"], n) * half
    r_turn = rng.uniform(*d["r_turn_fraction"], n) * half
    out = {"inclination": inc, "vsini": vsini, "v_max": vsini / np.sin(np.radians(inc)),
           "r_scale": r_scale, "r_turn": r_turn, "z_scale": np.zeros(n),
           "ny": ny, "nx": nx, "pixel_scale": ps}
    if name == "paper":
        out["pa"] = np.full(n, float(d["pa"]))
        out["x_0"] = np.zeros(n)
        out["y_0"] = np.zeros(n)
        out["v_sys"] = np.full(n, float(d["v_sys"]))
        out["bmaj"] = np.full(n, d["beam_px"]["bmaj"][0]) * ps
        out["bmin"] = out["bmaj"].copy()
        out["bpa"] = np.zeros(n)
        out["snr"] = np.full(n, np.inf)
    else:
        out["pa"] = rng.uniform(*d["pa"], n)
        out["x_0"] = rng.uniform(*d["centre_px"], n) * ps
        out["y_0"] = rng.uniform(*d["centre_px"], n) * ps
        out["v_sys"] = rng.uniform(*d["v_sys"], n)
        bmaj = rng.uniform(*d["beam_px"]["bmaj"], n)
        out["bmaj"] = bmaj * ps
        out["bmin"] = rng.uniform(2.0, bmaj) * ps
        out["bpa"] = rng.uniform(*d["beam_px"]["bpa"], n)
        out["snr"] = rng.uniform(*d["noise"]["peak_snr_per_channel"], n)
    return out


# ----------------------------------------------------------------------
# Cubes
def gaussian_beam_kernel(bmaj_px, bmin_px, bpa_deg, peak_one=True):
    """Elliptical Gaussian kernel in astrokin's orientation, ``(ny, nx)``, odd size.

    The major axis points along PA ``bpa`` from North (+row) through East
    (-column): direction ``(x, y) = (-sin bpa, cos bpa)``.
    """
    s_maj, s_min = bmaj_px * FWHM_TO_SIGMA, bmin_px * FWHM_TO_SIGMA
    h = int(np.ceil(4.0 * s_maj))
    y, x = np.mgrid[-h:h + 1, -h:h + 1].astype(float)
    t = np.radians(bpa_deg)
    along = -x * np.sin(t) + y * np.cos(t)
    across = x * np.cos(t) + y * np.sin(t)
    k = np.exp(-0.5 * ((along / s_maj) ** 2 + (across / s_min) ** 2))
    return k if peak_one else k / k.sum()


def convolve_channels(cube, kernel):
    """Convolve every channel of a ``(nv, ny, nx)`` cube with a 2D kernel (zero padding)."""
    from scipy.signal import fftconvolve

    return fftconvolve(cube, kernel[None], mode="same", axes=(1, 2))


def velocity_axis(vsini, v_sys, dv, gas_sigma):
    """Channel velocities, KinMS's convention: channel k at ``(k - nv/2) * dv``."""
    extent = 2.0 * (vsini + 5.0 * gas_sigma) + 2.0 * abs(v_sys) + 4.0 * dv
    nv = int(np.ceil(extent / dv / 2.0)) * 2
    return (np.arange(nv) - nv / 2) * dv


def kinms_clean_cube(p, i, *, clouds, seed, dv, gas_sigma, disk_thick):
    """KinMS cube of galaxy ``i`` of parameter dict ``p`` without beam, as ``(nv, ny, nx)``.

    Returns the cube and its channel velocities (km/s).
    """
    from kinms import KinMS

    ny, nx, ps = int(p["ny"][i]), int(p["nx"][i]), float(p["pixel_scale"][i])
    v = velocity_axis(p["vsini"][i], p["v_sys"][i], dv, gas_sigma)
    rmax = 1.5 * np.hypot(nx, ny) * ps
    radius = np.linspace(0.0, rmax, 4000)
    sb = np.exp(-radius / p["r_scale"][i])
    vel = 2.0 / np.pi * p["v_max"][i] * np.arctan(radius / p["r_turn"][i])
    kin = KinMS(nx * ps, ny * ps, len(v) * dv, ps, dv, [ps, ps, 0.0], nSamps=int(clouds),
                seed=int(seed), cleanOut=True)
    # KinMS centres the disc on pixel n/2; astrokin's map centre is (n-1)/2.
    cube = kin.model_cube(float(p["inclination"][i]), float(p["pa"][i]), gasSigma=gas_sigma,
                          diskThick=disk_thick, sbProf=sb, sbRad=radius, velProf=vel,
                          velRad=radius,
                          phaseCent=[float(p["x_0"][i]) - 0.5 * ps, float(p["y_0"][i]) - 0.5 * ps],
                          vOffset=float(p["v_sys"][i]))
    return np.ascontiguousarray(np.transpose(cube, (2, 1, 0))), v


def moments(cube, v, dv, mask=None):
    """mom0 (sum times dv) and mom1 (intensity-weighted velocity) of a masked cube."""
    if mask is not None:
        cube = np.where(mask, cube, 0.0)
    mom0 = cube.sum(axis=0) * dv
    with np.errstate(invalid="ignore", divide="ignore"):
        mom1 = (cube * v[:, None, None]).sum(axis=0) * dv / mom0
    return mom0, mom1


def smooth_and_clip_mask(cube, noise, kernel, *, core_sigma=4.0, grow_sigma=2.0,
                         core_channels=2, min_area=0.0):
    """Smooth-and-clip mask of a noisy cube.

    Smooths spatially by ``kernel`` and spectrally by a 3-channel Hanning
    window; sigma is the standard deviation of the identically smoothed
    noise-only cube. Cores are voxels above ``core_sigma`` in at least
    ``core_channels`` adjacent channels; the mask is the union of the
    connected regions above ``grow_sigma`` that contain a core, less the
    regions whose footprint on the sky is smaller than ``min_area`` pixels
    (one beam area by default in `make_galaxy`: pruning noise spikes).
    """
    from scipy import ndimage

    def smooth(c):
        c = convolve_channels(c, kernel / kernel.sum())
        return ndimage.convolve1d(c, [0.25, 0.5, 0.25], axis=0, mode="constant")

    s = smooth(cube)
    sigma = smooth(noise).std()
    above = s > core_sigma * sigma
    core = above.copy()
    if core_channels > 1:
        run = above.copy()
        for k in range(1, core_channels):
            run[k:] &= above[:-k]
            run[:k] = False
        core = run.copy()
        for k in range(1, core_channels):  # mark every channel of a qualifying run
            core[:-k] |= run[k:]
    low = s > grow_sigma * sigma
    mask = ndimage.binary_propagation(core, mask=low)
    if min_area > 0:
        labels, count = ndimage.label(mask)
        if count > 1:
            lv, ly, lx = np.nonzero(labels)
            pairs = np.unique(np.stack([labels[lv, ly, lx], ly * mask.shape[2] + lx]), axis=1)
            area = np.bincount(pairs[0], minlength=count + 1)
            mask &= (area >= min_area)[labels]
    return mask, sigma


def make_galaxy(name, p, i, *, clouds, seed, rng):
    """mom0, mom1 (float32) of galaxy ``i``, and a dict of per-galaxy extras."""
    dv, gas_sigma = COMMON["dv"], COMMON["gas_sigma"]
    cube, v = kinms_clean_cube(p, i, clouds=clouds, seed=seed, dv=dv, gas_sigma=gas_sigma,
                               disk_thick=COMMON["disk_thick"])
    ps = float(p["pixel_scale"][i])
    kernel = gaussian_beam_kernel(p["bmaj"][i] / ps, p["bmin"][i] / ps, p["bpa"][i])
    cube = convolve_channels(cube, kernel)
    cube /= cube.max()
    if name == "paper":
        mom0, mom1 = moments(cube, v, dv)
        mom1[mom0 < DESIGNS["paper"]["mom1_threshold"] * np.nanmax(mom0)] = np.nan
        extra = {"rms": 0.0, "mask_sigma": 0.0, "mask_fraction": float(np.isfinite(mom1).mean())}
    else:
        rms = 1.0 / p["snr"][i]
        white = rng.standard_normal(cube.shape)
        noise = convolve_channels(white, kernel)
        noise *= rms / np.sqrt((kernel ** 2).sum())
        d = DESIGNS["hard"]["mask"]
        beam_area = np.pi / (4 * np.log(2)) * p["bmaj"][i] * p["bmin"][i] / ps ** 2
        mask, sigma = smooth_and_clip_mask(cube + noise, noise, kernel,
                                           core_sigma=d["core_sigma"],
                                           grow_sigma=d["grow_sigma"],
                                           core_channels=d["core_channels"],
                                           min_area=d["min_area_beams"] * beam_area)
        mom0, mom1 = moments(cube + noise, v, dv, mask)
        has = mask.any(axis=0)
        mom1[~has | ~(mom0 > 0)] = np.nan
        mom0[~has] = 0.0
        extra = {"rms": rms, "mask_sigma": float(sigma),
                 "mask_fraction": float(np.isfinite(mom1).mean())}
    return mom0.astype(np.float32), mom1.astype(np.float32), extra


# ----------------------------------------------------------------------
# Sets
@dataclass
class KinMSSet:
    """A loaded set: maps (lists, one per galaxy), truth and observing setup.

    Attributes
    ----------
    name : str
    mom0, mom1 : list of numpy.ndarray
        ``(ny, nx)`` float32 maps (mom1 km/s, NaN = no data).
    truth : dict of numpy.ndarray
        `PARAMETERS` in astrokin's convention (deg, arcsec, km/s).
    pixel_scale : numpy.ndarray
        Arcsec per pixel.
    beam : numpy.ndarray
        ``(N, 3)``: bmaj, bmin (arcsec), bpa (deg, North through East).
    extra : dict of numpy.ndarray
        ``snr``, ``rms``, ``mask_sigma``, ``mask_fraction``, ``kinms_seed``.
    meta : dict
        Design, generation settings, timing and machine.
    """

    name: str
    mom0: list
    mom1: list
    truth: dict
    pixel_scale: np.ndarray
    beam: np.ndarray
    extra: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.mom0)

    @property
    def shapes(self):
        """``(N, 2)`` array of ``(ny, nx)``."""
        return np.array([m.shape for m in self.mom0])

    @property
    def half_width(self):
        """Half-width of each map in arcsec (half the smaller side)."""
        return 0.5 * self.shapes.min(axis=1) * self.pixel_scale

    def groups(self):
        """``{(ny, nx): indices}`` of galaxies sharing a map shape."""
        shapes = self.shapes
        out = {}
        for key in sorted({tuple(s) for s in shapes}):
            out[key] = np.flatnonzero((shapes == key).all(axis=1))
        return out

    def subset(self, index):
        """A new `KinMSSet` with the galaxies ``index`` (array of ints)."""
        index = np.asarray(index, dtype=int)
        return KinMSSet(
            self.name, [self.mom0[i] for i in index], [self.mom1[i] for i in index],
            {k: v[index] for k, v in self.truth.items()}, self.pixel_scale[index],
            self.beam[index], {k: v[index] for k, v in self.extra.items()}, dict(self.meta),
        )


def set_path(name, out=None):
    """Path of the cached file of set ``name`` (``paper`` or ``hard``)."""
    return Path(out or DEFAULT_CACHE).expanduser() / f"kinms_{name}.npz"


def machine_description():
    """One line describing this machine (CPU model, cores, Python, numpy, KinMS)."""
    from machine import cpu_name

    cpu = cpu_name()
    try:
        from importlib.metadata import version

        kinms_version = version("kinms")
    except Exception:
        kinms_version = "unknown"
    return (f"{cpu}; {os.cpu_count()} logical cores; Python {platform.python_version()}; "
            f"numpy {np.__version__}; kinms {kinms_version}")


def generate(name, n, *, clouds=200_000, seed=1, verbose=True):
    """Generate set ``name`` of ``n`` galaxies; returns a `KinMSSet`."""
    if name not in DESIGNS:
        raise ValueError(f"Unknown set {name!r}; choose from {sorted(DESIGNS)}.")
    rng = np.random.default_rng(seed)
    p = draw_parameters(name, n, rng)
    kinms_seeds = rng.integers(1, 40_000_000, n)  # KinMS multiplies by ~100; stay < 2**32
    mom0, mom1, extras, times = [], [], [], []
    t_all = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        m0, m1, ex = make_galaxy(name, p, i, clouds=clouds, seed=kinms_seeds[i], rng=rng)
        times.append(time.perf_counter() - t)
        mom0.append(m0)
        mom1.append(m1)
        extras.append(ex)
        if verbose and (i + 1) % max(1, n // 10) == 0:
            print(f"  {name}: {i + 1}/{n} galaxies, {np.mean(times):.3f} s per galaxy",
                  file=sys.stderr, flush=True)
    total = time.perf_counter() - t_all
    times = np.array(times)
    shapes = np.stack([p["ny"], p["nx"]], axis=1)
    per_shape = {f"{a}x{b}": float(times[(shapes == (a, b)).all(axis=1)].mean())
                 for a, b in sorted({tuple(s) for s in shapes})}
    meta = {
        "set": name, "n": n, "clouds": int(clouds), "seed": int(seed),
        "design": DESIGNS[name], "common": COMMON,
        "generation_seconds": total, "seconds_per_galaxy": float(times.mean()),
        "seconds_per_galaxy_by_shape": per_shape,
        "machine": machine_description(),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "conventions": "astrokin: (ny, nx) maps, North +row, East -column; pa receding "
                       "N through E; x_0/y_0 arcsec offsets from ((nx-1)/2, (ny-1)/2); "
                       "beam bmaj/bmin arcsec FWHM, bpa deg N through E",
    }
    extra = {k: np.array([e[k] for e in extras]) for k in extras[0]}
    extra["snr"] = p["snr"]
    extra["kinms_seed"] = kinms_seeds
    return KinMSSet(name, mom0, mom1, {k: p[k] for k in PARAMETERS}, p["pixel_scale"],
                    np.stack([p["bmaj"], p["bmin"], p["bpa"]], axis=1), extra, meta)


def save_set(kset, path):
    """Save a `KinMSSet` as a compressed ``.npz`` (no pickled objects)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"true_{k}": v for k, v in kset.truth.items()}
    arrays.update({f"extra_{k}": v for k, v in kset.extra.items()})
    arrays["pixel_scale"] = kset.pixel_scale
    arrays["beam"] = kset.beam
    arrays["meta"] = np.array(json.dumps(kset.meta))
    for (ny, nx), index in kset.groups().items():
        key = f"{ny}x{nx}"
        arrays[f"index_{key}"] = index
        arrays[f"mom0_{key}"] = np.stack([kset.mom0[i] for i in index])
        arrays[f"mom1_{key}"] = np.stack([kset.mom1[i] for i in index])
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load_set(name_or_path, out=None):
    """Load a cached set by name (``'paper'``, ``'hard'``) or by file path."""
    path = Path(name_or_path)
    if str(name_or_path) in DESIGNS:
        path = set_path(str(name_or_path), out)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; generate it with "
            f"`python benchmarks/kinms_sets.py {name_or_path} --out {path.parent}`."
        )
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        n = int(meta["n"])
        mom0, mom1 = [None] * n, [None] * n
        for key in f.files:
            if key.startswith("index_"):
                shape = key[len("index_"):]
                m0, m1 = f[f"mom0_{shape}"], f[f"mom1_{shape}"]
                for j, i in enumerate(f[key]):
                    mom0[i], mom1[i] = m0[j], m1[j]
        truth = {k[5:]: f[k] for k in f.files if k.startswith("true_")}
        extra = {k[6:]: f[k] for k in f.files if k.startswith("extra_")}
        return KinMSSet(meta["set"], mom0, mom1, truth, f["pixel_scale"], f["beam"], extra, meta)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["paper", "hard", "both"])
    parser.add_argument("--n", type=int, default=1000, help="galaxies per set (default 1000)")
    parser.add_argument("--out", default=str(DEFAULT_CACHE), help="cache directory")
    parser.add_argument("--clouds", type=int, default=200_000, help="KinMS clouds per galaxy")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = parser.parse_args(argv)
    names = ["paper", "hard"] if args.which == "both" else [args.which]
    for name in names:
        path = set_path(name, args.out)
        if path.exists() and not args.force:
            meta = load_set(path).meta
            same = (meta["n"], meta["clouds"], meta["seed"]) == (args.n, args.clouds, args.seed)
            if same:
                print(f"{name}: cached at {path} ({meta['n']} galaxies, "
                      f"{meta['seconds_per_galaxy']:.3f} s per galaxy when generated)")
                continue
            print(f"{name}: cached file has n={meta['n']}, clouds={meta['clouds']}, "
                  f"seed={meta['seed']}; regenerating")
        kset = generate(name, args.n, clouds=args.clouds, seed=args.seed)
        save_set(kset, path)
        m = kset.meta
        shapes = ", ".join(f"{k}: {v:.3f} s" for k, v in m["seconds_per_galaxy_by_shape"].items())
        print(f"{name}: {args.n} galaxies, {args.clouds} clouds each, in "
              f"{m['generation_seconds']:.1f} s = {m['seconds_per_galaxy']:.3f} s per galaxy "
              f"({shapes}); mom1 covers {kset.extra['mask_fraction'].mean():.0%} of the "
              f"pixels on average; saved to {path} ({path.stat().st_size / 1e6:.1f} MB)")
        print(f"  machine: {m['machine']}")


if __name__ == "__main__":
    main()
