"""`NeuralKinematicFitter`: astropy's fitter idiom backed by Dawson et al. (2021).

``fitted = fitter(model, mom0, mom1)`` trains (or reuses) the self-supervised
semantic auto-encoder of `astrokin.fitting.network` on the maps, then runs
Monte Carlo dropout (`astrokin.fitting.mc_dropout`) to return the fitted model
with uncertainties, as astropy's own fitters do.

This module imports neither torch nor astrokin's models at import time, so that
it can be registered under astropy's ``astropy.modeling`` entry-point group:
astropy loads that group while ``astropy.modeling.fitting`` itself is being
imported (``populate_entry_points`` at the bottom of that module), checks that
the object is a class deriving from `astropy.modeling.fitting.Fitter`, and
adds it to the ``astropy.modeling.fitting`` namespace. At that moment
``astropy.modeling`` is only partly initialised (``astropy.modeling.core`` is
not yet re-exported), so anything imported here at module level must be safe
to import then; the heavy parts are imported on first use.
"""

import json
import time
import warnings

import numpy as np
from astropy import units as u
from astropy.modeling.fitting import Covariance, Fitter, StandardDeviations
from astropy.utils.exceptions import AstropyUserWarning

__all__ = ["NeuralKinematicFitter"]

_MODES = ("solo", "combined", "blind")
_FORMAT = "astrokin-neural-kinematic-fitter"
#: Version 2 added the ``model`` block (class, parameter units and bounds,
#: fixed and tied names), ``torch_version`` and ``created``; version 1 files
#: (the first bundled network) are still read.
_FORMAT_VERSION = 2
_RECIPE_KEYS = ("epochs", "batch_size", "learning_rate", "lr_decay", "lr_decay_every",
                "mc_samples", "dropout")


#: Devices astrokin knows how to check; anything else torch accepts is refused
#: with a clear message rather than failing deep inside torch.
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
#: A batch loss above this many times the first batch's loss (and above
#: ``_EXPLODE_FACTOR * _LOSS_FLOOR``) counts as an exploding loss. The loss
#: compares maps normalised to about [-1, 1], so it starts at ~0.01-1 and
#: even a poor fit stays far below the threshold.
_EXPLODE_FACTOR = 1e4
_LOSS_FLOOR = 1e-3


def _resolve_device(device):
    """The `torch.device` for a ``device=`` option, checked to exist on this machine."""
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError(
            "device must be 'auto', a device string such as 'cpu', 'cuda' or 'cuda:1', or a "
            f"torch.device; got {type(device).__name__} {device!r}."
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(
            f"Unknown device {device!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or "
            "'xpu'."
        ) from err
    if dev.type not in _DEVICE_TYPES:
        raise ValueError(
            f"Unsupported device {device!r} (type {dev.type!r}): expected one of "
            f"{('auto',) + _DEVICE_TYPES}."
        )
    if dev.type == "cpu":
        return dev
    if dev.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        available = backend is not None and backend.is_available()
        count = 1 if available else 0
    else:
        backend = getattr(torch, dev.type, None)
        available = backend is not None and backend.is_available()
        count = backend.device_count() if available else 0
    if not available:
        raise ValueError(
            f"device={device!r} was asked for, but this torch ({torch.__version__}) has no "
            f"usable {dev.type.upper()} device (torch.{dev.type}.is_available() is False). "
            "Use device='cpu', or 'auto' to take an accelerator only when there is one."
        )
    if dev.index is not None and dev.index >= count:
        raise ValueError(
            f"device={device!r} was asked for, but only {count} {dev.type.upper()} device(s) "
            f"are visible (indices 0 to {count - 1})."
        )
    return dev


def _astrokin_version():
    try:
        from importlib.metadata import version

        return version("astrokin")
    except Exception:
        return "unknown"


class NeuralKinematicFitter(Fitter):
    """Fit disc models to moment maps with a self-supervised physics-aware network.

    The network is the semantic auto-encoder of Dawson et al. (2021, MNRAS
    503, 574): two CNN encoders (paper Table 1) read the normalised mom0 and
    mom1 maps and predict the free parameters of an astrokin disc model; the
    decoder renders model maps from them with `astrokin.rendering.DiskRenderer`,
    including each galaxy's restoring beam; training minimises the masked MSE
    between rendered and input maps. No labels are needed.

    Parameters
    ----------
    mode : {'solo', 'combined', 'blind'}, optional
        The paper's three ways of fitting (section 2.6): ``'solo'`` trains a
        fresh network on the maps being fitted; ``'combined'`` trains on them
        together with ``training_data=``; ``'blind'`` uses a network trained
        before (`train` or `load`) with a forward pass only.
    epochs : int, optional
        Training epochs (paper: 300). One epoch is one pass over the training
        maps in batches of ``batch_size``; a single galaxy gets one
        optimiser step per epoch.
    batch_size : int, optional
        Galaxies per optimiser step (paper: 64).
    learning_rate : float, optional
        Initial Adam learning rate (paper: 1e-4).
    lr_decay, lr_decay_every : float, int, optional
        The learning rate is multiplied by ``lr_decay`` every
        ``lr_decay_every`` epochs (paper: 0.975 every 2).
    mc_samples : int, optional
        Monte Carlo dropout samples per galaxy (default 1000).
    dropout : float, optional
        Dropout probability (paper: 0.1).
    device : str, optional
        ``'auto'`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'``, ...
    seed : int, optional
        Seeds weight initialisation, batch order and dropout masks; on the
        CPU, results are then reproducible bit for bit.
    progress : bool, optional
        Show a tqdm progress bar while training.
    keep_samples : bool, optional
        Keep all MC samples in ``fit_info['samples']`` (``N * mc_samples``
        values per parameter); summaries are computed in bounded memory
        either way.
    encoder_assignment : dict, optional
        Override which encoder predicts which parameter; see
        `astrokin.fitting.parameters`.

    Attributes
    ----------
    fit_info : dict
        After a fit: ``table`` (`~astropy.table.QTable`, one row per galaxy:
        every parameter and ``<name>_std``, ``vsini`` and ``vsini_std``, the
        kinematic centre ``x_center_pix``/``y_center_pix`` in 0-based pixels
        of the input map and, when every map has a WCS, ``center`` as a
        `~astropy.coordinates.SkyCoord`), ``samples`` (name to Quantity of MC
        samples, ``(mc_samples,)`` for one galaxy, else ``(N, mc_samples)``),
        ``mad`` (the paper's mean absolute deviation, eq. 7), ``mean``,
        ``std``, ``loss_history`` (mean training loss per epoch),
        ``timings`` (seconds), ``device``, ``mode``, ``mc_samples``.
    network : `~astrokin.fitting.network.KinematicAutoencoder` or None
        The trained network (after `train` or a solo/combined fit).
    training_info : dict
        How the last training ended: ``epochs_requested``,
        ``epochs_completed``, ``stopped`` (``'completed'``, ``'interrupted'``,
        ``'diverged'`` or ``'error'``) and ``message``.

    Raises
    ------
    ValueError
        From the constructor, for an unknown option value or a ``device``
        that does not exist on this machine (e.g. ``'cuda'`` without CUDA).
    astrokin.exceptions.TrainingDivergedError
        From training (`train`, solo and combined fits) when a loss becomes
        NaN, infinite or explodes, or gradients become non-finite.

    Notes
    -----
    **Failed or interrupted training.** Every optimiser step is checked
    before it is applied. A non-finite loss, a loss more than 1e4 times the
    first batch's (an exploding loss: the loss compares maps normalised to
    about [-1, 1], so a sound training never gets there), or non-finite
    gradients stop training with `~astrokin.exceptions.TrainingDivergedError`
    (an error rather than a warning: a fit from a diverged network would be
    garbage, and unattended surveys must see it). On that error and on
    `KeyboardInterrupt` (Ctrl-C), the network goes back to the last weights
    that gave a finite loss and stays the fitter's network, ``loss_history``
    holds the completed epochs and ``training_info`` says what happened; then
    the exception propagates (Ctrl-C still stops the script; in an
    interactive session the fitter can be used at once, e.g. in ``'blind'``
    mode, or saved).

    Returned values follow astropy's fitters: a copy of the model (a model
    set of length N for N galaxies) with the MC means as parameter values
    (Quantities in arcsec, deg, km/s), ``stds`` (`~astropy.modeling.fitting.StandardDeviations`)
    and ``cov_matrix`` (`~astropy.modeling.fitting.Covariance`) over the free
    parameters, from the MC samples (lists of those for a model set). The
    position angle is averaged on the circle. MC dropout spreads are a lower
    limit on the modelling error: the paper finds them ~2.5 times too small.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.fitting import NeuralKinematicFitter
    >>> truth = ExponentialArctanDisk(inclination=60 * u.deg, pa=30 * u.deg,
    ...                               r_scale=5 * u.arcsec, r_turn=2 * u.arcsec,
    ...                               v_max=200 * u.km / u.s)
    >>> mom0, mom1 = truth.render((64, 64), 0.5 * u.arcsec, beam=1.5 * u.arcsec)
    >>> fitter = NeuralKinematicFitter(epochs=5, mc_samples=50, seed=0, progress=False)
    >>> fitted = fitter(ExponentialArctanDisk(), mom0, mom1, pixel_scale=0.5 * u.arcsec,
    ...                 beam=1.5 * u.arcsec)
    >>> fitted.inclination.unit, len(fitter.fit_info["table"])
    (Unit("deg"), 1)
    """

    supported_constraints = ["bounds", "fixed", "tied"]

    def __init__(self, mode="solo", *, epochs=300, batch_size=64, learning_rate=1e-4,
                 lr_decay=0.975, lr_decay_every=2, mc_samples=1000, dropout=0.1,
                 device="auto", seed=None, progress=True, keep_samples=True,
                 encoder_assignment=None):
        # Fitter.__init__ wants an optimizer and a statistic; this fitter has
        # neither in astropy's sense, so it is deliberately not called.
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}; got {mode!r}.")
        for name, value in (("epochs", epochs), ("batch_size", batch_size),
                            ("lr_decay_every", lr_decay_every), ("mc_samples", mc_samples)):
            _check_integer(name, value, 0 if name == "epochs" else 1)
        for name, value, lo, hi in (("learning_rate", learning_rate, 0.0, None),
                                    ("lr_decay", lr_decay, 0.0, None),
                                    ("dropout", dropout, None, 1.0)):
            _check_real(name, value, lo, hi)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
        _resolve_device(device)  # an unknown or absent device fails here, not mid-fit
        self.mode = mode
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.lr_decay = float(lr_decay)
        self.lr_decay_every = int(lr_decay_every)
        self.mc_samples = int(mc_samples)
        self.dropout = float(dropout)
        self.device = device
        self.seed = seed
        self.progress = progress
        self.keep_samples = keep_samples
        self.encoder_assignment = encoder_assignment
        self.network = None
        self.layout = None
        #: Continue training the current network (e.g. a pre-trained one) in solo
        #: and combined fits, instead of starting from random weights.
        self.warm_start = False
        #: Per-parameter factors applied to MC standard deviations (a calibration
        #: measured on held-out galaxies; see `astrokin.fitting.pretraining`).
        self.std_scale = None
        self.metadata = {}
        self.loss_history = []
        self.training_info = {}
        self.fit_info = {}

    def __repr__(self):
        trained = "trained" if self.network is not None else "untrained"
        return (f"<{type(self).__name__}(mode={self.mode!r}, epochs={self.epochs}, "
                f"mc_samples={self.mc_samples}), {trained}>")

    # ------------------------------------------------------------------
    # Training
    def train(self, model, mom0, mom1, *, pixel_scale=None, beam=None, epochs=None, mask=None,
              exclude=None, reject_spurious=True, cutout=True):
        """Train the network on maps (no fitting); afterwards fit with ``mode='blind'``.

        Parameters
        ----------
        model : `~astrokin.models.KinematicDiskModel`
            Model whose free parameters the network will predict (its
            ``fixed``, ``tied`` and ``bounds`` are used).
        mom0, mom1, pixel_scale, beam, mask, exclude, reject_spurious, cutout
            Training maps and how to read them, as for `__call__`.
        epochs : int, optional
            Override ``self.epochs``.

        Returns
        -------
        self : `NeuralKinematicFitter`
        """
        _check_model(model)
        from astrokin.fitting.preprocessing import parse_maps, prepare_batch

        obs = parse_maps(mom0, mom1, pixel_scale=pixel_scale, beam=beam, mask=mask,
                         exclude=exclude, reject_spurious=reject_spurious, cutout=cutout)
        batch_np = prepare_batch(obs)
        self._train(model, batch_np, epochs=epochs,
                    framed_fixed=_framed_fixed(_fixed_values(model), model, obs, batch_np))
        return self

    def _train(self, model, batch_np, epochs=None, framed_fixed=None):
        """Train (or, with ``warm_start``, continue training) the network on a batch.

        Every step is guarded: a non-finite or exploding loss, or non-finite
        gradients, stop training before the optimiser applies the step, and
        `~astrokin.exceptions.TrainingDivergedError` is raised. On that error,
        on `KeyboardInterrupt` and on any other exception, the network is set
        back to the last weights whose loss was finite ("last good weights")
        and, if there are any, becomes the fitter's network (with the losses
        of the completed epochs in ``loss_history``), so the fitter stays
        usable; then the exception propagates. A fresh network that never
        produced a finite loss leaves the fitter as it was.
        """
        import torch

        from astrokin.exceptions import TrainingDivergedError
        from astrokin.fitting.network import KinematicAutoencoder, reconstruction_loss
        from astrokin.fitting.parameters import ParameterLayout

        device = _resolve_device(self.device)
        epochs = self.epochs if epochs is None else int(epochs)
        layout = ParameterLayout(model, self.encoder_assignment)
        fixed = _fixed_values(model)
        # Per-galaxy fixed x_0, y_0, pa in each galaxy's fitting frame (see _framed_fixed).
        framed = fixed if framed_fixed is None else framed_fixed
        batch = _to_tensors(batch_np, device)
        n = batch["mom0"].shape[0]
        network, last_good, history = None, None, []
        self.training_info = {"epochs_requested": epochs, "epochs_completed": 0,
                              "stopped": None, "message": None}
        try:
            with torch.random.fork_rng(devices=[]):
                if self.seed is not None:
                    torch.manual_seed(int(self.seed))
                overrides = ()
                if self.warm_start and self.network is not None:
                    overrides = self.layout.check_compatible(model).overrides
                    layout = self.layout
                    network = self.network.to(device)
                    # The weights we start from are good by definition: restore
                    # them if the continued training fails at once.
                    last_good = _snapshot(network)
                else:
                    network = KinematicAutoencoder(layout, self.dropout, device=device)
                gen = torch.Generator()
                gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
                optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
                schedule = torch.optim.lr_scheduler.StepLR(
                    optimiser, step_size=self.lr_decay_every, gamma=self.lr_decay)
                network.train()
                params = [p for p in network.parameters() if p.requires_grad]
                first_loss = None
                bar = _progress(range(epochs), self.progress, f"training ({n} maps)")
                for epoch in bar:
                    order = torch.randperm(n, generator=gen).to(device)
                    total = 0.0
                    for k, start in enumerate(range(0, n, self.batch_size)):
                        index = order[start:start + self.batch_size]
                        sub = {key: (v[index] if v is not None else None)
                               for key, v in batch.items()}
                        optimiser.zero_grad()
                        _, r0, r1 = network(sub, _select_fixed(framed, index.cpu().numpy()),
                                            overrides=overrides)
                        loss = reconstruction_loss(r0, r1, sub)
                        value = float(loss.detach())
                        where = f"epoch {epoch + 1}/{epochs}, batch {k + 1}"
                        if first_loss is None and np.isfinite(value):
                            first_loss = value
                        limit = _EXPLODE_FACTOR * max(first_loss or 0.0, _LOSS_FLOOR)
                        if not np.isfinite(value) or value > limit:
                            what = (f"the loss became {value}" if not np.isfinite(value) else
                                    f"the loss exploded to {value:.4g}, more than "
                                    f"{_EXPLODE_FACTOR:g} times the first batch's "
                                    f"{first_loss:.4g}")
                            raise TrainingDivergedError(
                                _diverged_message(what, where, last_good, self.learning_rate),
                                epoch=epoch, loss=value)
                        last_good = _snapshot(network)
                        loss.backward()
                        grads = [p.grad for p in params if p.grad is not None]
                        if grads and not bool(torch.stack(
                                [torch.isfinite(g).all() for g in grads]).all()):
                            raise TrainingDivergedError(
                                _diverged_message("the gradients became non-finite", where,
                                                  last_good, self.learning_rate),
                                epoch=epoch, loss=float("nan"))
                        optimiser.step()
                        total += value * len(index)
                    schedule.step()
                    history.append(total / n)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{history[-1]:.4g}")
        except BaseException as err:
            stopped = ("interrupted" if isinstance(err, KeyboardInterrupt) else
                       "diverged" if isinstance(err, TrainingDivergedError) else "error")
            self.training_info.update(epochs_completed=len(history), stopped=stopped,
                                      message=str(err) or type(err).__name__)
            if network is not None and last_good is not None:
                network.load_state_dict(last_good)
                self._keep(network, layout, fixed, model, history)
            raise
        self._keep(network, layout, fixed, model, history)
        self.training_info.update(epochs_completed=len(history), stopped="completed")
        return history

    def _keep(self, network, layout, fixed, model, history):
        """Make a trained (or restored) network the fitter's own."""
        network.eval()
        self.network = network
        self.layout = layout
        self._fixed_at_training = fixed
        self._model_at_training = _model_metadata(layout.model_class, layout, model)
        self.loss_history = history

    # ------------------------------------------------------------------
    # Fitting
    def __call__(self, model, mom0, mom1, *, pixel_scale=None, beam=None, mask=None,
                 exclude=None, distance=None, training_data=None, mc_samples=None,
                 first_index=0, reject_spurious=True, cutout=True, region_format=None):
        """Fit ``model`` to one or more galaxies' moment maps.

        Parameters
        ----------
        model : `~astrokin.models.KinematicDiskModel`
            Starting model: its class, fixed values, ties and bounds define
            the fit (starting values of free parameters are not used).
        mom0, mom1 : array-like, Quantity, HDU, `~astropy.nddata.NDData`, path, or list
            Moment maps: a single map, a ``(N, ny, nx)`` stack, a FITS file
            name, or a list of maps (sizes may differ). mom1 in velocity
            units (km/s when plain), NaN where there are no data. For a
            spectral cube, make the maps with `astrokin.cubes.moment_maps`.
            See `astrokin.fitting.preprocessing`.
        pixel_scale : `~astropy.units.Quantity` or list, optional
            Angle per pixel, when the maps have no celestial WCS.
        beam : `radio_beam.Beam`, Quantity, tuple, list, or None
            Restoring beam (or one per galaxy) when no header gives it; None
            and no header: no beam smearing is modelled.
        mask, exclude : optional
            Pixels to fit (``mask``) or to leave out (``exclude``): a boolean
            array, a `regions` region (pixel, or sky given a WCS), a region
            file (DS9, CRTF), or a list of these; or a list with one per
            galaxy. See `astrokin.masks.pixel_mask`.
        distance : `~astropy.units.Quantity`, optional
            Distance to the galaxy (or one per galaxy): the table then gives
            every length also in kpc (``<name>_kpc``), and
            ``fitted.rotation_curve`` accepts radii in kpc.
        reject_spurious : bool, optional
            Remove velocity pixels that cannot belong to the disc before
            fitting (`astrokin.fitting.cleaning`); what was removed is in
            ``fit_info['rejected']`` and the table's ``n_rejected``.
        cutout : bool, optional
            Cut the maps down around the emission before resampling them to
            the network's 64x64 input.
        region_format : str, optional
            Format of region files whose extension does not tell it.
        training_data : dict or tuple, optional
            ``mode='combined'`` only: other maps to train on, as
            ``(mom0, mom1)`` or a dict with keys ``mom0``, ``mom1`` and
            optionally ``pixel_scale``, ``beam``.
        mc_samples : int, optional
            Override ``self.mc_samples``.
        first_index : int, optional
            Position of the first of these galaxies in a larger catalogue.
            Each galaxy's dropout masks come from its own random stream,
            seeded with ``(seed, first_index + i)``: with a fixed ``seed``, a
            catalogue fitted in chunks of the same size gives the same results
            as one call; chunks of other sizes agree to float32 rounding
            (about 1e-6 of a value).

        Returns
        -------
        fitted : `~astrokin.models.KinematicDiskModel`
            A copy of ``model`` with fitted parameters, ``stds`` and
            ``cov_matrix``; a model set of length N for N galaxies.
        """
        _check_model(model)
        import torch

        from astrokin.fitting.preprocessing import parse_maps, prepare_batch

        t0 = time.perf_counter()
        obs = parse_maps(mom0, mom1, pixel_scale=pixel_scale, beam=beam, mask=mask,
                         exclude=exclude, reject_spurious=reject_spurious, cutout=cutout,
                         region_format=region_format)
        distances = _distances(distance, len(obs))
        batch_np = prepare_batch(obs)
        t_prep = time.perf_counter() - t0
        if training_data is not None and self.mode != "combined":
            raise ValueError(
                f"training_data= is only used with mode='combined', not {self.mode!r}."
            )
        t1 = time.perf_counter()
        framed = _framed_fixed(_fixed_values(model), model, obs, batch_np)
        if self.mode == "solo":
            self._train(model, batch_np, framed_fixed=framed)
        elif self.mode == "combined":
            if training_data is None:
                raise ValueError("mode='combined' needs training_data= (other maps to train on).")
            extra_obs, extra = _parse_training_data(training_data)
            both = {k: np.concatenate([batch_np[k], extra[k]]) for k in batch_np}
            extra_framed = _framed_fixed(_fixed_values(model), model, extra_obs, extra)
            both_framed = {k: (np.concatenate([v, extra_framed[k]])
                               if isinstance(v, np.ndarray) else v) for k, v in framed.items()}
            self._train(model, both, framed_fixed=both_framed)
        else:
            if self.network is None:
                raise ValueError(
                    "mode='blind' needs a trained network: call fitter.train(...) first or "
                    "use NeuralKinematicFitter.load(path)."
                )
        t_train = time.perf_counter() - t1
        layout = self.layout.check_compatible(model) if self.mode == "blind" else self.layout
        ties = layout.ties
        fixed = _fixed_values(model)

        t2 = time.perf_counter()
        n_samples = self.mc_samples if mc_samples is None else int(mc_samples)
        summary, names = self._mc(batch_np, framed, ties, n_samples,
                                  overrides=getattr(layout, "overrides", ()),
                                  first_index=int(first_index))
        t_mc = time.perf_counter() - t2
        device = _resolve_device(self.device)
        fitted = self._results(model, obs, batch_np, summary, names, fixed, ties)
        self._physical(fitted, obs, distances)
        self.fit_info.update(
            loss_history=list(self.loss_history),
            timings={"preprocessing": t_prep, "training": t_train, "mc_dropout": t_mc,
                     "total": time.perf_counter() - t0},
            device=str(device),
            mode=self.mode,
            mc_samples=n_samples,
            torch_threads=torch.get_num_threads(),
        )
        return fitted

    def calibrate(self, model, mom0, mom1, truth, *, parameters=None, level=0.6827,
                  **kwargs):
        """Calibrate the MC-dropout spreads on galaxies whose parameters are known.

        MC-dropout standard deviations measure only part of the error (the
        paper finds 35% of 1-sigma intervals containing the truth). This fits
        ``mom0``/``mom1`` blind, compares the fitted values with ``truth``,
        and sets for each parameter the factor by which its raw spread must
        be multiplied for a fraction ``level`` of the errors to fall within
        the scaled 1-sigma interval. The factors replace ``std_scale`` (the
        bundled network's own were measured on its synthetic renders) and are
        saved with the network by `save`.

        Use galaxies that resemble the ones to be fitted: simulations made
        with your own simulator and observing set-up, or galaxies with
        trusted independent fits. The factors are only as good as that
        resemblance.

        Parameters
        ----------
        model : `~astrokin.models.KinematicDiskModel`
            The model fitted, as in a call of the fitter.
        mom0, mom1
            The maps, as in a call of the fitter (at least a few hundred
            galaxies give stable factors).
        truth : `~astropy.table.Table`, dict, or model set
            True values: columns (or items, or parameters) named as the
            model's parameters, Quantities or plain numbers in the model's
            canonical units, one value per galaxy. ``vsini`` is calibrated too
            when the truth gives the inclination and the velocity scale.
        parameters : list of str, optional
            Which parameters to calibrate (default: every free parameter the
            truth gives, plus ``vsini``).
        level : float, optional
            Coverage the scaled 1-sigma intervals should have (default: that
            of a Gaussian 1-sigma interval).
        **kwargs
            Passed to the fitter call (``pixel_scale``, ``beam``, ``mask``...).

        Returns
        -------
        report : `~astropy.table.QTable`
            One row per parameter: ``parameter``, ``scale`` (the factor set),
            ``n`` (galaxies used: those with a nonzero spread; a galaxy
            whose parameter is pinned at the edge of the network's range has
            none, and is left out without the usual warning),
            ``coverage_before`` (of the raw intervals) and ``coverage_after``.

        Raises
        ------
        ValueError
            If the fitter has no trained network or is not in blind mode, if
            ``level`` is not between 0 and 1, if ``truth`` does not give one
            value per galaxy or gives none of the parameters to calibrate, or
            if ``parameters`` names one that is not free in ``model`` or that
            ``truth`` lacks.
        astropy.units.UnitConversionError
            If a truth Quantity has the wrong kind of unit.

        Examples
        --------
        Calibrate on synthetic galaxies (here a few, rendered by astrokin;
        use your own simulations of your observing set-up in practice):

        >>> import astropy.units as u
        >>> from astrokin.fitting import NeuralKinematicFitter
        >>> from astrokin.models import ExponentialArctanDisk
        >>> from astrokin.synthetic import make_galaxies
        >>> gals = make_galaxies(ExponentialArctanDisk(), 64, seed=3, beam=2 * u.arcsec,
        ...                      priors={"v_max": (100, 300) * u.km / u.s,
        ...                              "inclination": (30, 80) * u.deg})
        >>> fitter = NeuralKinematicFitter.pretrained(mc_samples=200, seed=0)
        >>> report = fitter.calibrate(ExponentialArctanDisk(), gals.mom0, gals.mom1 * u.km / u.s,
        ...                           gals.params, pixel_scale=gals.pixel_scale,
        ...                           beam=2 * u.arcsec)
        >>> bool(abs(report.loc["inclination"]["coverage_after"] - 0.68) < 0.05)
        True
        """
        if self.mode != "blind" or self.network is None:
            raise ValueError(
                "calibrate() needs a trained network in blind mode (NeuralKinematicFitter.load, "
                f".pretrained, or after fitter.train); this fitter is in mode {self.mode!r}"
                + (" without a network." if self.network is None else ".")
            )
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level must be between 0 and 1, got {level!r}.")
        previous = self.std_scale
        self.std_scale = None
        try:
            with warnings.catch_warnings():
                # Galaxies pinned at a range edge are left out below (the report's n).
                warnings.filterwarnings("ignore", "Parameters at the edge of the network",
                                        AstropyUserWarning)
                self(model, mom0, mom1, **kwargs)
        finally:
            self.std_scale = previous
        table = self.fit_info["table"]
        n = len(table)
        cls = self.layout.model_class
        values = _truth_columns(truth, cls, self.layout.param_names + ["vsini"], n)
        vname = cls.velocity_scale_parameter
        if "vsini" not in values and vname in values and "inclination" in values:
            values["vsini"] = values[vname] * np.sin(np.deg2rad(values["inclination"]))
        free = self.fit_info["free_parameters"]
        if parameters is not None:
            wanted = list(parameters)
            unknown = [nm for nm in wanted if nm not in free + ["vsini"]]
            if unknown:
                raise ValueError(f"Cannot calibrate {unknown}: the free parameters of this fit "
                                 f"are {free + ['vsini']}.")
            missing = [nm for nm in wanted if nm not in values]
            if missing:
                raise ValueError(f"truth gives no values of {missing}.")
        else:
            wanted = free + ["vsini"]
        names = [nm for nm in wanted if nm in values]
        if not names:
            raise ValueError(
                f"truth gives none of the parameters to calibrate ({', '.join(wanted)})."
            )
        rows = []
        scale = dict(previous or {})
        for nm in names:
            unit = u.km / u.s if nm == "vsini" else cls.canonical_unit(nm)
            fit = table[nm].to_value(unit) if unit is not None else np.asarray(table[nm])
            std = (table[f"{nm}_std"].to_value(unit) if unit is not None
                   else np.asarray(table[f"{nm}_std"]))
            err = fit - values[nm]
            if nm == "pa":
                err = np.remainder(err + 180.0, 360.0) - 180.0
            use = (std > 0) & np.isfinite(err)
            if not use.any():
                continue
            z = np.abs(err[use]) / std[use]
            factor = float(max(np.quantile(z, level), 1e-3))
            scale[nm] = factor
            rows.append((nm, factor, int(use.sum()), float(np.mean(z <= 1.0)),
                         float(np.mean(z <= factor))))
        self.std_scale = scale
        extra = dict(getattr(self, "metadata_extra", None) or {})
        extra["calibration_source"] = {"n_galaxies": n, "level": float(level),
                                       "parameters": [r[0] for r in rows]}
        self.metadata_extra = extra
        from astropy.table import QTable

        report = QTable(rows=rows, names=("parameter", "scale", "n", "coverage_before",
                                          "coverage_after"))
        report.add_index("parameter")
        return report

    def _mc(self, batch_np, fixed, ties, n_samples, overrides=(), first_index=0):
        """MC dropout summaries of every parameter (canonical units) and vsini."""
        import torch

        from astrokin.fitting.mc_dropout import mc_dropout_summary

        net = self.network
        net.eval()
        device = next(net.parameters()).device
        batch = _to_tensors(batch_np, device)
        layout = self.layout
        names = list(layout.param_names)
        vname = layout.model_class.velocity_scale_parameter
        extra = ["vsini"] if vname is not None and "inclination" in names else []

        def transform(outputs, index):
            context = {k: batch[k][index][:, None] for k in ("half_width", "v_ref", "v_half")}
            params = layout.to_parameters(
                {"intensity": outputs[0], "velocity": outputs[1]}, context,
                _select_fixed(fixed, index), ties, overrides,
            )
            cols = [params[n] for n in names]
            if extra:
                cols.append(params[vname] * torch.sin(torch.deg2rad(params["inclination"])))
            return torch.stack(cols, dim=-1)

        periods = [None] * (len(names) + len(extra))
        for slot, period in zip(layout.slots, layout.periods, strict=True):
            periods[names.index(slot["name"])] = period
        seed = None if self.seed is None else int(self.seed) + 1
        summary = mc_dropout_summary(
            net.encoders, [batch["mom0"], batch["mom1"]], n_samples, transform,
            periods=periods, seed=seed, keep_samples=self.keep_samples,
            first_index=first_index,
        )
        return summary, names + extra

    def _results(self, model, obs, batch_np, summary, names, fixed, ties):
        """Convert summaries to the input maps' frames and build model, table and fit_info."""
        from astropy.table import QTable

        n = len(obs)
        layout = self.layout
        mean = summary.mean.copy()
        mean_frame = summary.mean.copy()  # as the network sees the maps (for rendering)
        cov = summary.cov.copy()
        samples = None if summary.samples is None else summary.samples.copy()
        # Linear per-galaxy transforms from the fitting frame (mirrored, padded
        # 64x64 grid) to the input map: x_0/y_0 offsets and PA on the sky.
        ix, iy = names.index("x_0"), names.index("y_0")
        ipa = names.index("pa")
        for g, o in enumerate(obs):
            a = np.ones(len(names))
            b = np.zeros(len(names))
            (a[ix], b[ix]), (a[iy], b[iy]), (a[ipa], b[ipa]) = _frame_transforms(
                o, batch_np, g)
            mean[g] = a * mean[g] + b
            cov[g] = cov[g] * a[:, None] * a[None, :]
            if samples is not None:
                samples[g] = samples[g] * a + b
            mean[g, ipa] = np.remainder(mean[g, ipa], 360.0)
            if samples is not None:
                samples[g][:, ipa] = np.remainder(samples[g][:, ipa], 360.0)
        std_raw = np.sqrt(np.clip(np.stack([np.diagonal(c) for c in cov]), 0, None))
        if self.std_scale:
            f = np.array([float(self.std_scale.get(nm, 1.0)) for nm in names])
            cov = cov * f[None, :, None] * f[None, None, :]
        if "amplitude" in layout.param_names and not model.fixed["amplitude"] \
                and not model.tied["amplitude"]:
            ia = names.index("amplitude")
            mean[:, ia] = self._amplitude(batch_np, mean_frame, names, fixed, ties)
        units = {nm: layout.model_class.canonical_unit(nm) for nm in layout.param_names}
        units["vsini"] = u.km / u.s
        free = [nm for nm in layout.param_names if not model.fixed[nm] and not model.tied[nm]]
        fidx = [names.index(nm) for nm in free]

        # The fitted model (or model set).
        if n == 1:
            fitted = model.copy()
            for nm in layout.param_names:
                if model.fixed[nm]:
                    continue
                setattr(fitted, nm, _with_unit(mean[0, names.index(nm)], units[nm]))
            sub = cov[0][np.ix_(fidx, fidx)]
            fitted.cov_matrix = Covariance(sub, free)
            fitted.stds = StandardDeviations(sub, free)
        else:
            kwargs = {}
            for nm in layout.param_names:
                if model.fixed[nm]:
                    value = getattr(model, nm)
                    kwargs[nm] = (np.full(n, value.value) * value.unit if value.unit is not None
                                  else np.full(n, value.value))
                else:
                    kwargs[nm] = _with_unit(mean[:, names.index(nm)], units[nm])
            fitted = type(model)(**kwargs, n_models=n, fixed=dict(model.fixed),
                                 tied=dict(model.tied), bounds=dict(model.bounds),
                                 name=model.name)
            subs = [cov[g][np.ix_(fidx, fidx)] for g in range(n)]
            fitted.cov_matrix = [Covariance(s, free) for s in subs]
            fitted.stds = [StandardDeviations(s, free) for s in subs]

        # The table.
        table = QTable()
        table["galaxy"] = np.arange(n)
        std = np.sqrt(np.clip(np.stack([np.diagonal(c) for c in cov]), 0, None))
        for nm in names:
            j = names.index(nm)
            if nm in layout.param_names and model.fixed[nm]:
                value = getattr(model, nm)
                col = np.full(n, float(value.value))
                table[nm] = col * value.unit if value.unit is not None else col
                table[f"{nm}_std"] = np.zeros(n) * (value.unit or u.one)
                continue
            table[nm] = _with_unit(mean[:, j], units[nm])
            table[f"{nm}_std"] = std[:, j] * (units[nm] or u.one)
        xs, ys, xerr, yerr = [], [], [], []
        for g, o in enumerate(obs):
            ny, nx = o.full_shape
            xs.append((nx - 1) / 2 + mean[g, ix] / o.pixel_scale)
            ys.append((ny - 1) / 2 + mean[g, iy] / o.pixel_scale)
            xerr.append(std[g, ix] / o.pixel_scale)
            yerr.append(std[g, iy] / o.pixel_scale)
        table["x_center_pix"] = np.array(xs)
        table["y_center_pix"] = np.array(ys)
        table["x_center_pix_std"] = np.array(xerr)
        table["y_center_pix_std"] = np.array(yerr)
        if all(o.wcs is not None for o in obs):
            from astropy.coordinates import SkyCoord

            coords = [o.wcs.pixel_to_world(x, y) for o, x, y in zip(obs, xs, ys, strict=True)]
            table["center"] = SkyCoord(coords)
        table["pixel_scale"] = np.array([o.pixel_scale for o in obs]) * u.arcsec

        samples_out = None
        if samples is not None:
            samples_out = {}
            for nm in names:
                s = samples[:, :, names.index(nm)]
                s = s[0] if n == 1 else s
                samples_out[nm] = _with_unit(s, units[nm])
        first = (lambda x: x[0]) if n == 1 else (lambda x: x)
        self.fit_info = {
            "table": table,
            "samples": samples_out,
            "mean": {nm: first(_with_unit(mean[:, names.index(nm)], units[nm])) for nm in names},
            "std": {nm: first(std[:, names.index(nm)] * (units[nm] or u.one)) for nm in names},
            "mad": {nm: first(summary.mad[:, names.index(nm)] * (units[nm] or u.one))
                    for nm in names},
            "free_parameters": free,
            "std_uncalibrated": {nm: first(std_raw[:, names.index(nm)] * (units[nm] or u.one))
                                 for nm in names},
            "std_scale": dict(self.std_scale) if self.std_scale else None,
        }
        return fitted

    def _physical(self, fitted, obs, distances):
        """Rejected pixels, distances and lengths in kpc; MC samples onto the model."""
        table = self.fit_info["table"]
        table["n_rejected"] = np.array([sum(len(v) for v in o.rejected.values()) for o in obs])
        self.fit_info["rejected"] = [
            {reason: np.unravel_index(idx, o.full_shape) for reason, idx in o.rejected.items()}
            for o in obs
        ]
        self.fit_info["rejected_counts"] = [{r: len(i) for r, i in o.rejected.items()}
                                            for o in obs]
        self.fit_info["cutout"] = [
            (slice(o.offset[0], o.offset[0] + o.shape[0]),
             slice(o.offset[1], o.offset[1] + o.shape[1])) for o in obs]
        # A free parameter whose MC samples do not spread at all is pinned at the
        # edge of the range the network can predict: say so, as a fitter would.
        free = self.fit_info["free_parameters"]
        pinned = [[nm for nm in free if nm in self.fit_info["std"] and
                   float(np.ravel(self.fit_info["std"][nm].value)[g]) == 0.0]
                  for g in range(len(obs))]
        table["at_bound"] = [",".join(p) for p in pinned]
        if any(pinned):
            which = "; ".join(f"galaxy {g}: {', '.join(p)}" for g, p in enumerate(pinned) if p)
            warnings.warn(
                f"Parameters at the edge of the network's range, with no MC spread ({which}). "
                "The galaxy lies outside the range the network was trained on for these: treat "
                "the values as limits (see the table's 'at_bound' column).",
                AstropyUserWarning, stacklevel=3,
            )
        fitted.mc_samples = self.fit_info.get("samples")
        fitted.mc_std_scale = dict(self.std_scale) if self.std_scale else None
        fitted.distance = None
        if distances is None:
            return
        fitted.distance = distances[0] if len(obs) == 1 else distances
        table["distance"] = distances
        kpc_per_arcsec = (distances * u.arcsec.to(u.rad)).to(u.kpc)
        for name in self.layout.param_names:
            unit = self.layout.model_class.canonical_unit(name)
            if unit is None or unit != u.arcsec or name in ("x_0", "y_0"):
                continue
            table[f"{name}_kpc"] = table[name].to_value(u.arcsec) * kpc_per_arcsec
            table[f"{name}_kpc_std"] = table[f"{name}_std"].to_value(u.arcsec) * kpc_per_arcsec

    def _amplitude(self, batch_np, mean, names, fixed, ties):
        """Least-squares amplitude of the rendered mom0 against the input mom0 (input units)."""
        import torch

        net = self.network
        device = next(net.parameters()).device
        batch = _to_tensors(batch_np, device)
        dtype = batch["mom0"].dtype
        params = {nm: torch.as_tensor(mean[:, names.index(nm)], dtype=dtype, device=device)
                  for nm in self.layout.param_names}
        params["amplitude"] = torch.ones_like(params["amplitude"])
        with torch.no_grad():
            mom0, _ = net.renderer(params, batch["pixel_scale"], _beam_or_none(batch))
        data = batch["mom0"][:, 0] * batch["peak"][:, None, None]
        m = batch["mask0"]
        num = (m * mom0 * data).sum(dim=(-2, -1))
        den = (m * mom0 * mom0).sum(dim=(-2, -1))
        return (num / den).cpu().numpy()

    # ------------------------------------------------------------------
    # Persistence
    def save(self, path, *, overwrite=False):
        """Save the trained network: weights plus JSON metadata (no pickled objects).

        The file is a torch checkpoint holding only tensors and one JSON
        string, readable with ``torch.load(path, weights_only=True)``: loading
        it never runs code. The metadata (format version ``format_version``,
        see `load`) records the model class with its parameter names, units,
        bounds, fixed and tied parameters, the network's output layout, the
        fixed values, the input normalisation, the training recipe and loss
        history, the uncertainty calibration, and the astrokin and torch
        versions. Ties (Python callables) are not saved; in blind mode they
        come from the model passed to the fitter.

        The file is written atomically: to a temporary file in the same
        directory, renamed to ``path`` only once complete, so an interrupted
        save never leaves a truncated network under ``path``.

        Parameters
        ----------
        path : str or path-like
        overwrite : bool, optional
            Replace an existing file. Default False: an existing ``path``
            raises `FileExistsError` and is left untouched.

        Raises
        ------
        ValueError
            If there is no trained network to save.
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        FileNotFoundError
            If the directory of ``path`` does not exist.
        """
        import datetime

        import torch

        from astrokin._io import atomic_path

        if self.network is None:
            raise ValueError("Nothing to save: the network has not been trained yet.")
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "astrokin_version": _astrokin_version(),
            "torch_version": str(torch.__version__).split("+")[0],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "model": _model_block(self),
            "layout": self.layout.to_metadata(),
            "fixed_values_at_training": {k: float(np.asarray(v)) for k, v in
                                         self._fixed_at_training.items()},
            "recipe": {k: getattr(self, k) for k in _RECIPE_KEYS},
            "seed": self.seed,
            "normalisation": {
                "mom0": "divided by its peak over valid pixels of the 64x64 map",
                "mom1": "(mom1 - median) / p99(|mom1 - median|) over valid pixels, km/s",
                "image_size": 64,
                "resampling": "pad to square, bilinear, align_corners=False, antialias "
                              "when shrinking",
            },
            "loss_history": [float(v) for v in self.loss_history],
            "calibration": getattr(self, "std_scale", None),
        }
        meta.update({k: v for k, v in (getattr(self, "metadata_extra", None) or {}).items()
                     if k not in meta})
        state = {f"intensity_encoder.{k}": v.detach().cpu()
                 for k, v in self.network.intensity_encoder.state_dict().items()}
        state.update({f"velocity_encoder.{k}": v.detach().cpu()
                      for k, v in self.network.velocity_encoder.state_dict().items()})
        text = json.dumps(meta, allow_nan=False)
        with atomic_path(path, overwrite=overwrite) as tmp:
            torch.save({"metadata": text, "state_dict": state}, tmp)

    @classmethod
    def load(cls, path, *, model=None, device="auto", **kwargs):
        """Load a network saved with `save`, as a fitter in ``'blind'`` mode.

        The file is read with ``torch.load(weights_only=True)``, which only
        rebuilds tensors and plain containers and never runs code from the
        file, and astrokin imports no module the file names unless it is part
        of astrokin or already imported (pass ``model=`` for a model class of
        your own that is not imported yet). The metadata are checked before
        anything is built.

        Parameters
        ----------
        path : str or path-like
        model : type or `~astrokin.models.KinematicDiskModel`, optional
            The model class (or an instance of it) the network must have
            been trained for; a network for another class raises
            `~astrokin.exceptions.NetworkFormatError`.
        device : str, optional
        **kwargs
            Other `NeuralKinematicFitter` options (e.g. ``mc_samples``,
            ``seed``, ``progress``).

        Returns
        -------
        fitter : `NeuralKinematicFitter`

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist or is not a file.
        astrokin.exceptions.NetworkFormatError
            If the file is truncated or corrupt, holds anything but tensors
            and strings, is not a saved network, was written in a newer
            format version than this astrokin reads (the message names both),
            has missing or malformed metadata or weights that do not fit the
            network it describes, or is for another model class than
            ``model``.
        """
        from astrokin.exceptions import NetworkFormatError
        from astrokin.fitting.network import KinematicAutoencoder
        from astrokin.fitting.parameters import ParameterLayout
        from astrokin.models import KinematicDiskModel

        if model is not None and not (
                isinstance(model, KinematicDiskModel)
                or (isinstance(model, type) and issubclass(model, KinematicDiskModel))):
            raise TypeError(
                "model= must be an astrokin disc model class or instance (e.g. "
                f"ExponentialArctanDisk); got {type(model).__name__}."
            )
        _resolve_device(device)  # an unknown or absent device fails before reading
        meta, state = _read_network_file(path)
        name = meta["layout"]["model_class"]
        expected = None if model is None else (model if isinstance(model, type) else type(model))
        model_class = _model_class(name, expected, path)
        saved_names = list(meta["layout"]["param_names"])
        if list(model_class.param_names) != saved_names:
            raise NetworkFormatError(
                f"{path} was saved for {name} with parameters {saved_names}, but "
                f"{model_class.__name__} now has parameters {list(model_class.param_names)}."
            )
        recipe = {k: v for k, v in meta["recipe"].items() if k in _RECIPE_KEYS}
        try:
            cls(mode="blind", device="cpu", **recipe)
        except (TypeError, ValueError) as err:
            raise NetworkFormatError(f"{path} holds an invalid training recipe: {err}") from None
        recipe.update(kwargs)
        fitter = cls(mode="blind", device=device, **recipe)
        try:
            layout = ParameterLayout.from_metadata(meta["layout"], model_class)
        except (KeyError, TypeError, ValueError) as err:
            raise NetworkFormatError(
                f"{path} has a malformed network layout in its metadata ({type(err).__name__}: "
                f"{err})."
            ) from None
        net = KinematicAutoencoder(layout, fitter.dropout, device=_resolve_device(device))
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
        fitter.network = net
        fitter.layout = layout
        fitter._fixed_at_training = dict(meta["fixed_values_at_training"])
        fitter.loss_history = list(meta.get("loss_history", []))
        fitter.metadata = meta
        fitter.std_scale = meta.get("calibration")
        return fitter

    @classmethod
    def pretrained(cls, name="exponential_arctan", **kwargs):
        """The network bundled with astrokin, ready for blind fits.

        Parameters
        ----------
        name : str, optional
            Which bundled network; ``'exponential_arctan'`` (the default) fits
            `~astrokin.models.ExponentialArctanDisk` with every geometric
            parameter free. It was trained on synthetic galaxies covering the
            paper's Table 2 ranges, every PA, centre offsets, systemic
            velocities, round and elliptical beams of 1-4 pixels, noise and
            masking (`astrokin.fitting.pretraining`), and its MC-dropout
            spreads are calibrated to 68% coverage on held-out galaxies.
        **kwargs
            Options of `load` (``device``, ``mc_samples``, ``seed``, ...);
            ``mode='solo'`` or ``'combined'`` fine-tunes the bundled weights
            on the maps being fitted instead of training from scratch.

        Returns
        -------
        fitter : `NeuralKinematicFitter`

        Examples
        --------
        >>> import astropy.units as u
        >>> from astrokin.fitting import NeuralKinematicFitter
        >>> from astrokin.models import ExponentialArctanDisk
        >>> fitter = NeuralKinematicFitter.pretrained(mc_samples=200, seed=0)
        >>> truth = ExponentialArctanDisk(inclination=60 * u.deg, pa=120 * u.deg,
        ...                               r_scale=5 * u.arcsec, r_turn=2 * u.arcsec,
        ...                               v_max=200 * u.km / u.s)
        >>> mom0, mom1 = truth.render((64, 64), 0.5 * u.arcsec, beam=1.5 * u.arcsec)
        >>> fitted = fitter(ExponentialArctanDisk(), mom0, mom1, pixel_scale=0.5 * u.arcsec,
        ...                 beam=1.5 * u.arcsec)
        >>> bool(abs(fitted.pa.value - 120) < 10)
        True
        """
        from importlib import resources

        files = {"exponential_arctan": "exponential_arctan_disk.pt"}
        if name not in files:
            raise ValueError(f"No bundled network {name!r}; available: {sorted(files)}.")
        mode = kwargs.pop("mode", "blind")
        path = resources.files("astrokin") / "data" / "networks" / files[name]
        with resources.as_file(path) as p:
            if not p.exists():
                raise FileNotFoundError(
                    f"The bundled network {p} is missing from this installation; "
                    "reinstall astrokin, or train one with "
                    "`python -m astrokin.fitting.pretraining --out net.pt`."
                )
            fitter = cls.load(p, **kwargs)
        if mode != "blind":
            fitter.mode = mode
            fitter.warm_start = True
        return fitter


# ----------------------------------------------------------------------
def _check_integer(name, value, minimum):
    """``value`` must be an integer (or an integral float) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or int(value) != value or value < minimum:
        what = "a non-negative" if minimum == 0 else "a positive"
        raise ValueError(f"{name} must be {what} integer; got {value!r}.")


def _check_real(name, value, lo=None, hi=None):
    """``value`` must be a finite real number, > ``lo`` and < ``hi`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}.")
    if not np.isfinite(value) or (lo is not None and not value > lo) \
            or (hi is not None and not value < hi):
        rng = {(True, True): f"in ({lo}, {hi})", (True, False): f"> {lo}",
               (False, True): f"< {hi}", (False, False): "finite"}[(lo is not None,
                                                                      hi is not None)]
        raise ValueError(f"{name} must be a finite number {rng}; got {value!r}.")


def _check_model(model):
    """Check the model given to `NeuralKinematicFitter.__call__` or ``train``.

    It must be a single astrokin disc model with at least one free parameter
    the network can predict, and every fixed value must be finite and inside
    the parameter's bounds (a fixed value outside them would give model maps
    the network was never meant to produce, silently).
    """
    from astrokin.models import KinematicDiskModel

    if isinstance(model, type) and issubclass(model, KinematicDiskModel):
        raise TypeError(
            f"model must be an instance, e.g. {model.__name__}(), not the class "
            f"{model.__name__} itself."
        )
    if not isinstance(model, KinematicDiskModel):
        raise TypeError(
            "model must be an astrokin disc model (a KinematicDiskModel such as "
            f"ExponentialArctanDisk()); got {type(model).__name__}."
        )
    if len(model) != 1:
        raise ValueError(
            f"The model to fit must be a single model, not a model set of {len(model)}; "
            "the fitter returns a model set when given several galaxies."
        )
    free = [n for n in model.param_names
            if not model.fixed[n] and not model.tied[n] and n != "amplitude"]
    if not free:
        raise ValueError(
            f"{type(model).__name__} has no free parameters to fit: every parameter is fixed "
            "or tied (the amplitude alone is set by scaling, not predicted). Free at least "
            "one, e.g. model.fixed['inclination'] = False."
        )
    for name in model.param_names:
        par = getattr(model, name)
        value = np.ravel(par.value)[0]
        if not np.isfinite(value):
            raise ValueError(
                f"Parameter {name!r} of {type(model).__name__} is {value}; "
                "every parameter value must be finite."
            )
        if not model.fixed[name]:
            continue
        lo, hi = par.bounds
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            unit = f" {par.unit}" if par.unit is not None else ""
            raise ValueError(
                f"Fixed parameter {name!r} = {value}{unit} is outside its bounds "
                f"({lo}, {hi}){unit}; change the value or the bounds "
                f"(model.bounds[{name!r}] = (low, high))."
            )


def _model_metadata(model_class, layout=None, model=None):
    """JSON description of the model a network is trained for: class, units, bounds."""
    source = model if model is not None else model_class
    names = list(model_class.param_names)
    meta = {
        "class": f"{model_class.__module__}:{model_class.__qualname__}",
        "param_names": names,
        "units": {n: (None if getattr(source, n).unit is None else getattr(source, n).unit
                      .to_string()) for n in names},
        "bounds": {n: [None if b is None else float(b) for b in getattr(source, n).bounds]
                   for n in names},
    }
    if layout is not None:  # what the network was built for (a warm start keeps it)
        meta["fixed"] = list(layout.fixed_names)
        meta["tied"] = list(layout.tied_names)
    elif model is not None:
        meta["fixed"] = [n for n in names if model.fixed[n]]
        meta["tied"] = [n for n in names if model.tied[n] and not model.fixed[n]]
    return meta


def _model_block(fitter):
    """The ``model`` metadata of a fitter's network (from training, else from the class)."""
    layout = fitter.layout
    block = getattr(fitter, "_model_at_training", None)
    name = f"{layout.model_class.__module__}:{layout.model_class.__qualname__}"
    if not block or block.get("class") != name:
        saved = (fitter.metadata or {}).get("model")
        block = saved if saved and saved.get("class") == name else _model_metadata(
            layout.model_class, layout)
    return block


def _read_network_file(path):
    """``(metadata dict, state dict)`` of a saved network, checked; never runs code."""
    import os
    import pickle
    import zipfile

    import torch

    from astrokin.exceptions import NetworkFormatError

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
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise NetworkFormatError(
            f"{path} is not a saved NeuralKinematicFitter network (its metadata 'format' is "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected "
            f"{_FORMAT!r})."
        )
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise NetworkFormatError(
            f"{path} has no valid format_version in its metadata (got {version!r}); it is "
            "damaged or not written by NeuralKinematicFitter.save."
        )
    if version > _FORMAT_VERSION:
        raise NetworkFormatError(
            f"{path} was written in network format version {version} (by astrokin "
            f"{meta.get('astrokin_version', 'unknown')}); this astrokin "
            f"({_astrokin_version()}) reads format versions up to {_FORMAT_VERSION}. "
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
    if not isinstance(layout["model_class"], str) or ":" not in layout["model_class"]:
        raise NetworkFormatError(
            f"{path} names its model class as {layout['model_class']!r}, not 'module:Class'."
        )
    fixed = meta["fixed_values_at_training"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in fixed.values()):
        raise NetworkFormatError(f"{path} has non-numeric fixed values in its metadata.")
    state = data["state_dict"]
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise NetworkFormatError(f"{path}: weight {k!r} is not a tensor.")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise NetworkFormatError(f"{path}: weight {k!r} holds NaN or infinite values.")
    return meta, state


def _model_class(name, expected, path):
    """The model class named ``'module:Qualname'``, imported only if safe."""
    import importlib
    import sys

    from astrokin.exceptions import NetworkFormatError
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


def _first_line(err):
    text = str(err).strip().splitlines()
    if not text:
        return type(err).__name__
    return text[0].split(". ")[0].rstrip(".")[:200]


def _snapshot(network):
    """A copy of the network's weights (cheap: ~5 MB for the paper's encoders)."""
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _diverged_message(what, where, last_good, learning_rate):
    kept = ("the fitter keeps the last weights that gave a finite loss" if last_good is not None
            else "no weights of this training gave a finite loss, so the fitter is unchanged")
    return (f"Training diverged at {where}: {what}. Training stopped before applying the step; "
            f"{kept}. Check the maps for extreme or non-finite values (and a custom model's "
            f"profiles for NaN), or lower learning_rate (now {learning_rate:g}).")


def _fixed_values(model):
    """Canonical-unit values of every parameter (used for the non-predicted ones)."""
    return {k: float(np.ravel(v)[0]) for k, v in model.canonical_values().items()}


def _frame_transforms(o, batch_np, g):
    """``(a, b)`` for x_0, y_0 and pa: input-map value = ``a * fitting-frame value + b``.

    The fitting frame is the (cut-out, mirrored to East along -column, padded)
    map the network sees: offsets are from its centre, and its PA is
    ``PA_sky + theta`` (``theta`` the angle of North from +row). Mirroring the
    columns turns the input's x offsets around but not the PA on the sky,
    which ``theta`` (measured on the mirrored grid) already accounts for.
    """
    side, py, px = batch_np["side"][g], batch_np["pad_y"][g], batch_np["pad_x"][g]
    ny, nx = o.shape
    fy, fx = o.full_shape
    ax = -1.0 if o.flipped else 1.0
    bx = ax * o.pixel_scale * ((side - nx) / 2 - px)
    by = o.pixel_scale * ((side - ny) / 2 - py)
    # From the cut-out's centre to the input map's centre.
    bx += o.pixel_scale * (o.offset[1] + (nx - 1) / 2 - (fx - 1) / 2)
    by += o.pixel_scale * (o.offset[0] + (ny - 1) / 2 - (fy - 1) / 2)
    return (ax, bx), (1.0, by), (1.0, -o.north_angle)


def _framed_fixed(fixed, model, obs, batch_np):
    """Fixed values with the user's x_0, y_0 and pa turned into each galaxy's fitting frame.

    Those three become ``(N, 1)`` arrays (one value per galaxy); the others
    stay scalars.
    """
    out = dict(fixed)
    for k, name in enumerate(("x_0", "y_0", "pa")):
        if name not in fixed or not model.fixed[name]:
            continue
        values = []
        for g, o in enumerate(obs):
            a, b = _frame_transforms(o, batch_np, g)[k]
            v = (float(fixed[name]) - b) / a
            values.append(np.remainder(v, 360.0) if name == "pa" else v)
        out[name] = np.asarray(values, dtype=float)[:, None]
    return out


def _select_fixed(fixed, index):
    """The per-galaxy fixed values of the galaxies ``index`` (scalars as they are)."""
    return {k: (v[index] if isinstance(v, np.ndarray) and v.ndim else v) for k, v in fixed.items()}


def _distances(distance, n):
    """Distances as a length Quantity of shape ``(n,)``, or None."""
    if distance is None:
        return None
    if not isinstance(distance, u.Quantity) or not distance.unit.is_equivalent(u.Mpc):
        raise u.UnitsError(f"distance must be a length Quantity (e.g. 16.5 * u.Mpc); got "
                           f"{distance!r}.")
    d = distance.to(u.Mpc)
    d = np.full(n, d.value) * u.Mpc if d.isscalar else d
    if d.shape != (n,):
        raise ValueError(f"distance has {d.size} values for {n} galaxies.")
    if not np.all(np.isfinite(d.value) & (d.value > 0)):
        raise ValueError(f"distance must be finite and positive; got {distance}.")
    return u.Quantity(d, copy=True)


def _with_unit(value, unit):
    return value * unit if unit is not None else np.asarray(value)


def _to_tensors(batch_np, device):
    import torch

    out = {}
    for k in ("mom0", "mom1"):
        out[k] = torch.as_tensor(batch_np[k], dtype=torch.float32, device=device)[:, None]
    for k in ("mask0", "mask1"):
        out[k] = torch.as_tensor(batch_np[k], dtype=torch.float32, device=device)
    for k in ("pixel_scale", "half_width", "v_ref", "v_half", "peak"):
        out[k] = torch.as_tensor(batch_np[k], dtype=torch.float32, device=device)
    beam = np.asarray(batch_np["beam"], dtype=float)
    out["beam"] = (None if np.isnan(beam).all()
                   else torch.as_tensor(beam, dtype=torch.float32, device=device))
    return out


def _beam_or_none(batch):
    import torch

    beam = batch["beam"]
    if beam is None:
        return None
    none = torch.isnan(beam).any(dim=1)
    tiny = (1e-6 * batch["pixel_scale"])[:, None] * torch.tensor([1.0, 1.0, 0.0],
                                                                 device=beam.device)
    return torch.where(none[:, None], tiny, beam)


def _parse_training_data(training_data):
    from astrokin.fitting.preprocessing import parse_maps, prepare_batch

    if isinstance(training_data, dict):
        try:
            args = {k: training_data[k] for k in ("mom0", "mom1")}
        except KeyError as err:
            raise ValueError("training_data as a dict needs keys 'mom0' and 'mom1'.") from err
        args["pixel_scale"] = training_data.get("pixel_scale")
        args["beam"] = training_data.get("beam")
    elif isinstance(training_data, (tuple, list)) and len(training_data) == 2:
        args = {"mom0": training_data[0], "mom1": training_data[1]}
    else:
        raise TypeError("training_data must be (mom0, mom1) or a dict with mom0, mom1, "
                        "pixel_scale, beam.")
    obs = parse_maps(**args)
    return obs, prepare_batch(obs)


def _progress(iterable, enabled, desc):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        warnings.warn("tqdm is not installed; no progress bar.", AstropyUserWarning, stacklevel=3)
        return iterable
    return tqdm(iterable, desc=desc, leave=False)


def _truth_columns(truth, model_class, names, n):
    """Truth values per galaxy (canonical units) from a table, dict or model set."""
    from astropy.modeling import Model

    if isinstance(truth, Model):
        items = {nm: getattr(truth, nm).quantity if getattr(truth, nm).unit is not None
                 else getattr(truth, nm).value for nm in truth.param_names}
    elif hasattr(truth, "colnames"):
        items = {nm: truth[nm] for nm in truth.colnames}
    elif isinstance(truth, dict):
        items = dict(truth)
    else:
        raise TypeError(
            f"truth must be a Table, a dict or a model set, not {type(truth).__name__}."
        )
    out = {}
    for nm in names:
        if nm not in items:
            continue
        value = items[nm]
        if isinstance(value, u.Quantity):
            unit = u.km / u.s if nm == "vsini" else model_class.canonical_unit(nm)
            value = value.to_value(unit) if unit is not None else value.value
        value = np.atleast_1d(np.asarray(value, dtype=float))
        if value.shape != (n,):
            raise ValueError(
                f"truth[{nm!r}] has {value.size} value(s) for {n} galaxies fitted."
            )
        out[nm] = value
    return out
