"""Network files: the format `~astrokin.fitting.NeuralKinematicFitter.save` writes, read safely.

A network file is a torch checkpoint holding only tensors and one JSON
string, ``{"metadata": str, "state_dict": {name: tensor}}``, readable with
``torch.load(path, weights_only=True)``: loading it never runs code. The
metadata (format `FORMAT`, version `FORMAT_VERSION`) record the model class
with its parameter names, units, bounds, fixed and tied parameters, the
network's output layout, the fixed values, the input normalisation, the
training recipe and loss history, the uncertainty calibration, the astrokin
and torch versions, and the provenance of the weights (a pre-training recipe
and its validation history, a distributed training's settings...).

Reading checks everything before anything is built, and imports no module
the file names unless it is part of astrokin or already imported
(`model_class_named`). Writing is atomic (`astrokin._io.atomic_path`).
"""

import contextlib
import datetime
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import torch

from astrokin._io import atomic_path
from astrokin.exceptions import NetworkFormatError

__all__ = ["BUNDLED", "FORMAT", "FORMAT_VERSION", "NORMALISATION", "RECIPE_KEYS",
           "astrokin_version", "build_network", "bundled_network", "bundled_networks",
           "check_parameter_names", "with_dispersion_parameters",
           "model_class_named", "read_network", "read_network_file", "save_network"]

FORMAT = "astrokin-neural-kinematic-fitter"
#: Version 2 added the ``model`` block (class, parameter units and bounds,
#: fixed and tied names), ``torch_version`` and ``created``; version 1 files
#: (the first bundled network) are still read.
FORMAT_VERSION = 2
#: The fitter options saved as the network's training recipe.
RECIPE_KEYS = ("epochs", "batch_size", "learning_rate", "lr_decay", "lr_decay_every",
               "mc_samples", "dropout")
#: How the maps a network reads were normalised (recorded in every file).
NORMALISATION = {
    "mom0": "divided by its peak over valid pixels of the 64x64 map",
    "mom1": "(mom1 - median) / p99(|mom1 - median|) over valid pixels, km/s",
    "image_size": 64,
    "resampling": "pad to square, bilinear, align_corners=False, antialias when shrinking",
}
#: The networks bundled with astrokin: name to file in ``astrokin/data/networks``.
BUNDLED = {"exponential_arctan": "exponential_arctan_disk.pt",
           "tilted_ring": "tilted_ring_disk.pt"}
#: Metadata entries every file has; provenance entries never replace them.
_STANDARD_KEYS = ("format", "format_version", "astrokin_version", "torch_version", "created",
                  "model", "layout", "fixed_values_at_training", "recipe", "seed",
                  "normalisation", "loss_history", "calibration", "calibration_refined")


def astrokin_version():
    """The installed astrokin's version, or ``'unknown'``."""
    try:
        from importlib.metadata import version

        return version("astrokin")
    except Exception:
        return "unknown"


def save_network(path, trained, *, recipe, seed, calibration, refined_calibration=None,
                 extra=None, overwrite=False):
    """Write a trained network and its metadata to ``path``, atomically.

    Parameters
    ----------
    path : str or path-like
    trained : `~astrokin.fitting.trained.TrainedNetwork`
    recipe : dict
        The training options (`RECIPE_KEYS`).
    seed : int or None
    calibration : dict or None
        Per-parameter factors of the MC-dropout spreads.
    refined_calibration : dict or None, optional
        Per-parameter factors of the refined errors (set by calibrating a
        refining fitter).
    extra : dict, optional
        Further metadata entries, after the network's own provenance
        (``trained.metadata``); neither replaces a standard entry.
    overwrite : bool, optional
        Replace an existing file.

    Raises
    ------
    FileExistsError, FileNotFoundError
        As `astrokin._io.atomic_path`.
    TypeError, ValueError
        If a metadata entry cannot be written as JSON (nothing is written).
    """
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "astrokin_version": astrokin_version(),
        "torch_version": str(torch.__version__).split("+")[0],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": trained.model,
        "layout": trained.layout.to_metadata(),
        "fixed_values_at_training": {k: float(np.asarray(v))
                                     for k, v in trained.fixed_values.items()},
        "recipe": dict(recipe),
        "seed": seed,
        "normalisation": dict(NORMALISATION),
        "loss_history": [float(v) for v in trained.loss_history],
        "calibration": calibration,
        "calibration_refined": refined_calibration,
    }
    for source in (trained.metadata, extra or {}):
        meta.update({k: v for k, v in source.items() if k not in _STANDARD_KEYS})
    network = trained.network
    state = {f"intensity_encoder.{k}": v.detach().cpu()
             for k, v in network.intensity_encoder.state_dict().items()}
    state.update({f"velocity_encoder.{k}": v.detach().cpu()
                  for k, v in network.velocity_encoder.state_dict().items()})
    text = json.dumps(meta, allow_nan=False)
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save({"metadata": text, "state_dict": state}, tmp)


def read_network(path, model=None):
    """``(metadata, state dict, model class)`` of a network file, all checked.

    Parameters
    ----------
    path : str or path-like
    model : type or `~astrokin.models.KinematicDiskModel`, optional
        The model class (or an instance of it) the network must be for.

    Raises
    ------
    TypeError
        If ``model`` is not an astrokin disc model class or instance.
    FileNotFoundError, astrokin.exceptions.NetworkFormatError
        As `read_network_file`, `model_class_named` and
        `check_parameter_names`.
    """
    from astrokin.models import KinematicDiskModel

    if model is not None and not (
            isinstance(model, KinematicDiskModel)
            or (isinstance(model, type) and issubclass(model, KinematicDiskModel))):
        raise TypeError(
            "model= must be an astrokin disc model class or instance (e.g. "
            f"ExponentialArctanDisk); got {type(model).__name__}."
        )
    meta, state = read_network_file(path)
    expected = None if model is None else (model if isinstance(model, type) else type(model))
    model_class = model_class_named(meta["layout"]["model_class"], expected, path)
    meta = with_dispersion_parameters(meta, model_class)
    check_parameter_names(meta, model_class, path)
    layout = meta["layout"]
    odd = [s["name"] for s in layout["slots"]
           if s["name"] not in layout["param_names"] or s["name"] in layout["fixed_names"]]
    if odd:
        raise NetworkFormatError(f"{path}: the layout predicts {odd}, not free parameters of "
                                 f"{model_class.__name__}; the file is damaged.")
    predicted = {s["name"] for s in layout["slots"]} | set(layout["tied_names"])
    missing = [n for n in layout["param_names"] if n not in predicted
               and n not in meta["fixed_values_at_training"]
               and n not in model_class.dispersion_parameters]
    if missing:
        raise NetworkFormatError(f"{path} gives no value at training for the parameters "
                                 f"{missing}, which its network does not predict; the file is "
                                 "damaged.")
    return meta, state, model_class


def with_dispersion_parameters(meta, model_class):
    """The metadata of a network saved before its model had dispersion parameters.

    Dispersion parameters (``model_class.dispersion_parameters``) change
    the second moment only, which no network of mom0 and mom1 sees: a file
    whose parameters are the class's without them is valid for it, with
    them neither predicted nor fixed at training (they take the model's
    values). Any other difference is left for `check_parameter_names`.
    Returns ``meta`` itself, or an updated copy.
    """
    saved = list(meta["layout"]["param_names"])
    current = list(model_class.param_names)
    extra = [n for n in current if n in model_class.dispersion_parameters and n not in saved]
    if not extra or [n for n in current if n not in extra] != saved:
        return meta
    layout = {**meta["layout"], "param_names": current,
              "fixed_names": list(meta["layout"]["fixed_names"]) + extra}
    fixed = dict(meta["fixed_values_at_training"])
    for name in extra:
        fixed[name] = float(getattr(model_class, name).default)
    return {**meta, "layout": layout, "fixed_values_at_training": fixed}


@contextlib.contextmanager
def bundled_network(name):
    """Context manager: the path of a bundled network file (`BUNDLED`).

    Raises
    ------
    ValueError
        If there is no bundled network ``name``.
    FileNotFoundError
        If its file is missing from this installation.
    """
    from importlib import resources

    if name not in BUNDLED:
        raise ValueError(f"No bundled network {name!r}; available: {sorted(BUNDLED)}.")
    with resources.as_file(resources.files("astrokin") / "data" / "networks"
                           / BUNDLED[name]) as path:
        if not path.exists():
            raise FileNotFoundError(
                f"The bundled network {path} is missing from this installation; reinstall "
                "astrokin, or train one with `python -m astrokin.fitting.pretraining --out "
                "net.pt`."
            )
        yield path


_LOADED = {}


def bundled_networks(device="cpu"):
    """Every bundled network as a `~astrokin.fitting.trained.TrainedNetwork` (read once)."""
    import torch

    device = torch.device(device)
    for name in BUNDLED:
        if (name, str(device)) not in _LOADED:
            with bundled_network(name) as path:
                meta, state, model_class = read_network(path)
                _LOADED[name, str(device)] = build_network(meta, state, model_class,
                                                           dropout=meta["recipe"].get(
                                                               "dropout", 0.1),
                                                           device=device, path=path)
    return [_LOADED[name, str(device)] for name in BUNDLED]


def read_network_file(path):
    """``(metadata dict, state dict)`` of a saved network, checked; never runs code.

    Raises
    ------
    TypeError
        If ``path`` is not a str or path-like.
    FileNotFoundError
        If ``path`` does not exist or is not a file.
    astrokin.exceptions.NetworkFormatError
        If the file is not a readable network file of a version this
        astrokin reads, or its metadata or weights are malformed.
    """
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be the name of a network file (a str or path-like); got "
                        f"{type(path).__name__} {path!r}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No network file {path}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is not a file (a saved network is one .pt file).")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():
            raise NetworkFormatError(
                f"{path} holds Python objects other than tensors and strings; astrokin refuses "
                "to load it, because unpickling them could run code. It is not a network "
                "saved by NeuralKinematicFitter.save."
            ) from None
        raise NetworkFormatError(
            f"{path} is not a readable network file: it is truncated, corrupt, or not a torch "
            "checkpoint (its pickle stream is not valid)."
        ) from None
    except (RuntimeError, ValueError, EOFError, zipfile.BadZipFile, OSError, KeyError,
            AttributeError, TypeError, IndexError, MemoryError) as err:
        raise NetworkFormatError(
            f"{path} is not a readable network file: it is truncated, corrupt, or not a torch "
            f"checkpoint ({type(err).__name__}: {_first_line(err)})."
        ) from None
    if not (isinstance(data, dict) and isinstance(data.get("metadata"), str)
            and isinstance(data.get("state_dict"), dict)):
        raise NetworkFormatError(
            f"{path} is a torch file but not a saved NeuralKinematicFitter network (expected "
            "a dict with a 'metadata' JSON string and a 'state_dict')."
        )
    try:
        meta = json.loads(data["metadata"])
    except ValueError as err:
        raise NetworkFormatError(f"{path} has corrupt metadata (not JSON: {err}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NetworkFormatError(
            f"{path} is not a saved NeuralKinematicFitter network (its metadata 'format' is "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected "
            f"{FORMAT!r})."
        )
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise NetworkFormatError(
            f"{path} has no valid format_version in its metadata (got {version!r}); it is "
            "damaged or not written by NeuralKinematicFitter.save."
        )
    if version > FORMAT_VERSION:
        raise NetworkFormatError(
            f"{path} was written in network format version {version} (by astrokin "
            f"{meta.get('astrokin_version', 'unknown')}); this astrokin "
            f"({astrokin_version()}) reads format versions up to {FORMAT_VERSION}. "
            "Upgrade astrokin to load it."
        )
    required = {"layout": dict, "recipe": dict, "fixed_values_at_training": dict}
    for key, kind in required.items():
        if not isinstance(meta.get(key), kind):
            raise NetworkFormatError(
                f"{path} lacks the metadata entry {key!r} (or it is malformed: got "
                f"{type(meta.get(key)).__name__}); the file is damaged."
            )
    layout = meta["layout"]
    for key in ("model_class", "param_names", "fixed_names", "tied_names", "slots"):
        if key not in layout:
            raise NetworkFormatError(f"{path} lacks the layout entry {key!r}; the file is "
                                     "damaged.")
    for key in ("param_names", "fixed_names", "tied_names"):
        names = layout[key]
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise NetworkFormatError(f"{path}: the layout's {key!r} must be a list of parameter "
                                     f"names; got {names!r}. The file is damaged.")
    history = meta.get("loss_history", [])
    if not (isinstance(history, list) and all(_number(v) for v in history)):
        raise NetworkFormatError(f"{path}: its 'loss_history' must be a list of finite "
                                 f"numbers; got {type(history).__name__}. The file is damaged.")
    if not isinstance(layout["model_class"], str) or ":" not in layout["model_class"]:
        raise NetworkFormatError(
            f"{path} names its model class as {layout['model_class']!r}, not 'module:Class'."
        )
    fixed = meta["fixed_values_at_training"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in fixed.values()):
        raise NetworkFormatError(f"{path} has non-numeric fixed values in its metadata.")
    _check_slots(layout["slots"], path)
    for key in ("calibration", "calibration_refined"):
        _check_calibration(meta.get(key), key, path)
    state = data["state_dict"]
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise NetworkFormatError(f"{path}: weight {k!r} is not a tensor.")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise NetworkFormatError(f"{path}: weight {k!r} holds NaN or infinite values.")
    return meta, state


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


#: What a layout slot may say (`astrokin.fitting.parameters.ParameterLayout`).
_SLOT_CHOICES = {"encoder": ("intensity", "velocity"), "kind": ("linear", "angle", "log"),
                 "rule": ("absolute", "half_width", "v_sys", "v_half", "projected")}


def _check_slots(slots, path):
    """The layout's output slots: names, encoders, kinds, rules and finite, ordered ranges."""
    if not isinstance(slots, list) or not slots:
        raise NetworkFormatError(f"{path}: the layout's 'slots' must be a non-empty list; the "
                                 "file is damaged.")
    seen = set()
    for slot in slots:
        if not isinstance(slot, dict) or not isinstance(slot.get("name"), str):
            raise NetworkFormatError(f"{path}: a layout slot is malformed ({slot!r}); the file "
                                     "is damaged.")
        name = slot["name"]
        if name in seen:
            raise NetworkFormatError(f"{path}: the layout predicts {name!r} twice; the file is "
                                     "damaged.")
        seen.add(name)
        for key, choices in _SLOT_CHOICES.items():
            if not isinstance(slot.get(key), str) or slot[key] not in choices:
                raise NetworkFormatError(
                    f"{path}: the slot of {name!r} has {key} = {slot.get(key)!r}, expected one "
                    f"of {list(choices)}; the file is damaged.")
        lo, hi = slot.get("lo"), slot.get("hi")
        for end, v in (("lo", lo), ("hi", hi)):
            if not _number(v):
                raise NetworkFormatError(f"{path}: the range of slot {name!r} has {end} = "
                                         f"{v!r}, not a finite number; the file is damaged.")
        if not lo < hi:
            raise NetworkFormatError(f"{path}: the range of slot {name!r} is ({lo}, {hi}), "
                                     "not low < high; the file is damaged.")
        if slot["kind"] == "log" and not lo > 0:
            raise NetworkFormatError(f"{path}: the logarithmic range of slot {name!r} is "
                                     f"({lo}, {hi}), not positive; the file is damaged.")
        if slot["rule"] == "projected":
            bounds = slot.get("bounds")
            if not (isinstance(bounds, list) and len(bounds) == 2
                    and all(_number(b) for b in bounds) and 0 <= bounds[0] < bounds[1]):
                raise NetworkFormatError(
                    f"{path}: the slot of {name!r} needs 'bounds' [low, high] with "
                    f"0 <= low < high; got {bounds!r}. The file is damaged.")


def _check_calibration(calibration, key, path):
    """Calibration factors: None, or parameter names to positive finite numbers."""
    if calibration is None:
        return
    if not isinstance(calibration, dict):
        raise NetworkFormatError(f"{path}: its {key!r} must be a mapping of parameter names to "
                                 f"factors; got {type(calibration).__name__}.")
    bad = {k: v for k, v in calibration.items() if not (_number(v) and v > 0)}
    if bad:
        raise NetworkFormatError(f"{path}: its {key!r} factors must be positive finite numbers; "
                                 f"got {bad}. The file is damaged or was edited by hand.")


def model_class_named(name, expected, path):
    """The model class named ``'module:Qualname'`` in a file, imported only if safe.

    Parameters
    ----------
    name : str
        ``'module:Qualname'`` as the file gives it.
    expected : type or None
        The class the caller wants; the file must name it.
    path : str or path-like
        The file, for messages.

    Raises
    ------
    astrokin.exceptions.NetworkFormatError
        If the file names another class than ``expected``, a module that is
        neither astrokin's nor already imported, or something that is not an
        astrokin disc model.
    """
    import importlib

    from astrokin.models import KinematicDiskModel

    module, _, qualname = name.partition(":")
    if expected is not None:
        if expected.__qualname__ != qualname:
            raise NetworkFormatError(
                f"{path} is a network for {name}, not for the expected "
                f"{expected.__module__}:{expected.__qualname__}."
            )
        return expected
    if not (module == "astrokin" or module.startswith("astrokin.") or module in sys.modules):
        raise NetworkFormatError(
            f"{path} is a network for {name}, from module {module!r}, which is not imported. "
            "astrokin does not import modules named in a file; import it first or pass "
            "model=<the model class>."
        )
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise NetworkFormatError(
            f"{path} is a network for {name}, which cannot be found ({err})."
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, KinematicDiskModel)):
        raise NetworkFormatError(f"{path} names {name}, which is not an astrokin disc model.")
    return obj


def check_parameter_names(meta, model_class, path):
    """The file's parameters must be those of ``model_class`` (a NetworkFormatError if not)."""
    saved_names = list(meta["layout"]["param_names"])
    if list(model_class.param_names) != saved_names:
        raise NetworkFormatError(
            f"{path} was saved for {meta['layout']['model_class']} with parameters "
            f"{saved_names}, but {model_class.__name__} now has parameters "
            f"{list(model_class.param_names)}."
        )


def build_network(meta, state, model_class, *, dropout, device, path):
    """The `~astrokin.fitting.trained.TrainedNetwork` a checked file describes.

    Parameters
    ----------
    meta, state
        From `read_network_file`.
    model_class : type
        From `model_class_named` (checked with `check_parameter_names`).
    dropout : float
        Dropout probability of the encoders.
    device : `torch.device`
    path : str or path-like
        The file, for messages.

    Raises
    ------
    astrokin.exceptions.NetworkFormatError
        If the class's parameters are not those saved, the layout is
        malformed, or the weights do not fit the network it describes.
    """
    from astrokin.fitting.network import KinematicAutoencoder
    from astrokin.fitting.parameters import ParameterLayout
    from astrokin.fitting.trained import TrainedNetwork, describe_model

    check_parameter_names(meta, model_class, path)
    try:
        layout = ParameterLayout.from_metadata(meta["layout"], model_class)
    except (KeyError, TypeError, ValueError) as err:
        raise NetworkFormatError(
            f"{path} has a malformed network layout in its metadata ({type(err).__name__}: "
            f"{err})."
        ) from None
    net = KinematicAutoencoder(layout, dropout, device=device)
    for prefix, enc in (("intensity_encoder.", net.intensity_encoder),
                        ("velocity_encoder.", net.velocity_encoder)):
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        want = enc.state_dict()
        bad = sorted(set(want) ^ set(part)) or [
            k for k in want if tuple(part[k].shape) != tuple(want[k].shape)]
        if bad:
            raise NetworkFormatError(
                f"{path}: the saved weights do not fit the network its metadata describe "
                f"(mismatched {prefix[:-1]} tensors: {bad[:5]})."
            )
        enc.load_state_dict(part)
    net.eval()
    class_name = f"{model_class.__module__}:{model_class.__qualname__}"
    block = meta.get("model")
    if not (isinstance(block, dict) and block.get("class") == class_name):
        block = describe_model(model_class, layout)
    return TrainedNetwork(net, layout, dict(meta["fixed_values_at_training"]), model=block,
                          loss_history=list(meta.get("loss_history", [])),
                          calibration=meta.get("calibration"),
                          refined_calibration=meta.get("calibration_refined"), metadata=meta)


def _first_line(err):
    text = str(err).strip().splitlines()
    if not text:
        return type(err).__name__
    return text[0].split(". ")[0].rstrip(".")[:200]
