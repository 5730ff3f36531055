"""`NeuralKinematicFitter`: astropy's fitter idiom backed by Dawson et al. (2021).

``fitted = fitter(model, mom0, mom1)`` trains (or reuses) the self-supervised
semantic auto-encoder of `astrokin.fitting.network` on the maps, then runs
Monte Carlo dropout to return the fitted model with uncertainties, as
astropy's own fitters do. The class orchestrates; each job lives in its own
module: reading and preparing the maps (`~astrokin.fitting.preprocessing`),
the fitting frame (`~astrokin.fitting.frames`), training
(`~astrokin.fitting.training`), the trained network and its MC-dropout
predictions (`~astrokin.fitting.trained`), the results
(`~astrokin.fitting.results`), calibration (`~astrokin.fitting.calibration`)
and network files (`~astrokin.fitting.persistence`).

This module imports neither torch nor astrokin's models at import time, so that
it can be registered under astropy's ``astropy.modeling`` entry-point group:
astropy loads that group while ``astropy.modeling.fitting`` itself is being
imported (``populate_entry_points`` at the bottom of that module), checks that
the object is a class deriving from `astropy.modeling.fitting.Fitter`, and
adds it to the ``astropy.modeling.fitting`` namespace. At that moment
``astropy.modeling`` is only partly initialised (``astropy.modeling.core`` is
not yet re-exported), so anything imported here at module level must be safe
to import then; the modules that need torch are imported on first use.
"""

import time
import warnings

import numpy as np
from astropy.modeling.fitting import Fitter
from astropy.utils.exceptions import AstropyUserWarning

from astrokin._validation import check_integer, check_real
from astrokin.fitting.calibration import (
    calibrate_parameters,
    calibration_targets,
    table_values,
)
from astrokin.fitting.devices import resolve_device
from astrokin.fitting.parameters import check_model, fixed_values

__all__ = ["NeuralKinematicFitter"]

_MODES = ("solo", "combined", "blind")
_BUNDLED = {"exponential_arctan": "exponential_arctan_disk.pt"}


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
        before (`train`, `load` or ``trained=``) with a forward pass only.
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
    trained : `~astrokin.fitting.trained.TrainedNetwork`, optional
        A network trained elsewhere (pre-training, distributed training):
        the fitter uses it, and starts with its calibration.

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
    trained : `~astrokin.fitting.trained.TrainedNetwork` or None
        The trained network with its layout, fixed values and provenance.
    network : `~astrokin.fitting.network.KinematicAutoencoder` or None
        ``trained.network`` (after `train`, a solo/combined fit or `load`).
    layout : `~astrokin.fitting.parameters.ParameterLayout` or None
        ``trained.layout``: what the network predicts.
    loss_history : list of float
        The network's training losses.
    std_scale : dict or None
        Per-parameter factors applied to MC standard deviations (see
        `calibrate`).
    metadata : dict
        What is known of the network: a loaded file's metadata, or the
        provenance of a pre-trained one, with ``metadata_extra``.
    metadata_extra : dict
        Further entries `save` writes into the network's metadata.
    warm_start : bool
        Continue training the current network in solo and combined fits,
        instead of starting from random weights.
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
    before it is applied (`astrokin.fitting.training`). A non-finite loss, a
    loss more than 1e4 times the first batch's (an exploding loss: the loss
    compares maps normalised to about [-1, 1], so a sound training never
    gets there), or non-finite gradients stop training with
    `~astrokin.exceptions.TrainingDivergedError` (an error rather than a
    warning: a fit from a diverged network would be garbage, and unattended
    surveys must see it). On that error and on `KeyboardInterrupt` (Ctrl-C),
    the network goes back to the last weights that gave a finite loss and
    stays the fitter's network, ``loss_history`` holds the completed epochs
    and ``training_info`` says what happened; then the exception propagates
    (Ctrl-C still stops the script; in an interactive session the fitter can
    be used at once, e.g. in ``'blind'`` mode, or saved).

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
                 encoder_assignment=None, trained=None):
        # Fitter.__init__ wants an optimizer and a statistic; this fitter has
        # neither in astropy's sense, so it is deliberately not called.
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}; got {mode!r}.")
        for name, value in (("epochs", epochs), ("batch_size", batch_size),
                            ("lr_decay_every", lr_decay_every), ("mc_samples", mc_samples)):
            check_integer(name, value, 0 if name == "epochs" else 1)
        for name, value, lo, hi in (("learning_rate", learning_rate, 0.0, None),
                                    ("lr_decay", lr_decay, 0.0, None),
                                    ("dropout", dropout, None, 1.0)):
            check_real(name, value, lo, hi)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
        resolve_device(device)  # an unknown or absent device fails here, not mid-fit
        if trained is not None and not all(hasattr(trained, k) for k in
                                           ("network", "layout", "fixed_values")):
            raise TypeError("trained= must be an astrokin.fitting.trained.TrainedNetwork; got "
                            f"{type(trained).__name__}.")
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
        self.trained = None
        self.std_scale = None
        self.warm_start = False
        self.metadata_extra = {}
        self.training_info = {}
        self.fit_info = {}
        if trained is not None:
            self._attach(trained)

    def _attach(self, trained):
        """Make a trained network the fitter's own, with its calibration."""
        self.trained = trained
        self.std_scale = None if trained.calibration is None else dict(trained.calibration)

    def __repr__(self):
        trained = "trained" if self.trained is not None else "untrained"
        return (f"<{type(self).__name__}(mode={self.mode!r}, epochs={self.epochs}, "
                f"mc_samples={self.mc_samples}), {trained}>")

    @property
    def network(self):
        """The trained `~astrokin.fitting.network.KinematicAutoencoder`, or None."""
        return None if self.trained is None else self.trained.network

    @property
    def layout(self):
        """The network's `~astrokin.fitting.parameters.ParameterLayout`, or None."""
        return None if self.trained is None else self.trained.layout

    @property
    def loss_history(self):
        """Mean training loss per epoch of the network (empty without one)."""
        return [] if self.trained is None else list(self.trained.loss_history)

    @property
    def metadata(self):
        """The network's metadata (file or provenance), updated with ``metadata_extra``."""
        base = {} if self.trained is None else dict(self.trained.metadata)
        return {**base, **self.metadata_extra}

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
        check_model(model)
        obs, batch, frames = _prepare(mom0, mom1, pixel_scale=pixel_scale, beam=beam,
                                      mask=mask, exclude=exclude,
                                      reject_spurious=reject_spurious, cutout=cutout)
        self._train(model, batch, _framed(model, frames), epochs=epochs)
        return self

    def _train(self, model, batch, framed, epochs=None):
        """Train (or, with ``warm_start``, continue training) the network on a batch.

        On a failed or interrupted training the network with its last good
        weights (if any) becomes the fitter's, then the exception propagates.
        """
        from astrokin.fitting.parameters import ParameterLayout
        from astrokin.fitting.trained import TrainedNetwork, describe_model
        from astrokin.fitting.training import train_self_supervised

        start, overrides = None, ()
        if self.warm_start and self.trained is not None:
            overrides = self.layout.check_compatible(model).overrides
            start = self.trained
        epochs = self.epochs if epochs is None else int(epochs)
        outcome = train_self_supervised(
            ParameterLayout(model, self.encoder_assignment), batch, framed, epochs=epochs,
            batch_size=self.batch_size, learning_rate=self.learning_rate,
            lr_decay=self.lr_decay, lr_decay_every=self.lr_decay_every, dropout=self.dropout,
            device=resolve_device(self.device), seed=self.seed, progress=self.progress,
            start=start, overrides=overrides)
        self.training_info = outcome.info
        if outcome.network is not None:
            layout = outcome.layout
            self.trained = TrainedNetwork(
                outcome.network, layout, fixed_values(model),
                model=describe_model(layout.model_class, layout, model),
                loss_history=outcome.history)
        if outcome.error is not None:
            raise outcome.error

    # ------------------------------------------------------------------
    # Fitting
    def __call__(self, model, mom0, mom1, *, pixel_scale=None, beam=None, mask=None,
                 exclude=None, distance=None, training_data=None, mc_samples=None,
                 first_index=0, reject_spurious=True, cutout=True, region_format=None,
                 inplace=False):
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
        inplace : bool, optional
            If False (the default), return a copy of ``model`` with the
            fitted values, as astropy's fitters do; if True, set them on
            ``model`` itself and return it (one galaxy only).

        Returns
        -------
        fitted : `~astrokin.models.KinematicDiskModel`
            A copy of ``model`` (or ``model`` itself with ``inplace=True``)
            with fitted parameters, ``stds`` and ``cov_matrix``; a model set
            of length N for N galaxies.

        Raises
        ------
        ValueError
            If ``inplace=True`` and several galaxies are given.
        """
        import torch

        from astrokin.fitting.results import (
            add_observation_columns,
            assemble_results,
            check_distances,
        )

        check_model(model)
        t0 = time.perf_counter()
        obs, batch, frames = _prepare(mom0, mom1, pixel_scale=pixel_scale, beam=beam,
                                      mask=mask, exclude=exclude,
                                      reject_spurious=reject_spurious, cutout=cutout,
                                      region_format=region_format)
        distances = check_distances(distance, len(obs))
        if inplace and len(obs) != 1:
            raise ValueError(f"inplace=True fits one galaxy into the model given; got "
                             f"{len(obs)} galaxies (they make a model set: use inplace=False).")
        t_prep = time.perf_counter() - t0
        if training_data is not None and self.mode != "combined":
            raise ValueError(
                f"training_data= is only used with mode='combined', not {self.mode!r}."
            )
        t1 = time.perf_counter()
        framed = _framed(model, frames)
        if self.mode == "solo":
            self._train(model, batch, framed)
        elif self.mode == "combined":
            if training_data is None:
                raise ValueError("mode='combined' needs training_data= (other maps to train on).")
            self._train(model, *_with_training_data(model, batch, framed, training_data))
        elif self.trained is None:
            raise ValueError(
                "mode='blind' needs a trained network: call fitter.train(...) first or "
                "use NeuralKinematicFitter.load(path)."
            )
        t_train = time.perf_counter() - t1
        layout = self.layout.check_compatible(model) if self.mode == "blind" else self.layout

        t2 = time.perf_counter()
        n_samples = self.mc_samples if mc_samples is None else int(mc_samples)
        tensors = batch.to(self.trained.device)
        summary, names = self.trained.mc_summary(
            tensors, n_samples, fixed=framed, ties=layout.ties,
            overrides=getattr(layout, "overrides", ()), seed=self._dropout_seed(),
            first_index=int(first_index), keep_samples=self.keep_samples)
        t_mc = time.perf_counter() - t2
        fitted, self.fit_info = assemble_results(
            model, self.layout, obs, frames, summary, names, std_scale=self.std_scale,
            trained=self.trained, batch=tensors, inplace=inplace)
        add_observation_columns(fitted, self.fit_info, obs, distances, self.layout,
                                self.std_scale)
        self.fit_info.update(
            loss_history=list(self.loss_history),
            timings={"preprocessing": t_prep, "training": t_train, "mc_dropout": t_mc,
                     "total": time.perf_counter() - t0},
            device=str(resolve_device(self.device)),
            mode=self.mode,
            mc_samples=n_samples,
            torch_threads=torch.get_num_threads(),
        )
        return fitted

    def mc_summary(self, batch, n_samples=None, *, first_index=0):
        """MC-dropout summaries of a prepared batch by the fitter's network and options.

        The values not predicted are those fixed at training, and values are
        in each galaxy's fitting frame (no conversion to the input maps):
        this is what pre-training and benchmarks on synthetic galaxies
        compare with their truth.

        Parameters
        ----------
        batch : `~astrokin.fitting.batch.PreparedBatch`
        n_samples : int, optional
            Default ``mc_samples``.
        first_index : int, optional
            As for `__call__`.

        Returns
        -------
        summary : `~astrokin.fitting.mc_dropout.MCSummary`
        names : list of str

        Raises
        ------
        ValueError
            If the fitter has no trained network.
        """
        if self.trained is None:
            raise ValueError("mc_summary() needs a trained network.")
        n = self.mc_samples if n_samples is None else int(n_samples)
        return self.trained.mc_summary(batch, n, seed=self._dropout_seed(),
                                       first_index=int(first_index),
                                       keep_samples=self.keep_samples)

    def _dropout_seed(self):
        """The seed of the MC-dropout masks (distinct from that of training)."""
        return None if self.seed is None else int(self.seed) + 1

    def calibrate(self, model, mom0, mom1, truth, *, parameters=None, level=0.6827,
                  **kwargs):
        """Calibrate the MC-dropout spreads on galaxies whose parameters are known.

        MC-dropout standard deviations measure only part of the error (the
        paper finds 35% of 1-sigma intervals containing the truth). This fits
        ``mom0``/``mom1`` blind, compares the fitted values with ``truth``,
        and sets for each parameter the factor by which its raw spread must
        be multiplied for a fraction ``level`` of the errors to fall within
        the scaled 1-sigma interval (`astrokin.fitting.calibration`). The
        factors replace ``std_scale`` (the bundled network's own were
        measured on its synthetic renders) and are saved with the network by
        `save`.

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
        from astropy.table import QTable

        if self.mode != "blind" or self.trained is None:
            raise ValueError(
                "calibrate() needs a trained network in blind mode (NeuralKinematicFitter.load, "
                f".pretrained, or after fitter.train); this fitter is in mode {self.mode!r}"
                + (" without a network." if self.trained is None else ".")
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
        cls = self.layout.model_class
        names, values = calibration_targets(truth, cls, self.fit_info["free_parameters"],
                                            parameters, len(table))
        fitted, stds = table_values(table, names, cls)
        rows = calibrate_parameters(names, fitted, stds, values, level)
        self.std_scale = {**(previous or {}), **{r.parameter: r.scale for r in rows}}
        self.metadata_extra["calibration_source"] = {
            "n_galaxies": len(table), "level": float(level),
            "parameters": [r.parameter for r in rows]}
        report = QTable(rows=[(r.parameter, r.scale, r.n, r.coverage_before, r.coverage_after)
                              for r in rows],
                        names=("parameter", "scale", "n", "coverage_before", "coverage_after"))
        report.add_index("parameter")
        return report

    # ------------------------------------------------------------------
    # Persistence
    def save(self, path, *, overwrite=False):
        """Save the trained network: weights plus JSON metadata (no pickled objects).

        The file is a torch checkpoint holding only tensors and one JSON
        string, readable with ``torch.load(path, weights_only=True)``: loading
        it never runs code. The metadata (format version ``format_version``,
        see `load` and `astrokin.fitting.persistence`) records the model
        class with its parameter names, units, bounds, fixed and tied
        parameters, the network's output layout, the fixed values, the input
        normalisation, the training recipe and loss history, the uncertainty
        calibration, the astrokin and torch versions, and the network's
        provenance. Ties (Python callables) are not saved; in blind mode they
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
        from astrokin.fitting.persistence import RECIPE_KEYS, save_network

        if self.trained is None:
            raise ValueError("Nothing to save: the network has not been trained yet.")
        save_network(path, self.trained, recipe={k: getattr(self, k) for k in RECIPE_KEYS},
                     seed=self.seed, calibration=self.std_scale, extra=self.metadata_extra,
                     overwrite=overwrite)

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
        from astrokin.fitting import persistence
        from astrokin.models import KinematicDiskModel

        if model is not None and not (
                isinstance(model, KinematicDiskModel)
                or (isinstance(model, type) and issubclass(model, KinematicDiskModel))):
            raise TypeError(
                "model= must be an astrokin disc model class or instance (e.g. "
                f"ExponentialArctanDisk); got {type(model).__name__}."
            )
        resolve_device(device)  # an unknown or absent device fails before reading
        meta, state = persistence.read_network_file(path)
        expected = None if model is None else (model if isinstance(model, type) else type(model))
        model_class = persistence.model_class_named(meta["layout"]["model_class"], expected,
                                                    path)
        persistence.check_parameter_names(meta, model_class, path)
        recipe = {k: v for k, v in meta["recipe"].items() if k in persistence.RECIPE_KEYS}
        try:
            cls(mode="blind", device="cpu", **recipe)
        except (TypeError, ValueError) as err:
            raise NetworkFormatError(f"{path} holds an invalid training recipe: {err}") from None
        recipe.update(kwargs)
        fitter = cls(mode="blind", device=device, **recipe)
        fitter._attach(persistence.build_network(meta, state, model_class,
                                                 dropout=fitter.dropout,
                                                 device=resolve_device(device), path=path))
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

        if name not in _BUNDLED:
            raise ValueError(f"No bundled network {name!r}; available: {sorted(_BUNDLED)}.")
        mode = kwargs.pop("mode", "blind")
        path = resources.files("astrokin") / "data" / "networks" / _BUNDLED[name]
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
def _prepare(mom0, mom1, **options):
    """``(observations, PreparedBatch, fitting frames)`` of the maps."""
    from astrokin.fitting.frames import fitting_frames
    from astrokin.fitting.preprocessing import parse_maps, prepare_batch

    obs = parse_maps(mom0, mom1, **options)
    batch = prepare_batch(obs)
    return obs, batch, fitting_frames(obs, batch)


def _framed(model, frames):
    """The model's fixed values, with x_0, y_0 and pa in each galaxy's fitting frame."""
    from astrokin.fitting.frames import framed_fixed

    return framed_fixed(fixed_values(model), model, frames)


def _with_training_data(model, batch, framed, training_data):
    """``(batch, framed fixed values)`` of the fitted maps followed by ``training_data``'s."""
    from astrokin.fitting.batch import PreparedBatch

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
    _, extra, extra_frames = _prepare(**args)
    extra_framed = _framed(model, extra_frames)
    both = {k: (np.concatenate([v, extra_framed[k]]) if isinstance(v, np.ndarray) else v)
            for k, v in framed.items()}
    return PreparedBatch.concatenate([batch, extra]), both
