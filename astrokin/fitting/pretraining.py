"""Pre-training networks for blind fitting on synthetic galaxies, and calibrating them.

The recipe (`DEFAULT_RECIPE`, run by `pretrain`; from the command line
``astrokin pretrain -o net.pt`` or ``python -m astrokin.fitting.pretraining
--out net.pt``):

1. **Supervised phase.** Fresh synthetic galaxies for every step
   (`astrokin.synthetic.SyntheticGenerator`: the paper's Table 2 ranges —
   inclination 10-90 deg, ``v sin i`` 50-500 km/s, ``r_scale`` 0.1-0.35 and
   ``r_turn`` 0.01-0.8 of the map half-width — plus every PA, centre offsets,
   systemic velocities, round and elliptical beams of 1-4 pixels, noise and
   S/N clipping, on 64 and 100 pixel maps). Their parameters are known, so
   the encoders learn them directly: mean squared error between the encoder
   outputs and the outputs that would give the true parameters
   (`~astrokin.fitting.parameters.ParameterLayout.to_outputs`). A labelled
   start is much faster than self-supervision from random weights, where
   the decoder's loss surface has flat regions (e.g. edge-on) that
   gradients do not leave.
2. **Self-supervised phase.** The paper's loss: rendered against input maps,
   on fresh galaxies, at a lower learning rate, with a small supervised term
   kept as an anchor. It adapts the network to what the decoder can
   reproduce (beam smearing, masks).
3. **Calibration.** MC-dropout spreads are a lower limit on the error (the
   paper finds 35% coverage of 1-sigma intervals). On held-out synthetic
   galaxies, the factor per parameter that makes 68.3% of the true values
   fall within the scaled 1-sigma interval is measured and stored with the
   network; the fitter applies it to ``stds`` (the raw spreads stay in
   ``fit_info['std_uncalibrated']``).

Progress (validation errors every ``eval_every`` steps) is logged, and the
recipe and the validation figures are saved in the network's metadata. The
recipe key ``init`` continues from a saved network (or ``"pretrained"``, the
bundled one), so a longer schedule can be run in stages (each stage's
learning rate decays from its own start).

**Specialising to a survey.** The bundled network covers a wide range of
set-ups. A survey whose maps share one set-up (beam in pixels, noise, map
size; a known PA if the maps are derotated) gets a more accurate network by
continuing from the bundled one on galaxies drawn like its own: the recipe's
``shapes``, ``beam_major_px``, ``beam_axis_ratio``, ``noise_fraction``,
``snr_range`` and ``priors`` (per-parameter ``[low, high]`` or a single value,
in the model's canonical units: deg, km/s, and arcsec of the 1-arcsec
training pixels) describe them. On the paper's set-up this takes 10 minutes
on two CPU cores and divides the benchmark errors by two to three (see
``docs/pretrained.rst``). Calibrate the result on simulations of the survey
(`~astrokin.fitting.NeuralKinematicFitter.calibrate`).
"""

import json
import os
import time

import numpy as np
from astropy import units as u

from astrokin._validation import check_bool, check_integer, check_real

__all__ = ["DEFAULT_RECIPE", "MAX_BATCH_SIZE", "MAX_BEAM_PX", "MAX_HELD_OUT", "MAX_MAP_SIDE",
           "MAX_SEED", "MAX_STEPS", "MIN_MAP_SIDE", "RING_RECIPE", "calibrate",
           "calibrate_network", "check_recipe", "pretrain", "read_recipe", "run"]

#: Limits of a recipe (`check_recipe`): generous, but a typo such as
#: ``shapes=[16384]`` or ``calibration_size=10**9`` is refused before it starts
#: a job of days or of terabytes.
#:
#: Sides of the square training maps (``shapes``), in pixels: the renderer's
#: Fourier tables and every batch grow with the square of the side (the
#: bundled networks train on 64-128).
MIN_MAP_SIDE, MAX_MAP_SIDE = 16, 1024
#: Galaxies per training step (``batch_size``; the bundled networks: 64).
MAX_BATCH_SIZE = 4096
#: Optimiser steps of a phase (``supervised_steps``, ``selfsupervised_steps``)
#: and ``eval_every`` (the bundled networks: 24,000 steps in all).
MAX_STEPS = 1_000_000
#: Held-out galaxies (``validation_size``, ``calibration_size``): all are held
#: in memory at once, ~72 kB each (3.6 GB at the limit; the default: 1024).
MAX_HELD_OUT = 50_000
#: Beam FWHM in pixels (``beam_major_px``, ``beam_major_px_large_maps``): as
#: wide as the network's 64-pixel input.
MAX_BEAM_PX = 64.0
#: ``seed``: each phase seeds numpy and torch with the seed plus small offsets.
MAX_SEED = 2**32 - 1

#: The recipe of the bundled network. Lengths are fractions of the map
#: half-width (the model's defaults), beams in pixels of the rendered maps.
DEFAULT_RECIPE = {
    "model": "astrokin.models:ExponentialArctanDisk",
    "v_max_bounds": [20.0, 3000.0],
    "vsini_range": [50.0, 500.0],
    "inclination_range": [10.0, 90.0],
    "v_sys_range": [-200.0, 200.0],
    "shapes": [64, 64, 64, 100],
    "beam_major_px": [1.0, 4.0],
    "beam_major_px_large_maps": [2.0, 4.0],
    "beam_axis_ratio": [0.5, 1.0],
    "noise_fraction": 0.7,
    "snr_range": [8.0, 100.0],
    "mask_snr": 3.0,
    "priors": {},
    "prior": "paper",
    "free": [],
    "bounds": {},
    "texture_fraction": 0.5,
    "diameter_beams": [4.0, 30.0],
    "batch_size": 64,
    "supervised_steps": 4000,
    "supervised_lr": 1e-3,
    "selfsupervised_steps": 600,
    "selfsupervised_lr": 1e-4,
    "anchor_weight": 0.1,
    "lr_final_fraction": 0.05,
    "dropout": 0.1,
    "seed": 0,
    "init": None,
    "validation_size": 512,
    "calibration_size": 1024,
    "calibration_mc_samples": 300,
    "eval_every": 250,
}


#: The recipe of the bundled ring network: `TiltedRingDisk` with 10 rings, its
#: outermost radius predicted with the rest (the fitter then puts the rings at
#: each map's own extent), on galaxies of the realistic prior
#: (`astrokin.synthetic.RealisticGenerator`).
RING_RECIPE = {
    "model": "astrokin.models.rings:TiltedRingDisk10",
    "prior": "realistic",
    "free": ["r_outer"],
    "bounds": {"sb_*": [0.0, 12.0]},
    "shapes": [64, 64, 96, 128],
    "beam_major_px": [2.0, 6.0],
    "beam_major_px_large_maps": [2.0, 6.0],
    "snr_range": [5.0, 60.0],
    "noise_fraction": 0.85,
    "supervised_steps": 6500,
    "selfsupervised_steps": 0,
    "eval_every": 1000,
}


def _model_from_recipe(recipe):
    """The model a recipe names: astrokin's, or of a module already imported.

    A recipe can come from a network file (``--calibrate-only``), so the
    module it names is imported only as `~astrokin.fitting.persistence`
    would: never one that is neither astrokin's nor already imported.
    """
    import fnmatch

    model_class = _recipe_model_class(recipe["model"])
    model = model_class()
    scale = model_class.velocity_scale_parameter
    if scale is not None:
        getattr(model, scale).bounds = tuple(recipe["v_max_bounds"])
    for name in recipe.get("free") or ():
        model.fixed[name] = False
    for pattern, (lo, hi) in (recipe.get("bounds") or {}).items():
        for name in fnmatch.filter(model.param_names, pattern):
            model.bounds[name] = (lo, hi)
    return model


def _recipe_prior(model, name, value):
    """A recipe's prior of one parameter (checked by `check_recipe`): ``(lo, hi)``, canonical."""
    lohi = np.atleast_1d(np.asarray(value, dtype=float))
    if lohi.size == 1:
        lohi = np.repeat(lohi, 2)
    unit = type(model).canonical_unit(name)
    return tuple(lohi) * unit if unit is not None else tuple(lohi)


# ----------------------------------------------------------------------
# Checking a recipe, every key, before anything runs.

#: Counts: ``key: (minimum, maximum, what the maximum is)``.
_COUNTS = {
    "batch_size": (1, MAX_BATCH_SIZE, "MAX_BATCH_SIZE"),
    "supervised_steps": (0, MAX_STEPS, "MAX_STEPS"),
    "selfsupervised_steps": (0, MAX_STEPS, "MAX_STEPS"),
    "eval_every": (1, MAX_STEPS, "MAX_STEPS"),
    "validation_size": (1, MAX_HELD_OUT, "MAX_HELD_OUT: all are held in memory at once"),
    "calibration_size": (1, MAX_HELD_OUT, "MAX_HELD_OUT: all are held in memory at once"),
    "calibration_mc_samples": (2, None, "MAX_MC_SAMPLES"),
}
#: Numbers: ``key: (the range in words, test)``.
_NUMBERS = {
    "noise_fraction": ("in [0, 1] (a fraction of the galaxies)", lambda x: 0 <= x <= 1),
    "texture_fraction": ("in [0, 1] (a fraction of the galaxies)", lambda x: 0 <= x <= 1),
    "mask_snr": (">= 0 (a clip in units of the noise)", lambda x: x >= 0),
    "supervised_lr": ("in (0, 1] (a learning rate)", lambda x: 0 < x <= 1),
    "selfsupervised_lr": ("in (0, 1] (a learning rate)", lambda x: 0 < x <= 1),
    "anchor_weight": (">= 0", lambda x: x >= 0),
    "lr_final_fraction": ("in (0, 1] (the final fraction of the learning rate)",
                          lambda x: 0 < x <= 1),
    "dropout": ("in [0, 1) (a probability)", lambda x: 0 <= x < 1),
}
#: Ranges ``[low, high]``: ``key: (the condition in words, test)``.
_RANGES = {
    "v_max_bounds": ("0 <= low < high (km/s)", lambda lo, hi: 0 <= lo < hi),
    "vsini_range": ("0 < low <= high (km/s)", lambda lo, hi: 0 < lo <= hi),
    "inclination_range": ("0 < low <= high <= 90 (deg)", lambda lo, hi: 0 < lo <= hi <= 90),
    "v_sys_range": ("low <= high (km/s)", lambda lo, hi: lo <= hi),
    "beam_major_px": (f"0 < low <= high <= {MAX_BEAM_PX:g} (pixels, MAX_BEAM_PX)",
                      lambda lo, hi: 0 < lo <= hi <= MAX_BEAM_PX),
    "beam_major_px_large_maps": (f"0 < low <= high <= {MAX_BEAM_PX:g} (pixels, MAX_BEAM_PX)",
                                 lambda lo, hi: 0 < lo <= hi <= MAX_BEAM_PX),
    "beam_axis_ratio": ("0 < low <= high <= 1", lambda lo, hi: 0 < lo <= hi <= 1),
    "snr_range": ("0 < low <= high", lambda lo, hi: 0 < lo <= hi),
    "diameter_beams": ("0 < low <= high", lambda lo, hi: 0 < lo <= hi),
}
_PRIORS = ("paper", "realistic")


def _key(key):
    return f"The recipe's {key!r}"


def _recipe_model_class(name):
    """The disc model class a recipe's ``model`` names (never importing a foreign module)."""
    from astrokin.exceptions import NetworkFormatError
    from astrokin.fitting.persistence import model_class_named

    if not isinstance(name, str):
        raise TypeError(f"{_key('model')} must name a disc model class as 'module:Class' (e.g. "
                        f"{DEFAULT_RECIPE['model']!r}); got {type(name).__name__} {name!r}.")
    if ":" not in name:
        raise ValueError(f"{_key('model')} must name a disc model class as 'module:Class' (e.g. "
                         f"{DEFAULT_RECIPE['model']!r}); got {name!r}.")
    try:
        return model_class_named(name, None, "the recipe")
    except NetworkFormatError as err:
        raise ValueError(f"{_key('model')} {name!r} cannot be used: {err}") from None


def _check_pair(key, value, words, test, allow_none=False):
    """A ``[low, high]`` pair of finite numbers (None too when ``allow_none``) passing ``test``."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__") \
            or len(value) != 2:
        raise TypeError(f"{key} must be [low, high], two numbers with {words}; got "
                        f"{type(value).__name__} {value!r}.")
    for end, v in zip(("low", "high"), value, strict=True):
        if not (allow_none and v is None):
            check_real(f"{key} {end}", v)
    if not test(*value):
        raise ValueError(f"{key} must be [low, high] with {words}; got {list(value)!r}.")


def _check_names(key, value):
    """A list of strings."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{_key(key)} must be a list of parameter names; got "
                        f"{type(value).__name__} {value!r}.")


def check_recipe(recipe, base=None):
    """Check a pre-training recipe, every key, before anything runs; the full recipe.

    Every key of ``recipe`` (overrides of `DEFAULT_RECIPE`, applied over
    ``base``) must be known, and every value of the full recipe of the
    right type and in a sane range: sizes, counts and steps positive
    integers up to the limits of this module (`MAX_MAP_SIDE`,
    `MAX_BATCH_SIZE`, `MAX_STEPS`, `MAX_HELD_OUT`,
    `~astrokin.fitting.fitter.MAX_MC_SAMPLES`, `MAX_SEED`), fractions and
    probabilities in [0, 1], ranges ``[low, high]`` ordered, the model an
    astrokin disc model (a module that is neither astrokin's nor imported is
    never imported), the parameters that ``priors``, ``free`` and
    ``bounds`` name its own, and ``prior`` one of ``'paper'`` and
    ``'realistic'`` (which draws ring discs: a
    `~astrokin.models.TiltedRingDisk` model). `read_recipe`, `pretrain`,
    `run` and `calibrate_network` call it, and ``--calibrate-only`` checks
    the recipe stored in the network file with it.

    Parameters
    ----------
    recipe : dict or None
        Overrides of `DEFAULT_RECIPE`.
    base : dict, optional
        Overrides the recipe applies over (e.g. `RING_RECIPE`); they are
        checked too.

    Returns
    -------
    full : dict
        `DEFAULT_RECIPE` updated with ``base`` and ``recipe``; counts as
        ``int``, ``init`` as ``str``.

    Raises
    ------
    TypeError
        If ``recipe`` is not a dict, or a value is of the wrong type (the
        message names the key, the value and what was expected).
    ValueError
        For an unknown key (the message lists the known ones), or a value
        out of its range.

    Examples
    --------
    >>> from astrokin.fitting.pretraining import check_recipe
    >>> check_recipe({"shapes": [64, 100], "supervised_steps": 8000})["supervised_steps"]
    8000
    >>> check_recipe({"calibration_size": 10**9})
    Traceback (most recent call last):
    ...
    ValueError: The recipe's 'calibration_size' must be at most 50,000 (...); got 1,000,000,000.
    >>> check_recipe({"epochs": 300})
    Traceback (most recent call last):
    ...
    ValueError: Unknown recipe keys: ['epochs']; the known keys are ['anchor_weight', ...].
    """
    import fnmatch

    from astrokin.fitting.fitter import MAX_MC_SAMPLES

    full = dict(DEFAULT_RECIPE)
    for what, given in (("base", base), ("recipe", recipe)):
        if given is None:
            continue
        if not isinstance(given, dict):
            raise TypeError(f"{what} must be a dict of DEFAULT_RECIPE overrides (KEY: VALUE); "
                            f"got {type(given).__name__} {given!r}.")
        unknown = [k for k in given if k not in DEFAULT_RECIPE]
        if unknown:
            raise ValueError(f"Unknown recipe keys: {sorted(unknown, key=str)}; the known keys "
                             f"are {sorted(DEFAULT_RECIPE)}.")
        full.update(given)
    for key, (minimum, maximum, why) in _COUNTS.items():
        value = full[key]
        check_integer(_key(key), value, minimum)
        maximum = MAX_MC_SAMPLES if maximum is None else maximum
        if value > maximum:
            raise ValueError(f"{_key(key)} must be at most {maximum:,} ({why}); got "
                             f"{int(value):,}.")
        full[key] = int(value)
    if full["seed"] is not None:
        check_integer(_key("seed"), full["seed"], 0)
        if full["seed"] > MAX_SEED:
            raise ValueError(f"{_key('seed')} must be at most {MAX_SEED} (MAX_SEED) or null; "
                             f"got {full['seed']}.")
        full["seed"] = int(full["seed"])
    for key, (words, test) in _NUMBERS.items():
        check_real(_key(key), full[key])
        if not test(full[key]):
            raise ValueError(f"{_key(key)} must be a number {words}; got {full[key]!r}.")
    for key, (words, test) in _RANGES.items():
        _check_pair(_key(key), full[key], words, test)
    shapes = full["shapes"]
    if isinstance(shapes, (list, tuple)) and not shapes:
        raise ValueError(f"{_key('shapes')} must hold at least one map side (e.g. [64, 100]); "
                         "got [].")
    if not isinstance(shapes, (list, tuple)):
        raise TypeError(f"{_key('shapes')} must be a non-empty list of map sides in pixels "
                        f"(e.g. [64, 100]); got {type(shapes).__name__} {shapes!r}.")
    for side in shapes:
        check_integer(f"{_key('shapes')} side {side!r}", side, MIN_MAP_SIDE)
        if side > MAX_MAP_SIDE:
            raise ValueError(f"{_key('shapes')} holds {side!r}: map sides must be "
                             f"{MIN_MAP_SIDE} to {MAX_MAP_SIDE} pixels (MAX_MAP_SIDE; every "
                             "batch grows with the square of the side).")
    full["shapes"] = [int(side) for side in shapes]
    init = full["init"]
    if init is not None:
        if isinstance(init, os.PathLike):
            init = full["init"] = os.fspath(init)
        if not isinstance(init, str) or not init:
            raise TypeError(f"{_key('init')} must be null, 'pretrained' or the file of a saved "
                            f"network; got {type(init).__name__} {init!r}.")
    if not isinstance(full["prior"], str) or full["prior"] not in _PRIORS:
        raise ValueError(f"{_key('prior')} must be 'paper' or 'realistic', not "
                         f"{full['prior']!r}.")
    model_class = _recipe_model_class(full["model"])
    names = list(model_class.param_names)
    if full["prior"] == "realistic":
        from astrokin.models import TiltedRingDisk

        if not (issubclass(model_class, TiltedRingDisk) and model_class.n_rings >= 1):
            raise ValueError(f"The recipe's 'prior' 'realistic' draws ring discs: its model must "
                             f"be a TiltedRingDisk of n rings (e.g. "
                             f"{RING_RECIPE['model']!r}); got {full['model']!r}.")
    free = full["free"] or []
    _check_names("free", free)
    for name in free:
        if name not in names:
            raise ValueError(f"The recipe frees {name!r} (its 'free'), not a parameter of "
                             f"{model_class.__name__}.")
    priors, bounds = full["priors"] or {}, full["bounds"] or {}
    for key, given in (("priors", priors), ("bounds", bounds)):
        if not isinstance(given, dict):
            raise TypeError(f"{_key(key)} must be an object of parameter: [low, high]"
                            f"{' or value' if key == 'priors' else ''}; got "
                            f"{type(given).__name__} {given!r}.")
    for name, value in priors.items():
        if name not in names:
            raise ValueError(f"The recipe's 'priors' name {name!r}, not a parameter of "
                             f"{model_class.__name__} ({', '.join(names)}).")
        try:
            lohi = np.atleast_1d(np.asarray(value, dtype=float))
        except (TypeError, ValueError):
            lohi = np.array([])
        if isinstance(value, (bool, str)) or lohi.shape not in ((1,), (2,)) \
                or not np.all(np.isfinite(lohi)) or lohi[0] > lohi[-1]:
            raise ValueError(f"The recipe's 'priors' of {name!r} must be one value or [low, high] "
                             f"with low <= high; got {value!r}.")
    for pattern, value in bounds.items():
        if not fnmatch.filter(names, pattern):
            raise ValueError(f"The recipe's 'bounds' name {pattern!r}, which matches no "
                             f"parameter of {model_class.__name__}.")
        _check_pair(f"The recipe's 'bounds' of {pattern!r}", value, "low < high (null: none)",
                    lambda lo, hi: lo is None or hi is None or lo < hi, allow_none=True)
    return full


def _generators(model, recipe, seed):
    from astrokin.synthetic import BeamPrior, RealisticGenerator, SyntheticGenerator

    if recipe["prior"] == "realistic":
        gens = {}
        for i, size in enumerate(sorted(set(recipe["shapes"]))):
            major = recipe["beam_major_px"] if size <= 64 else recipe["beam_major_px_large_maps"]
            common = dict(n_rings=type(model).n_rings, shape=(size, size),
                          snr_range=tuple(recipe["snr_range"]), beam_major_px=tuple(major),
                          beam_axis_ratio=tuple(recipe["beam_axis_ratio"]),
                          diameter_beams=tuple(recipe["diameter_beams"]),
                          texture_fraction=recipe["texture_fraction"],
                          mask_snr=recipe["mask_snr"])
            gens[size] = {kind: RealisticGenerator(
                noise_fraction=float(kind == "noisy"),
                seed=None if seed is None else seed + 1000 * i + j, **common)
                for j, kind in enumerate(("clean", "noisy"))}
        return gens
    if recipe["prior"] != "paper":
        raise ValueError(f"The recipe's prior must be 'paper' or 'realistic', not "
                         f"{recipe['prior']!r}.")

    vlo, vhi = recipe["vsini_range"]
    scale = type(model).velocity_scale_parameter

    def speed(rng, n, drawn):
        return rng.uniform(vlo, vhi, n) / np.sin(np.deg2rad(drawn["inclination"]))

    priors = {"inclination": tuple(recipe["inclination_range"]) * u.deg,
              "v_sys": tuple(recipe["v_sys_range"]) * u.km / u.s}
    if scale is not None:
        priors[scale] = speed
    for name, value in (recipe.get("priors") or {}).items():
        priors[name] = _recipe_prior(model, name, value)
    gens = {}
    for i, size in enumerate(sorted(set(recipe["shapes"]))):
        major = recipe["beam_major_px"] if size <= 64 else recipe["beam_major_px_large_maps"]
        beam = BeamPrior(major=tuple(major) * u.pix, axis_ratio=tuple(recipe["beam_axis_ratio"]))
        # Training maps are rendered without folding in frequencies beyond Nyquist
        # (alias order 0): 10x faster, and for beams of 1-2 pixels the error it
        # leaves (0.1 km/s median, a few km/s in rare pixels; docs/rendering) is
        # well below the noise the maps are given.
        common = dict(shape=(size, size), pixel_scale=1 * u.arcsec, priors=priors, beam=beam,
                      seed=None if seed is None else seed + 1000 * i, alias_order=0)
        gens[size] = {
            # Noiseless maps are still clipped, at 1e-3 of the peak (as the
            # paper's KinMS maps were): real maps never extend to where a disc is
            # 1e-5 of its peak, and float32 velocities there are round-off.
            "clean": SyntheticGenerator(model, mask_snr=1.0, **common),
            "noisy": SyntheticGenerator(model, noise=tuple(recipe["snr_range"]),
                                        mask_snr=recipe["mask_snr"],
                                        **{**common, "seed": None if seed is None
                                           else seed + 1000 * i + 1}),
        }
    return gens


def _batch(gens, recipe, rng, n):
    """A prepared batch of fresh synthetic galaxies and their truths (numpy)."""
    from astrokin.fitting.preprocessing import parse_maps, prepare_batch

    size = int(rng.choice(recipe["shapes"]))
    kind = "noisy" if rng.random() < recipe["noise_fraction"] else "clean"
    gals = gens[size][kind].draw(n)
    beams = [gals.beam(i) for i in range(n)]
    # The labels are in the frame of the full synthetic map, and the maps have
    # no spurious pixels: no cut-out, no rejection (either would move the frame
    # or the data away from the labels).
    obs = parse_maps(list(gals.mom0), list(gals.mom1 * u.km / u.s),
                     pixel_scale=gals.pixel_scale, beam=beams, reject_spurious=False,
                     cutout=False)
    batch = prepare_batch(obs)
    truth = {name: (gals.params[name].to_value(gals.model_class.canonical_unit(name))
                    if gals.model_class.canonical_unit(name) is not None
                    else np.asarray(gals.params[name], dtype=float))
             for name in gals.model_class.param_names}
    # Truth in the fitting frame: offsets are measured from the centre of the
    # (square, unpadded) map, as the network sees it.
    return batch, truth


def _mixed_batch(gens, recipe, rng, n, chunk=64):
    """``n`` galaxies in chunks of fresh shape and noise draws (`_batch` draws one of each)."""
    from astrokin.fitting.batch import PreparedBatch

    parts = [_batch(gens, recipe, rng, min(chunk, n - start)) for start in range(0, n, chunk)]
    batch = PreparedBatch.concatenate(p[0] for p in parts)
    truth = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    return batch, truth


def _validation_recipe(rec):
    """Validation galaxies: 64-pixel maps, half of them noisy, within what the recipe draws."""
    nf = rec["noise_fraction"]
    shapes = [64] if 64 in rec["shapes"] else list(rec["shapes"])
    return {**rec, "shapes": shapes, "noise_fraction": 0.5 if 0.0 < nf < 1.0 else nf}


def _supervised_loss(network, layout, tb, truth_t):
    import torch

    outputs = network.encode(tb.mom0, tb.mom1)
    targets = layout.to_outputs(truth_t, tb.context)
    return sum(torch.mean((outputs[k] - targets[k]) ** 2) for k in outputs), outputs


def _evaluate(fitter, model, val_batch, val_truth, mc_samples=50):
    """Mean absolute validation errors of the MC means (inclination, PA, vsini, ...)."""
    summary, names = fitter.mc_summary(val_batch, mc_samples)
    mean = summary.mean
    errs = {}
    for nm in ("inclination", "r_scale", "r_turn", "x_0", "y_0", "v_sys"):
        if nm in names:
            e = np.abs(mean[:, names.index(nm)] - val_truth[nm])
            if nm in ("r_scale", "r_turn"):
                e = e / val_batch.half_width
            errs[nm] = float(np.mean(e))
    if "pa" in names:
        d = np.remainder(mean[:, names.index("pa")] - val_truth["pa"] + 180.0, 360.0) - 180.0
        errs["pa"] = float(np.mean(np.abs(d)))
    if "vsini" in names:
        scale = type(model).velocity_scale_parameter
        vs = val_truth[scale] * np.sin(np.deg2rad(val_truth["inclination"]))
        errs["vsini"] = float(np.mean(np.abs(mean[:, names.index("vsini")] - vs)))
    return errs, summary, names


def pretrain(recipe=None, *, device="auto", progress=True, log=print, checkpoint=None):
    """Train a network for blind fitting on synthetic galaxies, then calibrate it.

    Parameters
    ----------
    recipe : dict, optional
        Overrides of `DEFAULT_RECIPE` (keys as there).
    device : str, optional
        ``'auto'``, ``'cpu'``, ``'cuda'``...
    progress : bool, optional
        Show progress bars.
    log : callable, optional
        Receives progress lines (default `print`).
    checkpoint : str or path-like, optional
        Save the network there after each evaluation.

    Returns
    -------
    fitter : `~astrokin.fitting.NeuralKinematicFitter`
        In ``'blind'`` mode, with the calibration and the recipe in its
        metadata; save it with ``fitter.save(path)``.

    Raises
    ------
    TypeError, ValueError
        For a recipe that `check_recipe` refuses (checked before anything
        runs), or ``progress`` not True or False.

    Examples
    --------
    A (very) short run, to show the call:

    >>> from astrokin.fitting.pretraining import pretrain
    >>> fitter = pretrain({"supervised_steps": 2, "selfsupervised_steps": 1,
    ...                    "batch_size": 4, "validation_size": 4, "calibration_size": 8,
    ...                    "calibration_mc_samples": 20, "shapes": [64]},
    ...                   progress=False, log=lambda line: None)
    >>> sorted(fitter.metadata["calibration"])[:3]
    ['inclination', 'pa', 'r_scale']
    """
    import torch

    from astrokin.fitting.devices import resolve_device
    from astrokin.fitting.fitter import NeuralKinematicFitter
    from astrokin.fitting.network import KinematicAutoencoder, reconstruction_loss
    from astrokin.fitting.parameters import ParameterLayout, fixed_values
    from astrokin.fitting.trained import TrainedNetwork
    from astrokin.fitting.training import TrainingLoop

    rec = check_recipe(recipe)
    progress = check_bool("progress", progress)
    if not callable(log):
        raise TypeError(f"log must be a callable taking one line of text; got "
                        f"{type(log).__name__} {log!r}.")
    dev = resolve_device(device)
    seed = rec["seed"]
    rng = np.random.default_rng(seed)
    if seed is not None:
        torch.manual_seed(seed)
    model = _model_from_recipe(rec)
    layout = ParameterLayout(model)
    network = KinematicAutoencoder(layout, rec["dropout"], device=dev)
    if rec["init"]:
        # Continue from a saved network (e.g. a longer schedule in stages).
        start = (NeuralKinematicFitter.pretrained(model=model, device=device)
                 if rec["init"] == "pretrained"
                 else NeuralKinematicFitter.load(rec["init"], device=device))
        start.layout.check_compatible(model)
        network.load_state_dict(start.network.state_dict())
        log(f"continuing from {rec['init']}")
    fixed = fixed_values(model)
    trained = TrainedNetwork(network, layout, fixed)
    fitter = NeuralKinematicFitter(mode="blind", dropout=rec["dropout"], device=device,
                                   seed=seed, progress=progress,
                                   batch_size=rec["batch_size"], trained=trained)
    gens = _generators(model, rec, None if seed is None else seed + 7)
    val_rng = np.random.default_rng(None if seed is None else seed + 99)
    val_batch, val_truth = _mixed_batch(
        _generators(model, rec, None if seed is None else seed + 5),
        _validation_recipe(rec), val_rng, rec["validation_size"])
    history = []
    t_start = time.perf_counter()

    def run_phase(name, steps, lr, step_loss):
        if steps <= 0:
            return
        opt = torch.optim.Adam(network.parameters(), lr=lr)
        final = rec["lr_final_fraction"]
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: final ** (s / max(steps - 1, 1)))  # exponential decay to final*lr
        loop = TrainingLoop(network, opt, schedule=sched, clip_grad_norm=10.0,
                            progress=progress, description=name, unit="step")
        running = []

        def batches(step):
            batch, truth = _batch(gens, rec, rng, rec["batch_size"])
            truth_t = {k: torch.as_tensor(v, dtype=torch.float32, device=dev)
                       for k, v in truth.items()}
            yield (batch.to(dev), truth_t), 1

        def evaluate(step, loss):
            running.append(loss)
            if (step + 1) % rec["eval_every"] != 0 and step + 1 != steps:
                return
            errs, _, _ = _evaluate(fitter, model, val_batch, val_truth)
            entry = {"phase": name, "step": step + 1, "loss": float(np.mean(running)),
                     "minutes": (time.perf_counter() - t_start) / 60.0, **errs}
            history.append(entry)
            running.clear()
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                            for k, v in entry.items()}))
            if checkpoint is not None:
                trained.metadata.update(recipe_pretraining=rec, history=history)
                fitter.save(checkpoint, overwrite=True)  # our own partial file

        loop.run(steps, batches, lambda item: step_loss(*item), end_of_epoch=evaluate)

    def supervised(tb, truth_t):
        loss, _ = _supervised_loss(network, layout, tb, truth_t)
        return loss

    def selfsupervised(tb, truth_t):
        params, r0, r1 = network(tb, fixed)
        loss = reconstruction_loss(r0, r1, tb)
        if rec["anchor_weight"] > 0:
            sup, _ = _supervised_loss(network, layout, tb, truth_t)
            loss = loss + rec["anchor_weight"] * sup
        return loss

    run_phase("supervised", rec["supervised_steps"], rec["supervised_lr"], supervised)
    run_phase("self-supervised", rec["selfsupervised_steps"], rec["selfsupervised_lr"],
              selfsupervised)
    cal_rng = np.random.default_rng(None if seed is None else seed + 123)
    cal_batch, cal_truth = _mixed_batch(
        _generators(model, rec, None if seed is None else seed + 11), rec, cal_rng,
        rec["calibration_size"])
    calibration, coverage = calibrate(fitter, model, cal_batch, cal_truth,
                                      rec["calibration_mc_samples"])
    log(json.dumps({"calibration": calibration, "coverage_before": coverage}))
    trained.metadata.clear()
    trained.metadata.update(calibration=calibration, coverage_before_calibration=coverage,
                            recipe_pretraining=rec, history=history,
                            training_minutes=(time.perf_counter() - t_start) / 60.0,
                            device=str(dev))
    trained.loss_history = [h["loss"] for h in history]
    trained.calibration = calibration
    fitter.std_scale = calibration
    return fitter


def calibrate(fitter, model, batch, truth, mc_samples=300):
    """Scale factors that give MC-dropout 1-sigma intervals 68.3% coverage.

    Parameters
    ----------
    fitter : `~astrokin.fitting.NeuralKinematicFitter`
        A trained fitter.
    model : `~astrokin.models.KinematicDiskModel`
        The model it fits.
    batch : dict
        Prepared maps (`~astrokin.fitting.preprocessing.prepare_batch`) of
        held-out galaxies.
    truth : dict of numpy.ndarray
        Their true parameters (canonical units).
    mc_samples : int
        MC samples per galaxy.

    Returns
    -------
    scale : dict
        Free parameter name to the factor applied to its MC standard
        deviation.
    coverage : dict
        Fraction of raw 1-sigma intervals that contained the truth.
    """
    from astrokin.fitting.calibration import coverage_factor, parameter_errors

    summary, names = fitter.mc_summary(batch, mc_samples)
    scale, coverage = {}, {}
    truth = dict(truth)
    vname = type(model).velocity_scale_parameter
    if "vsini" in names and vname is not None:
        truth["vsini"] = truth[vname] * np.sin(np.deg2rad(truth["inclination"]))
    for nm in [n for n in fitter.layout.free_names + ["vsini"] if n in names]:
        j = names.index(nm)
        err = parameter_errors(nm, summary.mean[:, j], truth[nm])
        std = np.sqrt(np.clip(summary.cov[:, j, j], 0, None))
        factor, _, before, _ = coverage_factor(err, std)
        coverage[nm] = before
        scale[nm] = 1.0 if factor is None else factor
    return scale, coverage


def calibrate_network(fitter, recipe=None, *, log=print):
    """(Re)calibrate a trained fitter's MC spreads on fresh held-out galaxies.

    Parameters
    ----------
    fitter : `~astrokin.fitting.NeuralKinematicFitter`
        A trained (e.g. loaded) fitter for the recipe's model.
    recipe : dict, optional
        Overrides of `DEFAULT_RECIPE` (the calibration set follows it).
    log : callable, optional
        Receives the calibration and the coverage before it.

    Returns
    -------
    fitter : `~astrokin.fitting.NeuralKinematicFitter`
        The same fitter, with ``std_scale`` and its metadata updated.

    Raises
    ------
    TypeError, ValueError
        For a recipe that `check_recipe` refuses.
    """
    rec = check_recipe(recipe)
    seed = rec["seed"]
    model = _model_from_recipe(rec)
    rng = np.random.default_rng(None if seed is None else seed + 123)
    batch, truth = _mixed_batch(_generators(model, rec, None if seed is None else seed + 11),
                                rec, rng, rec["calibration_size"])
    fitter.std_scale = None
    scale, coverage = calibrate(fitter, model, batch, truth, rec["calibration_mc_samples"])
    log(json.dumps({"calibration": scale, "coverage_before": coverage}))
    fitter.std_scale = scale
    fitter.metadata_extra.update(calibration=scale, coverage_before_calibration=coverage)
    return fitter


def main(argv=None):
    """Command-line entry: train, calibrate and save a network."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(
        description="Pre-train a NeuralKinematicFitter network on synthetic galaxies.")
    parser.add_argument("--out", required=True, help="where to save the network (.pt)")
    parser.add_argument("--recipe", help="JSON file of DEFAULT_RECIPE overrides")
    parser.add_argument("--rings", action="store_true",
                        help="start from RING_RECIPE (the bundled ring network's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides, values as JSON (e.g. supervised_steps=8000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--calibrate-only", metavar="NETWORK",
                        help="do not train: recalibrate this saved network and save it to --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out if it exists (default: refuse, before training)")
    args = parser.parse_args(argv)
    if os.path.lexists(args.out) and not args.overwrite:
        parser.error(f"{args.out} already exists; pass --overwrite to replace it.")
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = read_recipe(args.recipe, args.set, base=RING_RECIPE if args.rings else None)
    if args.rings:
        recipe = {**RING_RECIPE, **recipe}
    run(recipe, args.out, device=args.device, progress=not args.no_progress,
        calibrate_only=args.calibrate_only, overwrite=args.overwrite)
    return 0


def read_recipe(path=None, items=(), *, base=None):
    """Recipe overrides from a JSON file and ``KEY=VALUE`` strings (values as JSON), checked.

    Parameters
    ----------
    path : str or path-like, optional
        JSON file of `DEFAULT_RECIPE` overrides.
    items : sequence of str
        ``KEY=VALUE`` overrides applied after the file's, e.g.
        ``'supervised_steps=8000'`` or ``'priors={"pa": 0}'``.
    base : dict, optional
        The overrides these apply over (e.g. `RING_RECIPE`), for the check.

    Returns
    -------
    recipe : dict
        The overrides, checked whole with `check_recipe` (over ``base``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TypeError, ValueError
        If the file is not a JSON object, an item is not ``KEY=VALUE`` with
        a JSON value, or `check_recipe` refuses the recipe (an unknown key,
        a value of the wrong type or out of range).

    Examples
    --------
    >>> from astrokin.fitting.pretraining import read_recipe
    >>> read_recipe(items=["supervised_steps=8000", 'priors={"pa": 0}'])
    {'supervised_steps': 8000, 'priors': {'pa': 0}}
    """
    recipe = {}
    if path is not None and (isinstance(path, bool)
                             or not isinstance(path, (str, os.PathLike))):
        raise TypeError(f"path must be the name of a JSON recipe file (a str or path-like); "
                        f"got {type(path).__name__} {path!r}.")
    if isinstance(items, (str, bytes)) or not all(isinstance(item, str) for item in items):
        raise TypeError(f"items must be a list of 'KEY=VALUE' strings; got {items!r}.")
    if path:
        with open(path, encoding="utf-8") as f:
            try:
                given = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{path} is not a JSON recipe: {err}") from None
        if not isinstance(given, dict):
            raise ValueError(f"{path} is not a JSON recipe: expected an object of KEY: VALUE "
                             f"overrides, got a JSON {type(given).__name__}.")
        recipe.update(given)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Recipe overrides are KEY=VALUE, got {item!r}.")
        try:
            recipe[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                f"The value of {key.strip()!r} must be JSON (strings in double quotes), "
                f"got {value!r}."
            ) from None
    full = check_recipe(recipe, base)
    return {key: full[key] for key in recipe}


def run(recipe, out, *, device="auto", progress=True, calibrate_only=None, overwrite=False,
        log=print):
    """Pre-train (or only recalibrate) a network by a recipe and save it to ``out``.

    Parameters
    ----------
    recipe : dict
        Overrides of `DEFAULT_RECIPE`.
    out : str or path-like
        Where to save the network; a checkpoint ``out + '.partial'`` is kept
        while training.
    device : str, optional
    progress : bool, optional
    calibrate_only : str or path-like, optional
        Do not train: recalibrate this saved network (with the recipe's
        calibration set, over the recipe it was trained with).
    overwrite : bool, optional
        Replace ``out`` if it exists; checked before any training.
    log : callable, optional

    Returns
    -------
    fitter : `~astrokin.fitting.NeuralKinematicFitter`

    Raises
    ------
    TypeError, ValueError
        For a recipe that `check_recipe` refuses (checked before the network
        of ``calibrate_only`` is read, and again over its stored recipe), or
        ``progress`` or ``overwrite`` not True or False.
    FileExistsError
        If ``out`` exists and ``overwrite`` is False.
    astrokin.exceptions.NetworkFormatError
        If ``calibrate_only`` is not a readable network, or the recipe stored
        in it (``recipe_pretraining``) is not one `check_recipe` accepts.

    Examples
    --------
    A (very) short specialisation of the bundled network to round 2-pixel
    beams, saved to a file:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from astrokin.fitting.pretraining import read_recipe, run
    >>> recipe = read_recipe(items=['init="pretrained"', "beam_major_px=[2, 2]",
    ...                             "supervised_steps=2", "selfsupervised_steps=0",
    ...                             "batch_size=4", "validation_size=4", "calibration_size=8",
    ...                             "calibration_mc_samples=10", "shapes=[64]"])
    >>> out = Path(tempfile.mkdtemp()) / "special.pt"
    >>> fitter = run(recipe, out, progress=False, log=lambda line: None)
    >>> out.exists(), fitter.metadata["recipe_pretraining"]["beam_major_px"]
    (True, [2, 2])
    """
    progress, overwrite = check_bool("progress", progress), check_bool("overwrite", overwrite)
    if not calibrate_only:
        check_recipe(recipe)
    elif recipe is not None and not isinstance(recipe, dict):
        check_recipe(recipe)  # its TypeError; the keys are checked over the stored recipe
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to "
                              "replace it.")
    if calibrate_only:
        from astrokin.exceptions import NetworkFormatError
        from astrokin.fitting import NeuralKinematicFitter

        fitter = NeuralKinematicFitter.load(calibrate_only, device=device)
        saved = fitter.metadata.get("recipe_pretraining") or {}
        if not isinstance(saved, dict):
            raise NetworkFormatError(
                f"{calibrate_only}: its 'recipe_pretraining' must be an object of recipe "
                f"keys; got {type(saved).__name__}. The file is damaged.")
        # Keys of older recipes, no longer used, are left out.
        saved = {k: v for k, v in saved.items() if k in DEFAULT_RECIPE}
        try:
            check_recipe(saved)
        except (TypeError, ValueError) as err:
            raise NetworkFormatError(f"{calibrate_only} holds an invalid pre-training recipe "
                                     f"(its 'recipe_pretraining'): {err}") from None
        calibrate_network(fitter, check_recipe(recipe, saved), log=log)
        fitter.save(out, overwrite=overwrite)
        log(f"saved {out} (recalibrated)")
        return fitter
    fitter = pretrain(recipe, device=device, progress=progress, log=log,
                      checkpoint=str(out) + ".partial")
    fitter.save(out, overwrite=overwrite)
    log(f"saved {out} after {fitter.metadata['training_minutes']:.1f} min")
    return fitter


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

