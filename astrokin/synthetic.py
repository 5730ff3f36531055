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
from astrokin.beams import beam_parameters
from astrokin.fitting.parameters import CENTRE_FRACTION, DEFAULT_LENGTH_FRACTION, LENGTH_FRACTIONS
from astrokin.rendering import DiskRenderer

__all__ = [
    "BeamPrior",
    "SyntheticGalaxies",
    "SyntheticGenerator",
    "draw_parameters",
    "make_galaxies",
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
        -100..100 km/s.
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
        elif model.fixed[name] or model.tied[name]:
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
