"""Synthetic galaxies: parameters drawn from priors, rendered into observed-like maps.

Used to pre-train networks for blind fitting, to test fitters on galaxies
whose truth is known, and in the benchmarks. Rendering uses
`~astrokin.rendering.DiskRenderer`, batched, on CPU or GPU.
"""

import inspect
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from astropy import units as u
from astropy.table import QTable

from astrokin._validation import pixel_scale_arcsec
from astrokin.beams import FWHM_TO_SIGMA, beam_parameters
from astrokin.fitting.parameters import CENTRE_FRACTION, DEFAULT_LENGTH_FRACTION, LENGTH_FRACTIONS
from astrokin.models.core import disc_coordinates
from astrokin.rendering import DiskRenderer

__all__ = [
    "BRIGHTNESS_FAMILIES",
    "ROTATION_FAMILIES",
    "TEXTURES",
    "BeamPrior",
    "RealisticGenerator",
    "SyntheticGalaxies",
    "SyntheticGenerator",
    "draw_parameters",
    "make_galaxies",
    "texture_field",
]

#: Default systemic velocities (km/s) when the model gives no bounds.
V_SYS_RANGE = (-100.0, 100.0)


@dataclass
class BeamPrior:
    """Random elliptical beams: FWHM range, axis-ratio range, any position angle.

    Parameters
    ----------
    major : tuple of `~astropy.units.Quantity`
        Range of the major-axis FWHM, as angles or in pixels (``u.pix``).
    axis_ratio : tuple of float
        Range of ``bmin / bmaj``; ``(1, 1)`` gives round beams.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.synthetic import BeamPrior
    >>> prior = BeamPrior(major=(1, 4) * u.pix, axis_ratio=(0.5, 1.0))
    >>> beams = prior.draw(3, pixel_scale=0.5, rng=np.random.default_rng(1))
    >>> beams.shape
    (3, 3)
    """

    major: u.Quantity = field(default_factory=lambda: (1.0, 4.0) * u.pix)
    axis_ratio: tuple = (1.0, 1.0)

    def draw(self, n, pixel_scale, rng):
        """``(n, 3)`` array of bmaj, bmin (arcsec) and bpa (deg, N through E)."""
        major = u.Quantity(self.major)
        if major.unit.is_equivalent(u.pix):
            lo, hi = major.to_value(u.pix) * pixel_scale
        else:
            lo, hi = major.to_value(u.arcsec)
        bmaj = rng.uniform(lo, hi, n)
        bmin = bmaj * rng.uniform(*self.axis_ratio, n)
        bpa = rng.uniform(0.0, 180.0, n)
        return np.stack([bmaj, bmin, bpa], axis=1)


@dataclass
class SyntheticGalaxies:
    """A set of rendered synthetic galaxies with their true parameters.

    Attributes
    ----------
    mom0, mom1 : numpy.ndarray
        ``(N, ny, nx)`` float32 maps; mom1 in km/s with NaN where masked.
    params : `~astropy.table.QTable`
        True parameters, one row per galaxy, with units.
    beams : numpy.ndarray
        ``(N, 3)``: bmaj, bmin (arcsec), bpa (deg); NaN rows for no beam.
    pixel_scale : `~astropy.units.Quantity`
        Pixel size (the same for every map).
    model_class : type
        The disc model class that rendered them.
    info : dict
        Settings and timing (``galaxies_per_second``, ``device``).
    """

    mom0: np.ndarray
    mom1: np.ndarray
    params: QTable
    beams: np.ndarray
    pixel_scale: u.Quantity
    model_class: type
    info: dict

    def __len__(self):
        return len(self.params)

    def beam(self, i):
        """Beam of galaxy ``i`` as ``(bmaj, bmin, bpa)`` Quantities, or None."""
        b = self.beams[i]
        if not np.all(np.isfinite(b)):
            return None
        return (b[0] * u.arcsec, b[1] * u.arcsec, b[2] * u.deg)

    def model(self, i):
        """The true model of galaxy ``i``."""
        row = self.params[i]
        return self.model_class(**{n: row[n] for n in self.model_class.param_names})


def draw_parameters(model, n, *, shape=(64, 64), pixel_scale=1 * u.arcsec, priors=None,
                    seed=None):
    """Draw parameters of ``n`` galaxies from priors.

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        Template: fixed parameters keep its values, tied ones follow its ties,
        free ones are drawn.
    n : int
        Number of galaxies.
    shape : tuple of int
        Map shape, used for the default length and centre ranges.
    pixel_scale : `~astropy.units.Quantity`
        Pixel size.
    priors : dict, optional
        Parameter name to a ``(low, high)`` pair (Quantities or floats in
        canonical units) drawn uniformly, or a callable ``f(rng, n)`` returning
        values, or ``f(rng, n, drawn)`` where ``drawn`` holds the values (in
        canonical units) of the parameters before it in the model's order, e.g.
        to draw ``v_max`` from a distribution of ``v sin i``. Free parameters
        without a prior are drawn uniformly within their bounds; where a bound
        is None, lengths use fractions of the map
        half-width (the paper's Table 2: ``r_scale`` 0.1-0.35, ``r_turn``
        0.01-0.8), ``x_0``/``y_0`` +-15% of the half-width and ``v_sys``
        -100..100 km/s. Dispersion parameters (which change no map drawn here) keep
        the model's values unless a prior names them.
    seed : int or `numpy.random.Generator`, optional
        For reproducible draws.

    Returns
    -------
    params : `~astropy.table.QTable`
        One row per galaxy, every model parameter, with units.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.synthetic import draw_parameters
    >>> t = draw_parameters(ExponentialArctanDisk(), 5, seed=1,
    ...                     priors={"inclination": (30, 60) * u.deg})
    >>> len(t), t["inclination"].unit
    (5, Unit("deg"))
    >>> bool(((t["inclination"] >= 30 * u.deg) & (t["inclination"] <= 60 * u.deg)).all())
    True
    """
    rng = np.random.default_rng(seed)
    mc = type(model)
    ps = pixel_scale_arcsec(pixel_scale)
    half_width = 0.5 * (min(shape) - 1) * ps
    priors = dict(priors or {})
    unknown = set(priors) - set(mc.param_names)
    if unknown:
        raise ValueError(f"priors name parameters {sorted(unknown)} that {mc.__name__} lacks.")
    fixed_values = model.canonical_values()
    values = {}
    for name in mc.param_names:
        unit = mc.canonical_unit(name)
        if name in priors:
            values[name] = _draw(priors[name], rng, n, unit, name, values)
        elif model.fixed[name] or model.tied[name] or name in mc.dispersion_parameters:
            # (The dispersion changes no map drawn here: the model's value, unless a
            # prior names it.)
            values[name] = np.full(n, float(fixed_values[name]))
        else:
            values[name] = rng.uniform(*_default_range(model, name, half_width), n)
    for name in mc.param_names:
        if model.tied[name] and name not in priors:
            values[name] = np.broadcast_to(
                np.asarray(model.tied[name](_Values(values)), dtype=float), (n,)).copy()
    table = QTable()
    for name in mc.param_names:
        unit = mc.canonical_unit(name)
        table[name] = values[name] * unit if unit is not None else values[name]
    return table


class SyntheticGenerator:
    """Draws and renders batches of synthetic galaxies, keeping one renderer.

    Parameters are those of `make_galaxies` (which is
    ``SyntheticGenerator(...).draw(n)``); use the generator directly to
    stream fresh galaxies, e.g. a new batch for every training step.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.synthetic import SyntheticGenerator
    >>> gen = SyntheticGenerator(ExponentialArctanDisk(), shape=(32, 32), seed=0)
    >>> first, second = gen.draw(4), gen.draw(4)
    >>> bool((first.mom0 != second.mom0).any())
    True
    """

    def __init__(self, model, *, shape=(64, 64), pixel_scale=1 * u.arcsec, priors=None,
                 beam=2 * u.pix, noise=None, mask_snr=None, seed=None, device="cpu",
                 batch_size=512, alias_order="auto"):
        self.model = model
        self.shape = tuple(int(n) for n in shape)
        self.pixel_scale = pixel_scale_arcsec(pixel_scale)
        self.priors = priors
        self.beam = beam
        self.noise = noise
        self.mask_snr = mask_snr
        self.device = device
        self.batch_size = int(batch_size)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.renderer = DiskRenderer(type(model), self.shape, device=device,
                                     alias_order=alias_order)

    def draw(self, n):
        """Draw and render ``n`` galaxies; returns `SyntheticGalaxies`."""
        rng = self.rng
        ps = self.pixel_scale
        mc = type(self.model)
        params = draw_parameters(self.model, n, shape=self.shape, pixel_scale=ps * u.arcsec,
                                 priors=self.priors, seed=rng)
        beams = _beams(self.beam, n, ps, rng)
        canonical = {name: (params[name].to_value(mc.canonical_unit(name))
                            if mc.canonical_unit(name) is not None
                            else np.asarray(params[name]))
                     for name in mc.param_names}
        mom0 = np.empty((n,) + self.shape, dtype=np.float32)
        mom1 = np.empty_like(mom0)
        dev = self.device
        t0 = time.perf_counter()
        for start in range(0, n, self.batch_size):
            sl = slice(start, min(start + self.batch_size, n))
            m = sl.stop - sl.start
            p = {k: torch.as_tensor(v[sl], dtype=torch.float32, device=dev)
                 for k, v in canonical.items()}
            b = None if beams is None else torch.as_tensor(beams[sl], dtype=torch.float32,
                                                            device=dev)
            with torch.no_grad():
                m0, m1 = self.renderer(p, torch.full((m,), ps, device=dev), b)
            mom0[sl] = m0.cpu().numpy()
            mom1[sl] = m1.cpu().numpy()
        elapsed = time.perf_counter() - t0
        snr = rms = None
        if self.noise is not None:
            if isinstance(self.noise, (tuple, list)) or callable(self.noise):
                snr = _draw(self.noise, rng, n, None, "noise")
            else:
                snr = np.full(n, float(self.noise))
            rms = _add_noise(mom0, mom1, beams, ps, snr, rng)
        _mask(mom0, mom1, rms, self.mask_snr)
        info = {"galaxies_per_second": n / elapsed if elapsed > 0 else math.inf,
                "render_seconds": elapsed, "device": str(dev), "noise": self.noise,
                "mask_snr": self.mask_snr, "seed": self.seed}
        if snr is not None:
            params["snr"] = snr
        return SyntheticGalaxies(mom0=mom0, mom1=mom1, params=params,
                                 beams=beams if beams is not None else np.full((n, 3), np.nan),
                                 pixel_scale=ps * u.arcsec, model_class=mc, info=info)


def make_galaxies(model, n, *, shape=(64, 64), pixel_scale=1 * u.arcsec, priors=None,
                  beam=2 * u.pix, noise=None, mask_snr=None, seed=None, device="cpu",
                  batch_size=512, alias_order="auto"):
    """Draw and render ``n`` synthetic galaxies, as observed maps.

    Parameters
    ----------
    model : `~astrokin.models.KinematicDiskModel`
        Template model (see `draw_parameters`).
    n : int
        Number of galaxies.
    shape : tuple of int
        ``(ny, nx)`` of the maps.
    pixel_scale : `~astropy.units.Quantity`
        Pixel size.
    priors : dict, optional
        See `draw_parameters`.
    beam : beam-like, `BeamPrior`, Quantity in pixels, or None
        The same beam for all (any `astrokin.beams.to_beam` input, or a round
        FWHM in ``u.pix``), random beams (`BeamPrior`), or none.
    noise : float or (float, float), optional
        Peak signal-to-noise ratio of mom0 (or a range, drawn uniformly per
        galaxy). Gaussian noise of RMS ``peak / snr``, correlated on the
        beam's scale, is added to mom0, and mom1 gets velocity noise that
        grows as the intensity falls (``sigma_v = 10 km/s * sqrt(snr) * rms /
        mom0``, capped at 50 km/s), as moment maps of a noisy cube do.
    mask_snr : float, optional
        Mask pixels whose (noisy) mom0 is below ``mask_snr`` times the noise
        RMS (or, without noise, below ``mask_snr`` x 1e-3 of the peak): mom1
        becomes NaN there and mom0 zero, as in clipped moment maps.
    seed : int, optional
        Reproducible parameters, beams and noise.
    device : str
        Torch device to render on.
    batch_size : int
        Galaxies rendered per batch.
    alias_order : int or "auto"
        Passed to `~astrokin.rendering.DiskRenderer`.

    Returns
    -------
    galaxies : `SyntheticGalaxies`
        Maps, true parameters (with ``snr`` when noise was added) and beams;
        ``info['galaxies_per_second']`` is the rendering rate.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.synthetic import BeamPrior, make_galaxies
    >>> gals = make_galaxies(ExponentialArctanDisk(), 8, shape=(32, 32), seed=2,
    ...                      beam=BeamPrior(major=(1.5, 3) * u.pix, axis_ratio=(0.6, 1)),
    ...                      noise=30, mask_snr=3)
    >>> gals.mom0.shape, len(gals)
    ((8, 32, 32), 8)
    >>> bool(np.isnan(gals.mom1).any())
    True
    """
    return SyntheticGenerator(model, shape=shape, pixel_scale=pixel_scale, priors=priors,
                              beam=beam, noise=noise, mask_snr=mask_snr, seed=seed,
                              device=device, batch_size=batch_size,
                              alias_order=alias_order).draw(n)


class _Values:
    """Attribute access to drawn values, for evaluating astropy ties."""

    def __init__(self, values):
        self._values = values

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


def _draw(prior, rng, n, unit, name, drawn=None):
    if callable(prior):
        takes_values = len(inspect.signature(prior).parameters) >= 3
        out = prior(rng, n, drawn) if takes_values else prior(rng, n)
    else:
        if len(prior) != 2:
            raise ValueError(f"The prior of {name!r} must be (low, high) or a callable.")
        lo, hi = (_canonical(p, unit, name) for p in prior)
        out = rng.uniform(lo, hi, n)
    out = _canonical(out, unit, name)
    return np.broadcast_to(np.asarray(out, dtype=float), (n,)).copy()


def _canonical(value, unit, name):
    if isinstance(value, u.Quantity):
        if unit is None:
            raise u.UnitsError(f"{name!r} is dimensionless; its prior has unit {value.unit}.")
        return value.to_value(unit)
    return value


def _default_range(model, name, half_width):
    mc = type(model)
    par = getattr(model, name)
    unit = mc.canonical_unit(name)
    lo, hi = par.bounds
    if par.unit is not None and unit is not None:
        lo = None if lo is None else (lo * par.unit).to_value(unit)
        hi = None if hi is None else (hi * par.unit).to_value(unit)
    if lo is not None and hi is not None:
        return lo, hi
    if name in ("x_0", "y_0"):
        return -CENTRE_FRACTION * half_width, CENTRE_FRACTION * half_width
    if name == "v_sys":
        return V_SYS_RANGE
    if unit == u.arcsec:
        f_lo, f_hi = LENGTH_FRACTIONS.get(name, DEFAULT_LENGTH_FRACTION)
        return max(f_lo * half_width, lo or 0.0), f_hi * half_width
    raise ValueError(
        f"Parameter {name!r} has no finite bounds and no default range; give it a prior "
        "or bounds."
    )


def _beams(beam, n, ps, rng):
    if beam is None:
        return None
    if isinstance(beam, BeamPrior):
        return beam.draw(n, ps, rng)
    if isinstance(beam, u.Quantity) and beam.unit.is_equivalent(u.pix):
        beam = beam.to_value(u.pix) * ps * u.arcsec
    return np.tile(np.asarray(beam_parameters(beam), dtype=float), (n, 1))


def _add_noise(mom0, mom1, beams, ps, snr, rng):
    from scipy import ndimage

    n = mom0.shape[0]
    peak = mom0.reshape(n, -1).max(axis=1)
    rms = peak / snr
    for i in range(n):
        # Noise correlated on the beam scale, renormalised to unit RMS.
        sigma = 0.0
        if beams is not None:
            sigma = math.sqrt(beams[i, 0] * beams[i, 1]) / ps / math.sqrt(8 * math.log(2))
        white0 = rng.standard_normal(mom0.shape[1:])
        white1 = rng.standard_normal(mom0.shape[1:])
        if sigma > 0:
            white0 = ndimage.gaussian_filter(white0, sigma)
            white1 = ndimage.gaussian_filter(white1, sigma)
            white0 /= white0.std()
            white1 /= white1.std()
        sigma_v = np.minimum(10.0 * math.sqrt(snr[i]) * rms[i] / np.maximum(mom0[i], 1e-30),
                             50.0)
        mom0[i] += (rms[i] * white0).astype(np.float32)
        mom1[i] += (sigma_v * white1).astype(np.float32)
    return rms


def _mask(mom0, mom1, rms, mask_snr):
    if mask_snr is None:
        return
    n = mom0.shape[0]
    level = rms if rms is not None else 1e-3 * mom0.reshape(n, -1).max(axis=1)
    masked = mom0 < (mask_snr * level)[:, None, None]
    mom1[masked] = np.nan
    mom0[masked] = 0.0


#: Surface-brightness families of `RealisticGenerator` (profiles of ``f = r / r_outer``).
BRIGHTNESS_FAMILIES = ("exponential", "hole", "ring", "exponential+ring", "truncated")
#: Rotation-curve families of `RealisticGenerator`.
ROTATION_FAMILIES = ("arctan", "courteau", "solid-body", "bulge")


class RealisticGenerator:
    r"""Ring-by-ring discs drawn from a realistic prior, rendered into observed-like maps.

    The galaxies are `~astrokin.models.TiltedRingDisk` models whose node
    values follow families of real discs, so that a network trained on them
    has seen rings, holes and truncations, bulge peaks and declining curves:

    - **surface brightness** (`BRIGHTNESS_FAMILIES`, as functions of
      :math:`f = r / r_{\rm outer}`): exponential (scale 0.15-0.6); an
      exponential (scale 0.3-0.8) with a central hole (radius 0.1-0.4, the
      centre at 10-40%); a Gaussian ring (at 0.3-0.8, width 0.08-0.25, on a floor of
      10-40%); an exponential plus a ring (0.2-1.5 times the centre); a flat
      core with a sharp truncation at 0.6-1.0;
    - **rotation curves** (`ROTATION_FAMILIES`): arctan (turnover 0.02-0.5);
      Courteau (1997), rising or declining (:math:`\beta` from -0.3 to 0.3);
      solid body to flat; a flat disc plus a central bulge or black-hole peak
      (0.5-1.3 times the flat speed at 0.03-0.15);
    - **texture**: clumps (a log-normal random field in the disc plane,
      correlated over 0.5-1.5 beams, with a spread of 0.3-0.8 in its
      logarithm) and two-armed
      logarithmic spirals (pitch 10-30 deg, contrast 20-60%), multiplying the
      intensity map;
    - **observing**: beams of 2-6 pixels (axis ratio 0.5-1), discs 4-30 beams
      across, every PA, inclinations 10-88 deg, :math:`V \sin i` 50-400 km/s,
      centre offsets up to 15% of the half-width, systemic velocities, noise
      correlated on the beam's scale at peak S/N 5-60 (`SyntheticGenerator`'s
      noise model) and the S/N clip of the maps.

    What maps rendered from the model cannot show is left out: the texture
    multiplies the intensity map, but does not reweight the beam-smeared
    velocities; warps, non-circular motions, dispersion and cube-level noise
    and masks are what the KinMS benchmark (``benchmarks/realistic_mocks.py``)
    tests the network against.

    Parameters
    ----------
    n_rings : int, optional
        Rings of the `~astrokin.models.TiltedRingDisk` (default 10).
    shape : tuple of int, optional
        ``(ny, nx)`` of the maps (1-arcsec pixels).
    noise_fraction : float, optional
        Fraction of the galaxies given noise (the others are noiseless, clipped
        at 1e-3 of the peak).
    snr_range, beam_major_px, beam_axis_ratio, diameter_beams : tuple, optional
        Ranges of the peak S/N of mom0, the beam FWHM (pixels), its axis ratio
        and the disc diameter (:math:`2 r_{\rm outer}`, in beam FWHM).
    texture_fraction : float, optional
        Fraction of the galaxies given clumps, arms or both.
    mask_snr : float, optional
        Clip of the noisy maps, in units of the noise RMS.
    seed : int, optional
    device : str, optional
        Where to render.

    Examples
    --------
    >>> from astrokin.synthetic import RealisticGenerator
    >>> gals = RealisticGenerator(n_rings=6, seed=0).draw(8)
    >>> gals.mom0.shape, type(gals.model(0)).__name__
    ((8, 64, 64), 'TiltedRingDisk6')
    >>> from astrokin.synthetic import BRIGHTNESS_FAMILIES
    >>> sorted(set(gals.info["brightness_family"]) - set(BRIGHTNESS_FAMILIES))
    []
    """

    def __init__(self, n_rings=10, *, shape=(64, 64), noise_fraction=0.85,
                 snr_range=(5.0, 60.0), beam_major_px=(2.0, 6.0), beam_axis_ratio=(0.5, 1.0),
                 diameter_beams=(4.0, 30.0), texture_fraction=0.5, mask_snr=3.0, seed=None,
                 device="cpu"):
        from astrokin.models import TiltedRingDisk

        self.model = TiltedRingDisk(n_rings=n_rings)
        self.model_class = type(self.model)
        self.shape = tuple(int(n) for n in shape)
        self.noise_fraction = float(noise_fraction)
        self.snr_range = tuple(snr_range)
        self.beam = BeamPrior(major=tuple(beam_major_px) * u.pix,
                              axis_ratio=tuple(beam_axis_ratio))
        self.diameter_beams = tuple(diameter_beams)
        self.texture_fraction = float(texture_fraction)
        self.mask_snr = float(mask_snr)
        self.device = device
        self.rng = np.random.default_rng(seed)
        self.renderer = DiskRenderer(self.model_class, self.shape, device=device, alias_order=0)

    def draw(self, n):
        """Draw and render ``n`` galaxies; returns `SyntheticGalaxies`."""
        rng, mc = self.rng, self.model_class
        n_rings = mc.n_rings
        half_width = 0.5 * (min(self.shape) - 1)
        beams = self.beam.draw(n, 1.0, rng)
        # Diameters log-uniform in beams, up to what the map holds.
        lo = np.minimum(self.diameter_beams[0] * beams[:, 0], 1.2 * half_width)
        hi = np.clip(self.diameter_beams[1] * beams[:, 0], lo, 1.6 * half_width)
        r_outer = 0.5 * np.exp(rng.uniform(np.log(lo), np.log(hi)))
        f = np.arange(1, n_rings + 1) / n_rings
        sb_family = rng.choice(BRIGHTNESS_FAMILIES, n)
        v_family = rng.choice(ROTATION_FAMILIES, n)
        sb = np.stack([_brightness(fam, f, rng) for fam in sb_family])
        shape_v = np.stack([_rotation(fam, f, rng) for fam in v_family])
        inclination = rng.uniform(10.0, 88.0, n)
        vsini = rng.uniform(50.0, 400.0, n)
        # Deprojected speeds stay within the model's bounds (1000 km/s).
        v_flat = np.minimum(vsini / np.sin(np.radians(inclination)), 900.0 / shape_v.max(1))
        values = {"amplitude": np.ones(n), "inclination": inclination,
                  "pa": rng.uniform(0.0, 360.0, n),
                  "x_0": rng.uniform(-CENTRE_FRACTION, CENTRE_FRACTION, n) * half_width,
                  "y_0": rng.uniform(-CENTRE_FRACTION, CENTRE_FRACTION, n) * half_width,
                  "v_sys": rng.uniform(*V_SYS_RANGE, n), "z_scale": np.zeros(n),
                  "r_outer": r_outer}
        for k in range(n_rings):
            values[f"v_{k + 1}"] = v_flat * shape_v[:, k]
            values[f"sb_{k + 1}"] = sb[:, k]
        for name in mc.dispersion_parameters:  # no map drawn here depends on it
            values[name] = np.full(n, float(getattr(mc, name).default))
        p = {k: torch.as_tensor(values[k], dtype=torch.float32, device=self.device)
             for k in mc.param_names}
        t0 = time.perf_counter()
        with torch.no_grad():
            m0, m1 = self.renderer(p, torch.ones(n, device=self.device),
                                   torch.as_tensor(beams, dtype=torch.float32,
                                                   device=self.device))
        mom0 = m0.cpu().numpy().astype(np.float32)
        mom1 = m1.cpu().numpy().astype(np.float32)
        elapsed = time.perf_counter() - t0
        texture = np.array([_texture(mom0[i], values, i, beams[i], rng)
                            if rng.random() < self.texture_fraction else "none"
                            for i in range(n)])
        noisy = rng.random(n) < self.noise_fraction
        snr = np.where(noisy, rng.uniform(*self.snr_range, n), np.inf)
        rms = np.zeros(n)
        if noisy.any():
            idx = np.flatnonzero(noisy)
            m0n, m1n = mom0[idx], mom1[idx]
            rms[idx] = _add_noise(m0n, m1n, beams[idx], 1.0, snr[idx], rng)
            _mask(m0n, m1n, rms[idx], self.mask_snr)
            mom0[idx], mom1[idx] = m0n, m1n
        if (~noisy).any():
            idx = np.flatnonzero(~noisy)
            m0c, m1c = mom0[idx], mom1[idx]
            _mask(m0c, m1c, None, 1.0)
            mom0[idx], mom1[idx] = m0c, m1c
        table = QTable()
        for name in mc.param_names:
            unit = mc.canonical_unit(name)
            table[name] = values[name] * unit if unit is not None else values[name]
        table["snr"] = snr
        info = {"galaxies_per_second": n / elapsed if elapsed > 0 else math.inf,
                "brightness_family": sb_family, "rotation_family": v_family,
                "texture": texture, "noise_rms": rms, "device": str(self.device)}
        return SyntheticGalaxies(mom0=mom0, mom1=mom1, params=table, beams=beams,
                                 pixel_scale=1.0 * u.arcsec, model_class=mc, info=info)


def _brightness(family, f, rng):
    """Node values (relative to the centre) of one surface-brightness family."""
    r = np.concatenate([[0.0], f])
    if family == "exponential":
        s = np.exp(-r / rng.uniform(0.15, 0.6))
    elif family == "hole":
        depth, radius = rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.4)
        s = np.exp(-r / rng.uniform(0.3, 0.8)) * (depth + (1 - depth)
                                                   * (1 - np.exp(-(r / radius) ** 2)))
    elif family == "ring":
        s = np.maximum(np.exp(-0.5 * ((r - rng.uniform(0.3, 0.8)) / rng.uniform(0.08, 0.25))
                              ** 2), rng.uniform(0.1, 0.4) * np.exp(-r / 0.5))
    elif family == "exponential+ring":
        s = np.exp(-r / rng.uniform(0.1, 0.4)) + rng.uniform(0.2, 1.5) * np.exp(
            -0.5 * ((r - rng.uniform(0.3, 0.8)) / rng.uniform(0.05, 0.15)) ** 2)
    else:  # truncated: a flat core ending sharply
        edge, width = rng.uniform(0.6, 1.0), rng.uniform(0.02, 0.08)
        s = (1.0 - rng.uniform(0.0, 0.5) * r) / (1.0 + np.exp((r - edge) / width))
    return np.clip(s[1:] / s[0], 1e-3, 12.0)


def _rotation(family, f, rng):
    """Node values (in units of the flat speed) of one rotation-curve family."""
    if family == "arctan":
        v = 2 / np.pi * np.arctan(f / rng.uniform(0.02, 0.5))
    elif family == "courteau":
        # Courteau (1997): v = (1 + x)^beta / (1 + x^gamma)^(1/gamma), x = r_t / r.
        x = rng.uniform(0.05, 0.5) / f
        v = (1 + x) ** rng.uniform(-0.3, 0.3) / (1 + x ** (g := rng.uniform(1.0, 4.0))) ** (1 / g)
        v = v / v.max()
    elif family == "solid-body":
        t, m = rng.uniform(0.2, 1.0), rng.uniform(2.0, 6.0)
        v = f / (f ** m + t ** m) ** (1 / m)
        v = v / v.max()
    else:  # a bulge or black-hole peak on a flat disc
        disc = 2 / np.pi * np.arctan(f / rng.uniform(0.1, 0.5))
        rb, peak = rng.uniform(0.03, 0.15), rng.uniform(0.5, 1.3)
        v = np.sqrt(disc ** 2 + peak ** 2 * 4 * f * rb / (f + rb) ** 2)
    return np.clip(v, 0.02, None)


def _texture(mom0, values, i, beam, rng):
    """Multiply one intensity map by clumps and/or spiral arms in the disc plane (in place)."""
    from scipy import ndimage

    kind = str(rng.choice(TEXTURES))
    ny, nx = mom0.shape
    y, x = np.mgrid[:ny, :nx].astype(float)
    major, minor = disc_coordinates(np, x - (nx - 1) / 2 - values["x_0"][i],
                                    y - (ny - 1) / 2 - values["y_0"][i], values["pa"][i],
                                    values["inclination"][i])
    field = texture_field(major, minor, values["r_outer"][i], beam[0], kind, rng)
    # The beam smooths the texture as it smooths the disc.
    smooth = ndimage.gaussian_filter(field, np.sqrt(beam[0] * beam[1]) * FWHM_TO_SIGMA)
    mom0 *= smooth.astype(mom0.dtype)
    return kind


#: The textures of `RealisticGenerator` (`texture_field`).
TEXTURES = ("clumps", "arms", "clumps+arms")


def texture_field(major, minor, r_outer, beam_fwhm, kind, rng):
    r"""A random multiplicative texture of a disc: clumps, two spiral arms, or both.

    Clumps are a log-normal random field (spread 0.3-0.8 in its logarithm,
    mean 1) correlated over 0.5-1.5 beams; arms a two-armed logarithmic
    spiral :math:`1 + A \cos 2(	heta - \ln r / 	an p)`, contrast
    :math:`A` 0.2-0.6, pitch :math:`p` 10-30 deg. Both are functions of the
    disc plane, so they rotate with the disc and are squeezed by its
    inclination on the sky.

    Parameters
    ----------
    major, minor : numpy.ndarray
        Disc-plane coordinates (arcsec,
        `~astrokin.models.disc_coordinates`) of the points.
    r_outer : float
        The disc's radius (arcsec): arms wind in ``ln(r / r_outer)``.
    beam_fwhm : float
        Sets the size of the clumps (arcsec).
    kind : str
        One of `TEXTURES`.
    rng : numpy.random.Generator

    Returns
    -------
    field : numpy.ndarray
        Positive, of the shape of ``major``.

    Examples
    --------
    >>> import numpy as np
    >>> from astrokin.synthetic import texture_field
    >>> y, x = np.mgrid[-20:21, -20:21].astype(float)
    >>> f = texture_field(y, x, 20.0, 3.0, "clumps", np.random.default_rng(0))
    >>> bool(f.min() > 0), bool(0.7 < f.mean() < 1.3)
    (True, True)
    """
    from scipy import ndimage

    if kind not in TEXTURES:
        raise ValueError(f"kind must be one of {TEXTURES}; got {kind!r}.")
    major, minor = np.asarray(major, dtype=float), np.asarray(minor, dtype=float)
    field = np.ones_like(major)
    if "clumps" in kind:
        # The field on a grid of 1-arcsec cells covering the points, wrapped.
        extent = float(np.max(np.abs(np.concatenate([major.ravel(), minor.ravel()]))))
        size = int(2 * np.ceil(extent) + 8)
        g = ndimage.gaussian_filter(rng.standard_normal((size, size)),
                                    rng.uniform(0.5, 1.5) * beam_fwhm * FWHM_TO_SIGMA,
                                    mode="wrap")
        g /= g.std()
        spread = rng.uniform(0.3, 0.8)
        clumps = np.exp(spread * g - 0.5 * spread ** 2)
        field *= ndimage.map_coordinates(clumps, [minor + size / 2, major + size / 2], order=1,
                                         mode="grid-wrap")
    if "arms" in kind:
        r = np.hypot(major, minor) / r_outer + 1e-3
        theta = np.arctan2(minor, major)
        pitch = np.radians(rng.uniform(10.0, 30.0))
        field *= 1 + rng.uniform(0.2, 0.6) * np.cos(2 * (theta - np.log(r) / np.tan(pitch))
                                                    + rng.uniform(0, 2 * np.pi))
    return field
