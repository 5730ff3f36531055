"""Realistic mock galaxies made with KinMS: rings, holes, clumps, arms, bars, warps, low S/N.

The ``paper`` and ``hard`` sets of ``kinms_sets.py`` are exponential discs on
arctan curves: what the bundled network was trained on. Real discs are not.
This set draws, per galaxy (one random stream per galaxy, so any subset can be
regenerated):

surface brightness (one of five families, equally often)
    ``exponential``; ``hole`` (an exponential with a central depression,
    ``1 - exp(-(r/r_hole)^2)``); ``ring`` (a Gaussian ring); ``exp+ring``; and
    ``truncated`` (a flat core with a sharp edge, as CO discs often are).
rotation curve (one of four, equally often)
    ``arctan``; ``courteau`` (Courteau 1997, rising or declining, sharp or
    soft turnover); ``solid-flat`` (solid body, then flat); ``declining``
    (an arctan rise, then a linear decline of up to 30% by the disc's edge).
    A quarter of the galaxies also have a central ``bulge`` peak (a Hernquist-
    like term added in quadrature, peaking at 3-10% of the disc's extent).
nuisances
    half the galaxies are ``clumpy`` (a log-normal random field of about a
    beam's scale) or have two ``arms`` (a logarithmic spiral modulating the
    brightness by 30-70%), applied to KinMS's face-on cloud list
    (``inClouds``); 30% are ``warped`` (inclination changing by up to 5 deg and
    PA by up to 8 deg, from 0.5-0.8 of the extent outwards; the truth is the
    inner disc's); 25% have a ``bar`` (a bisymmetric flow of 5-20 km/s inside
    0.2-0.4 of the extent, ``kinms.radial_motion.bisymmetric_flow``); gas
    dispersion 5-25 km/s.
observing
    maps of 64, 96 or 128 px of 1"; beams of 2-6 px FWHM (axis ratio 0.7-1,
    any PA); discs 4-30 beams across (log-uniform, at most 85% of the map);
    every PA, centre offsets within +-4 px, v_sys within +-200 km/s,
    inclination 15-85 deg; 10 km/s channels; noise convolved with the beam at
    a peak S/N per channel of 3-20; moments through the smooth-and-clip mask
    of ``kinms_sets.smooth_and_clip_mask`` (as a source finder makes them).
    KinMS runs without its beam; the cube is convolved here with an exact
    elliptical Gaussian (see ``kinms_sets``).

Stored per galaxy: the maps, the truth (geometry, the families, the disc's
extent), the true rotation curve on 256 radii, and, for the first
``--cubes`` galaxies, the noisy cube and its channel velocities (for
3D-Barolo's 3DFIT).

Run: ``python benchmarks/realistic_mocks.py [--n 500] [--cubes 50] [--out DIR]``.
Load with `load_realistic`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kinms_sets  # noqa: E402

SB_FAMILIES = ("exponential", "hole", "ring", "exp+ring", "truncated")
RC_FAMILIES = ("arctan", "courteau", "solid-flat", "declining")
GEOMETRY = ("inclination", "pa", "x_0", "y_0", "v_sys")
N_CURVE = 256
DV = 10.0


def draw(rng):
    """The design of one galaxy: geometry, profiles, nuisances, observing setup."""
    g = {}
    n = int(rng.choice([64, 96, 128]))
    g["n"] = n
    bmaj = rng.uniform(2.0, 6.0)
    g["beam"] = (bmaj, max(2.0, bmaj * rng.uniform(0.7, 1.0)), rng.uniform(0.0, 180.0))
    across = np.exp(rng.uniform(np.log(4.0), np.log(30.0)))  # disc diameter in beams
    g["extent"] = float(min(0.5 * across * bmaj, 0.425 * n))
    g["inclination"] = rng.uniform(15.0, 85.0)
    g["pa"] = rng.uniform(0.0, 360.0)
    g["x_0"], g["y_0"] = rng.uniform(-4.0, 4.0, 2)
    g["v_sys"] = rng.uniform(-200.0, 200.0)
    g["sb_family"] = str(rng.choice(SB_FAMILIES))
    g["rc_family"] = str(rng.choice(RC_FAMILIES))
    R = g["extent"]
    g["sb"] = {"h": rng.uniform(0.2, 0.45) * R, "r_hole": rng.uniform(0.15, 0.4) * R,
               "r_ring": rng.uniform(0.3, 0.7) * R, "w_ring": rng.uniform(0.08, 0.25) * R,
               "a_ring": rng.uniform(0.3, 1.0), "r_t": rng.uniform(0.5, 0.9) * R}
    g["rc"] = {"v": rng.uniform(80.0, 300.0), "r_t": rng.uniform(0.02, 0.3) * R,
               "beta": rng.uniform(-0.3, 0.6), "gamma": rng.uniform(1.0, 8.0),
               "r_solid": rng.uniform(0.1, 0.5) * R, "decline": rng.uniform(0.05, 0.3),
               "bulge": bool(rng.uniform() < 0.25), "v_b": rng.uniform(0.5, 1.2),
               "r_b": rng.uniform(0.03, 0.1) * R}
    texture = rng.uniform()
    g["texture"] = "clumpy" if texture < 0.25 else "arms" if texture < 0.5 else "smooth"
    g["texture_args"] = {"sigma_ln": rng.uniform(0.3, 0.8), "scale": rng.uniform(0.7, 1.5),
                         "arm_amp": rng.uniform(0.3, 0.7), "pitch": rng.uniform(10.0, 30.0),
                         "arm_phase": rng.uniform(0.0, 360.0)}
    g["warp"] = bool(rng.uniform() < 0.3)
    g["warp_args"] = {"r_w": rng.uniform(0.5, 0.8) * R, "d_inc": rng.uniform(-5.0, 5.0),
                      "d_pa": rng.uniform(-8.0, 8.0)}
    g["bar"] = bool(rng.uniform() < 0.25)
    g["bar_args"] = {"r_bar": rng.uniform(0.2, 0.4) * R, "v2": rng.uniform(5.0, 20.0),
                     "phi_b": rng.uniform(0.0, 180.0)}
    g["gas_sigma"] = rng.uniform(5.0, 25.0)
    g["snr"] = rng.uniform(3.0, 20.0)
    return g


def surface_brightness(g, r):
    """The face-on surface brightness of design ``g`` at radii ``r`` (arcsec)."""
    s, fam, R = g["sb"], g["sb_family"], g["extent"]
    exp = np.exp(-r / s["h"])
    ring = np.exp(-0.5 * ((r - s["r_ring"]) / s["w_ring"]) ** 2)
    if fam == "exponential":
        out = exp
    elif fam == "hole":
        out = exp * (1.0 - np.exp(-((r / s["r_hole"]) ** 2)))
    elif fam == "ring":
        out = ring
    elif fam == "exp+ring":
        out = exp + s["a_ring"] * ring
    else:  # truncated
        out = np.exp(-r / (2.0 * R)) / (1.0 + np.exp((r - s["r_t"]) / (0.03 * R)))
    return np.where(r <= 1.3 * R, out, 0.0)


def rotation_curve(g, r):
    """The circular speed (km/s) of design ``g`` at radii ``r`` (arcsec)."""
    c, fam, R = g["rc"], g["rc_family"], g["extent"]
    r = np.asarray(r, dtype=float)
    if fam == "arctan":
        v = 2.0 / np.pi * c["v"] * np.arctan(r / c["r_t"])
    elif fam == "courteau":
        q = np.abs(r) / c["r_t"]
        v = c["v"] * q ** (1 - c["beta"]) * (1 + q) ** c["beta"] / (1 + q ** c["gamma"]) ** (
            1 / c["gamma"])
    elif fam == "solid-flat":
        x = r / c["r_solid"]
        v = c["v"] * x / (1.0 + x ** 8) ** (1.0 / 8.0)
    else:  # declining
        v = (2.0 / np.pi * c["v"] * np.arctan(r / c["r_t"])
             * (1.0 - c["decline"] * np.clip(r / R, 0.0, 1.3)))
    if c["bulge"]:
        vb = c["v_b"] * c["v"] * 2.0 * np.sqrt(r * c["r_b"]) / (r + c["r_b"])
        v = np.sqrt(v ** 2 + vb ** 2)
    return v


def _clouds(g, rng, n_clouds):
    """Face-on cloud positions (arcsec) drawn from the profile times the texture."""
    R = g["extent"]
    radius = np.linspace(0.0, 1.3 * R, 4000)
    pdf = surface_brightness(g, radius) * radius
    cdf = np.cumsum(pdf)
    cdf /= cdf[-1]
    draw = 3 * n_clouds if g["texture"] != "smooth" else n_clouds
    r = np.interp(rng.uniform(size=draw), cdf, radius)
    phi = rng.uniform(0.0, 2.0 * np.pi, draw)
    x, y = r * np.cos(phi), r * np.sin(phi)
    t = g["texture_args"]
    if g["texture"] == "clumpy":
        from scipy import ndimage

        cell = 0.5
        m = int(np.ceil(2.7 * R / cell)) + 1
        field = ndimage.gaussian_filter(rng.standard_normal((m, m)),
                                        t["scale"] * g["beam"][0] / cell)
        field = field / field.std() * t["sigma_ln"]
        ix = np.clip(((x + 1.35 * R) / cell).astype(int), 0, m - 1)
        iy = np.clip(((y + 1.35 * R) / cell).astype(int), 0, m - 1)
        w = np.exp(field[iy, ix])
    elif g["texture"] == "arms":
        pitch = np.radians(t["pitch"])
        arg = 2.0 * (phi - np.log(np.maximum(r, 1e-3) / R) / np.tan(pitch)
                     - np.radians(t["arm_phase"]))
        w = 1.0 + t["arm_amp"] * np.cos(arg)
    else:
        w = np.ones(draw)
    keep = rng.uniform(size=draw) < w / w.max()
    idx = np.flatnonzero(keep)[:n_clouds]
    return np.stack([x[idx], y[idx], np.zeros(idx.size)], axis=1)


def make(g, seed, n_clouds=300_000):
    """The noisy cube, its channel velocities, the maps and extras of design ``g``."""
    from kinms import KinMS
    from kinms.radial_motion import radial_motion

    rng = np.random.default_rng(seed)
    n, R = g["n"], g["extent"]
    vmax = float(rotation_curve(g, np.linspace(0, 1.3 * R, 500)).max())
    v = kinms_sets.velocity_axis(vmax * np.sin(np.radians(g["inclination"])), g["v_sys"], DV,
                                 g["gas_sigma"])
    radius = np.linspace(0.0, 1.5 * n, 3000)
    inc = np.full(radius.size, g["inclination"])
    pa = np.full(radius.size, g["pa"])
    if g["warp"]:
        w = g["warp_args"]
        frac = np.clip((radius - w["r_w"]) / max(R - w["r_w"], 1e-3), 0.0, None)
        inc = np.clip(inc + w["d_inc"] * frac, 1.0, 89.5)
        pa = pa + w["d_pa"] * frac
    options = {}
    if g["bar"]:
        b = g["bar_args"]
        prof = b["v2"] * np.clip(1.0 - radius / b["r_bar"], 0.0, None)
        options["radial_motion_func"] = radial_motion.bisymmetric_flow(radius, prof, prof,
                                                                       b["phi_b"])
    kin = KinMS(n, n, len(v) * DV, 1.0, DV, [1.0, 1.0, 0.0], nSamps=int(n_clouds),
                seed=int(rng.integers(1, 40_000_000)), cleanOut=True)
    clouds = _clouds(g, rng, n_clouds)
    cube = kin.model_cube(inc if g["warp"] else g["inclination"],
                          pa if g["warp"] else g["pa"], gasSigma=g["gas_sigma"],
                          inClouds=clouds, sbRad=radius, sbProf=surface_brightness(g, radius),
                          velRad=radius, velProf=rotation_curve(g, radius),
                          phaseCent=[g["x_0"] - 0.5, g["y_0"] - 0.5], vOffset=g["v_sys"],
                          **options)
    cube = np.ascontiguousarray(np.transpose(cube, (2, 1, 0)))
    kernel = kinms_sets.gaussian_beam_kernel(*g["beam"])
    cube = kinms_sets.convolve_channels(cube, kernel)
    cube /= cube.max()
    rms = 1.0 / g["snr"]
    noise = kinms_sets.convolve_channels(rng.standard_normal(cube.shape), kernel)
    noise *= rms / np.sqrt((kernel ** 2).sum())
    area = np.pi / (4 * np.log(2)) * g["beam"][0] * g["beam"][1]
    mask, _ = kinms_sets.smooth_and_clip_mask(cube + noise, noise, kernel, core_sigma=4.0,
                                              grow_sigma=2.0, core_channels=3, min_area=area)
    mom0, mom1 = kinms_sets.moments(cube + noise, v, DV, mask)
    has = mask.any(axis=0)
    mom1[~has | ~(mom0 > 0)] = np.nan
    mom0[~has] = 0.0
    return (cube + noise).astype(np.float32), v, mom0.astype(np.float32), \
        mom1.astype(np.float32), {"rms": rms, "mask_fraction": float(np.isfinite(mom1).mean())}


def generate(n, *, seed=7, cubes=50, clouds=300_000, out=None, verbose=True):
    """Generate ``n`` galaxies and save them (`set_path`); returns the path."""
    path = set_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, designs, times = {}, [], []
    for i in range(n):
        t = time.perf_counter()
        rng = np.random.default_rng([seed, i])
        g = draw(rng)
        cube, v, mom0, mom1, extra = make(g, [seed, i, 1], clouds)
        g.update(extra)
        r = np.linspace(0.0, 1.3 * g["extent"], N_CURVE)
        arrays[f"mom0_{i}"], arrays[f"mom1_{i}"] = mom0, mom1
        arrays[f"curve_r_{i}"], arrays[f"curve_v_{i}"] = r, rotation_curve(g, r)
        if i < cubes:
            arrays[f"cube_{i}"], arrays[f"cube_v_{i}"] = cube, v
        designs.append(g)
        times.append(time.perf_counter() - t)
        if verbose and (i + 1) % max(1, n // 20) == 0:
            print(f"  realistic: {i + 1}/{n}, {np.mean(times):.2f} s per galaxy",
                  file=sys.stderr, flush=True)
    meta = {"n": n, "seed": seed, "cubes": min(cubes, n), "clouds": clouds, "dv": DV,
            "seconds_per_galaxy": float(np.mean(times)),
            "machine": kinms_sets.machine_description(),
            "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    arrays["designs"] = np.array(json.dumps(designs))
    arrays["meta"] = np.array(json.dumps(meta))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def set_path(out=None):
    """Where the set is cached."""
    return Path(out or kinms_sets.DEFAULT_CACHE).expanduser() / "kinms_realistic.npz"


def load_realistic(out=None):
    """``(designs, mom0, mom1, curves, cubes, meta)`` of the cached set.

    ``curves`` is a list of ``(r, v)``; ``cubes`` a dict ``index -> (cube, v)``.
    """
    path = set_path(out)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run python benchmarks/realistic_mocks.py")
    with np.load(path, allow_pickle=False) as f:
        designs = json.loads(str(f["designs"]))
        meta = json.loads(str(f["meta"]))
        n = meta["n"]
        mom0 = [f[f"mom0_{i}"] for i in range(n)]
        mom1 = [f[f"mom1_{i}"] for i in range(n)]
        curves = [(f[f"curve_r_{i}"], f[f"curve_v_{i}"]) for i in range(n)]
        cubes = {i: (f[f"cube_{i}"], f[f"cube_v_{i}"]) for i in range(meta["cubes"])}
    return designs, mom0, mom1, curves, cubes, meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--cubes", type=int, default=50)
    parser.add_argument("--clouds", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    t = time.perf_counter()
    path = generate(args.n, seed=args.seed, cubes=args.cubes, clouds=args.clouds, out=args.out)
    print(f"wrote {path}: {args.n} galaxies in {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
