"""`NeuralKinematicFitter`: astropy's fitter idiom backed by Dawson et al. (2021).

The class orchestrates; each job has its own module (see :doc:`/developer`).
This module imports no torch at import time: it is an ``astropy.modeling``
entry point, which astropy loads while ``astropy.modeling.fitting`` is itself
being imported, so what it imports at module level must be safe then; the
modules that need torch are imported on first use.
"""

import time
import warnings

from astropy.modeling.fitting import Fitter
from astropy.utils.exceptions import AstropyUserWarning

from astrokin._validation import CheckedOption, check_bool, check_integer, check_real
from astrokin.fitting.calibration import calibrate_parameters, calibration_targets, table_values
from astrokin.fitting.devices import resolve_device
from astrokin.fitting.parameters import check_model, fixed_values

__all__ = ["NeuralKinematicFitter"]

_MODES = ("solo", "combined", "blind")
#: Galaxies read, prepared and fitted at a time by a blind fit (a block of 64x64
#: maps holds about 250 kB per galaxy while it is fitted).
STREAM_BLOCK = 2048


class NeuralKinematicFitter(Fitter):
    """Fit disc models to moment maps with a self-supervised physics-aware network.

    The network is the auto-encoder of Dawson et al. (2021, MNRAS 503, 574):
    two CNN encoders read the normalised mom0 and mom1 maps and predict the
    free parameters of a disc model; the decoder renders model maps from them
    (`astrokin.rendering.DiskRenderer`, with each galaxy's beam); training
    minimises the masked MSE between rendered and input maps, without labels.

    Parameters
    ----------
    mode : {'solo', 'combined', 'blind'}, optional
        The paper's three ways of fitting (section 2.6): ``'solo'`` trains a
        fresh network on the maps being fitted; ``'combined'`` trains on them
        together with ``training_data=``; ``'blind'`` uses a network trained
        before (`train`, `load` or ``trained=``) with a forward pass only.
    epochs : int, optional
        Training epochs (paper: 300): passes over the training maps in
        batches of ``batch_size``.
    batch_size : int, optional
        Galaxies per optimiser step (paper: 64).
    learning_rate : float, optional
        Initial Adam learning rate (paper: 1e-4).
    lr_decay, lr_decay_every : float, int, optional
        The learning rate is multiplied by ``lr_decay`` every
        ``lr_decay_every`` epochs (paper: 0.975 every 2).
    mc_samples : int, optional
        Monte Carlo dropout samples per galaxy (default 1000; at least 2).
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
        Keep all MC samples in ``fit_info['samples']`` (summaries are
        computed in bounded memory either way).
    encoder_assignment : dict, optional
        Which encoder predicts which parameter (`astrokin.fitting.parameters`).
    trained : `~astrokin.fitting.trained.TrainedNetwork`, optional
        A network trained elsewhere (pre-training, distributed training),
        with its calibration.
    refine : bool, optional
        After the network's prediction, fit each galaxy's parameters to its
        own maps through the renderer (`astrokin.fitting.refinement`): the
        values are then the best fit of each galaxy's maps, and the errors
        come from its likelihood (see :doc:`/fitting`). Default True; False
        gives the network's prediction alone, 10-50 times faster.
    data_weighted : bool, optional
        In refinement, weight the model's beam smearing by the observed
        intensity (`~astrokin.fitting.map_problems.smearing_weights`): the
        velocity map of a clumpy disc, or one with arms, is weighted by its
        clumpy intensity, which the axisymmetric model's is not. Default False.

    Attributes
    ----------
    fit_info : dict
        After a fit: ``table`` (`~astropy.table.QTable`, one row per galaxy:
        every parameter and ``<name>_std``, ``vsini``, the kinematic centre
        ``x_center_pix``/``y_center_pix`` in 0-based pixels of the input map
        and, when every map has a WCS, ``center``), ``samples`` (MC samples
        per parameter), ``mad`` (the paper's eq. 7), ``mean``, ``std``,
        ``std_uncalibrated``, ``rejected``, ``loss_history``, ``timings``,
        ``device``, ``mode``, ``mc_samples``.
    trained : `~astrokin.fitting.trained.TrainedNetwork` or None
        The network with its layout, fixed values and provenance;
        ``network``, ``layout`` and ``loss_history`` are its.
    std_scale, refined_std_scale : dict or None
        Factors applied to the MC standard deviations, and to the refined
        errors (`calibrate`; the network's own, or None: none needed).
    metadata, metadata_extra : dict
        The network's metadata (a loaded file's, or a pre-trained network's
        provenance), and further entries `save` writes with it.
    warm_start : bool
        Continue training the current network in solo and combined fits.
    training_info : dict
        How the last training ended: ``epochs_requested``,
        ``epochs_completed``, ``stopped`` (``'completed'``, ``'interrupted'``,
        ``'diverged'`` or ``'error'``) and ``message``.

    Raises
    ------
    TypeError
        From the constructor, for a boolean option (``progress``,
        ``keep_samples``, ``refine``, ``data_weighted``) that is not True or
        False (``refine='no'`` is refused, not taken as true), or a
        ``trained`` that is not a trained network.
    ValueError
        From the constructor, for an unknown option value or a ``device``
        that does not exist on this machine (e.g. ``'cuda'`` without CUDA).
    astrokin.exceptions.TrainingDivergedError
        From training (`train`, solo and combined fits) when a loss becomes
        NaN, infinite or explodes, or gradients become non-finite.

    Notes
    -----
    Every optimiser step is checked before it is applied
    (`astrokin.fitting.training`): on a divergence and on Ctrl-C the network
    goes back to the last weights that gave a finite loss and stays the
    fitter's, ``training_info`` says what happened, and the exception
    propagates. Returned values follow astropy's fitters
    (`astrokin.fitting.results`); raw MC-dropout spreads are a lower limit
    on the error (the paper finds them ~2.5 times too small), which
    `calibrate` scales.

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

    mode = CheckedOption(lambda name, v: _check_mode(v), "``'solo'``, ``'combined'`` or "
                         "``'blind'``.")
    epochs = CheckedOption(lambda name, v: _integer(name, v, 0), "Training epochs.")
    batch_size = CheckedOption(lambda name, v: _integer(name, v, 1), "Training batch size.")
    lr_decay_every = CheckedOption(lambda name, v: _integer(name, v, 1),
                                   "Epochs between learning-rate decays.")
    # (One MC sample has no spread: at least two.)
    mc_samples = CheckedOption(lambda name, v: _check_mc_samples(_integer(name, v, 2)),
                               "MC-dropout samples per galaxy.")
    learning_rate = CheckedOption(lambda name, v: _real(name, v, 0.0, None),
                                  "Adam's learning rate.")
    lr_decay = CheckedOption(lambda name, v: _real(name, v, 0.0, None),
                             "Learning-rate factor per decay.")
    dropout = CheckedOption(lambda name, v: _check_dropout(v), "Dropout probability, [0, 1).")
    seed = CheckedOption(lambda name, v: _check_seed(v),
                         "Seed of training and of the MC-dropout masks (None: random).")
    device = CheckedOption(lambda name, v: _check_device(v),
                           "``'auto'``, ``'cpu'``, ``'cuda'``... (checked when set).")
    progress = CheckedOption(check_bool, "Show training progress.")
    keep_samples = CheckedOption(check_bool, "Keep each galaxy's MC samples.")
    refine = CheckedOption(check_bool, "Refine each fit to the galaxy's own maps.")
    data_weighted = CheckedOption(check_bool, "Weight the model's beam smearing by the data.")
    warm_start = CheckedOption(check_bool, "Train from the current network, not a new one.")

    def __init__(self, mode="solo", *, epochs=300, batch_size=64, learning_rate=1e-4,
                 lr_decay=0.975, lr_decay_every=2, mc_samples=1000, dropout=0.1,
                 device="auto", seed=None, progress=True, keep_samples=True,
                 encoder_assignment=None, trained=None, refine=True, data_weighted=False):
        # Fitter.__init__ wants an optimizer and a statistic; this fitter has
        # neither in astropy's sense, so it is deliberately not called.
        # Each option is checked as it is set (CheckedOption), here and later.
        self.mode = mode
        self.epochs, self.batch_size = epochs, batch_size
        self.learning_rate, self.lr_decay = learning_rate, lr_decay
        self.lr_decay_every, self.mc_samples = lr_decay_every, mc_samples
        self.dropout, self.device, self.seed = dropout, device, seed
        self.progress, self.keep_samples = progress, keep_samples
        self.refine, self.data_weighted = refine, data_weighted
        if trained is not None and not all(hasattr(trained, k) for k in
                                           ("network", "layout", "fixed_values")):
            raise TypeError("trained= must be an astrokin.fitting.trained.TrainedNetwork; got "
                            f"{type(trained).__name__}.")
        self.encoder_assignment = encoder_assignment
        self.trained, self.std_scale, self.warm_start = None, None, False
        self.refined_std_scale = None
        self.metadata_extra, self.training_info, self.fit_info = {}, {}, {}
        self._on_read = None  # called with the number of galaxies once the maps are read
        if trained is not None:
            self._attach(trained)

    def _attach(self, trained):
        """Make a trained network the fitter's own, with its calibration."""
        self.trained = trained
        self.std_scale = None if trained.calibration is None else dict(trained.calibration)
        self.refined_std_scale = (None if trained.refined_calibration is None
                                  else dict(trained.refined_calibration))

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
        return {**({} if self.trained is None else self.trained.metadata), **self.metadata_extra}

    # ------------------------------------------------------------------
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
        from astrokin.fitting.preprocessing import prepare_maps

        check_model(model)
        _, batch, frames = prepare_maps(mom0, mom1, pixel_scale=pixel_scale, beam=beam,
                                        mask=mask, exclude=exclude,
                                        reject_spurious=reject_spurious, cutout=cutout)
        self._train(model, batch, _framed(model, frames), epochs=epochs)
        return self

    def _train(self, model, batch, framed, epochs=None):
        """Train (with ``warm_start``: continue training) the network; keep what was learnt."""
        from astrokin.fitting.parameters import ParameterLayout
        from astrokin.fitting.trained import TrainedNetwork, describe_model
        from astrokin.fitting.training import train_self_supervised

        start = self.trained if self.warm_start else None
        n_epochs = self.epochs if epochs is None else epochs
        check_integer("epochs", n_epochs, 0 if start is not None else 1)
        outcome = train_self_supervised(
            ParameterLayout(model, self.encoder_assignment), batch, framed,
            epochs=int(n_epochs), batch_size=self.batch_size,
            learning_rate=self.learning_rate, lr_decay=self.lr_decay,
            lr_decay_every=self.lr_decay_every, dropout=self.dropout,
            device=resolve_device(self.device), seed=self.seed, progress=self.progress,
            start=start,
            overrides=() if start is None else start.layout.check_compatible(model).overrides)
        self.training_info = outcome.info
        if outcome.network is not None:
            self.trained = TrainedNetwork(
                outcome.network, outcome.layout, fixed_values(model),
                model=describe_model(outcome.layout.model_class, outcome.layout, model),
                loss_history=outcome.history)
        if outcome.error is not None:
            raise outcome.error

    def _warn_beams_outside_training(self, batch, observations):
        """A DataQualityWarning for beams a pre-trained network never saw."""
        from astrokin.fitting import data_quality

        if self.trained is None:
            return
        recipe = self.trained.metadata.get("recipe_pretraining")
        problems = data_quality.beam_problems(batch.beam, batch.half_width, recipe)
        if any(problems):
            data_quality.warn_problems(problems, data_quality.galaxy_names(observations))

    def __call__(self, model, mom0, mom1=None, *, pixel_scale=None, beam=None, mask=None,
                 exclude=None, distance=None, training_data=None, mc_samples=None,
                 first_index=0, reject_spurious=True, cutout=True, region_format=None,
                 inplace=False, mom0_err=None, mom1_err=None, mom2=None, mom2_err=None,
                 mom2_window=None, cube_options=None, names=None):
        """Fit ``model`` to one or more galaxies' moment maps, or to a spectral cube.

        Parameters
        ----------
        model : `~astrokin.models.KinematicDiskModel`
            Starting model: its class, fixed values, ties and bounds define
            the fit (starting values of free parameters are not used).
        mom0, mom1 : array-like, Quantity, HDU, `~astropy.nddata.NDData`, path, or list
            Moment maps: a single map, a ``(N, ny, nx)`` stack, a FITS file
            name, or a list of maps (sizes may differ). mom1 in velocity
            units (km/s when plain), NaN where there are no data.

            Or, with ``mom1`` left out, a spectral cube as ``mom0``: a FITS
            file name, HDU or HDUList, a `specutils.Spectrum` or a
            ``spectral_cube.SpectralCube``. Its moments 0, 1 and 2 and their
            noise maps are made with `astrokin.cubes.moment_maps` (options
            in ``cube_options``) and fitted as if given, the dispersion too:
            the same numbers as making the maps first.
        pixel_scale : `~astropy.units.Quantity` or list, optional
            Angle per pixel, when the maps have no celestial WCS.
        beam : `radio_beam.Beam`, Quantity, tuple, list, or None
            Restoring beam (or one per galaxy) when no header gives it; None
            and no header: no beam smearing is modelled.
        mask, exclude : optional
            Pixels to fit (``mask``) or to leave out (``exclude``): boolean
            arrays, `regions` regions, region files (DS9, CRTF), lists of
            these, or one per galaxy (`astrokin.masks.pixel_mask`).
        distance : `~astropy.units.Quantity`, optional
            Distance to the galaxy (or one per galaxy): the table then gives
            lengths also in kpc (``<name>_kpc``).
        reject_spurious : bool, optional
            Leave out velocity pixels that cannot belong to the disc
            (`astrokin.fitting.cleaning`; listed in ``fit_info['rejected']``).
        cutout : bool, optional
            Cut the maps down around the emission before resampling them.
        region_format : str, optional
            Format of region files whose extension does not tell it.
        training_data : dict or tuple, optional
            ``mode='combined'`` only: other maps to train on, as
            ``(mom0, mom1)`` or a dict with keys ``mom0``, ``mom1`` and
            optionally ``pixel_scale``, ``beam``.
        mc_samples : int, optional
            Override ``self.mc_samples``.
        first_index : int, optional
            Position of the first of these galaxies in a larger catalogue:
            galaxy ``i``'s dropout masks come from the stream ``(seed,
            first_index + i)``, so a catalogue fitted in chunks gives the
            results of one call.
        names : sequence of str, optional
            One name per galaxy for errors and warnings (default: its index);
            odd data get a `~astrokin.exceptions.DataQualityWarning` naming
            the galaxy.
        inplace : bool, optional
            If True, set the fitted values on ``model`` itself and return it
            (one galaxy only); by default a copy, as astropy's fitters do.
        mom0_err, mom1_err : optional
            Noise maps (1-sigma) of the maps, as the maps are given, for
            refinement's likelihood; without them the noise is estimated from
            the residuals (`astrokin.fitting.noise`).
        mom2, mom2_err : optional
            The second-moment map (velocity dispersion, km/s when plain) and
            its noise map, as the maps are given: the model's dispersion
            parameters (``v_disp``, or one per ring) are then fitted to it,
            about the fit of mom0 and mom1 (`astrokin.fitting.dispersion`).
            Without mom2 they are not fitted: they keep the model's values
            and are reported as fixed.
        mom2_window : tuple, optional
            ``(v_low, v_high)``: velocity maps (km/s when plain) of the range
            each sightline's mask kept when mom2 was made from a cube
            (`astrokin.cubes.moment_maps` with ``window=True``). The model's
            second moment is then that of its line cut to the range (a
            Gaussian line of the model's mom1 and mom2): a mask that keeps
            little of a faint line's wings narrows its mom2, and this is
            modelled rather than mistaken for a small dispersion. A cube
            given as ``mom0`` uses it.
        cube_options : dict, optional
            Options of `astrokin.cubes.moment_maps` (``clip``, ``smooth``,
            ``rest_value``, ...) for a cube given as ``mom0``.

        Returns
        -------
        fitted : `~astrokin.models.KinematicDiskModel`
            The model with fitted parameters, ``stds`` and ``cov_matrix``; a
            model set of length N for N galaxies.

        Raises
        ------
        TypeError
            If ``inplace`` is not True or False.
        ValueError
            For a blind fit without a network, a combined one without
            ``training_data``, or ``inplace=True`` with several galaxies.

        Notes
        -----
        A blind fit is streamed: `STREAM_BLOCK` galaxies at a time are read,
        cleaned, prepared and fitted, and only their results are kept, so the
        memory of one call does not grow with the number of galaxies (beyond
        the results, and the MC samples when ``keep_samples``). A galaxy's
        result does not depend on the block it is fitted in (its dropout
        masks depend on the seed and its index only). Solo and combined fits
        train on all their galaxies at once.
        """
        import torch

        from astrokin.fitting import results
        from astrokin.fitting.frames import fitting_frames
        from astrokin.fitting.preprocessing import map_blocks, prepare_batch

        check_model(model)
        if mc_samples is not None:
            check_integer("mc_samples", mc_samples, 2)
            _check_mc_samples(mc_samples)
        check_integer("first_index", first_index, 0)
        inplace = check_bool("inplace", inplace)
        t0 = time.perf_counter()
        if mom1 is None:
            from astrokin.cubes import cube_moments

            if any(v is not None for v in (mom0_err, mom1_err, mom2, mom2_err, mom2_window)):
                raise ValueError("A cube (mom0 without mom1) gives its own moment and noise "
                                 "maps: mom0_err, mom1_err, mom2, mom2_err and mom2_window are "
                                 "for maps.")
            mom0, mom1, mom2, mom0_err, mom1_err, mom2_err, *mom2_window = cube_moments(
                mom0, **(cube_options or {}))
        elif cube_options is not None:
            raise ValueError("cube_options= is for a cube given as mom0 (without mom1).")
        base = _held_dispersion(model)  # mom0 and mom1 say nothing of the dispersion
        rings = _ring_start(base, self)  # a ring disc is fitted from a parametric fit
        fit_model = base if rings is None else rings
        # A blind fit of many galaxies is streamed: a block at a time is read,
        # prepared and fitted, so memory holds one block's maps (solo and
        # combined fits train on all of them, ring fits report their start fit).
        streamed = self.mode == "blind" and rings is None
        n, blocks = map_blocks(mom0, mom1, pixel_scale, beam, mask=mask, exclude=exclude,
                               reject_spurious=reject_spurious, cutout=cutout,
                               region_format=region_format, mom0_err=mom0_err,
                               mom1_err=mom1_err, mom2=mom2, mom2_err=mom2_err,
                               mom2_window=mom2_window, names=names,
                               block_size=STREAM_BLOCK if streamed else None)
        if self._on_read is not None:  # calibrate: the truth is checked before the fit
            self._on_read(n)
        distances = results.check_distances(distance, n)
        if mom0_err is not None and not self.refine:
            warnings.warn("mom0_err and mom1_err are used by refinement only, and this fitter "
                          "does not refine (refine=False): they are ignored.",
                          AstropyUserWarning, stacklevel=2)
        if inplace and n != 1:
            raise ValueError(f"inplace=True fits one galaxy into the model given; got "
                             f"{n} galaxies (they make a model set: use inplace=False).")
        if training_data is not None and self.mode != "combined":
            raise ValueError(
                f"training_data= is only used with mode='combined', not {self.mode!r}.")
        if self.mode == "combined" and training_data is None:
            raise ValueError("mode='combined' needs training_data= (other maps to train on).")
        if self.mode == "blind" and self.trained is None:
            raise ValueError("mode='blind' needs a trained network: call fitter.train(...) "
                             "first or use NeuralKinematicFitter.load(path).")
        from astrokin.fitting.dispersion import fitted_dispersion

        dispersion = mom2 is not None and bool(fitted_dispersion(model))
        if mom2 is not None and not dispersion:
            warnings.warn(f"mom2 is not fitted: {type(model).__name__} has no free dispersion "
                          "parameter.", AstropyUserWarning, stacklevel=2)
        parts, kept, kept_frames = [], [], []
        timings = dict.fromkeys(("preprocessing", "training", "mc_dropout", "refinement"), 0.0)
        first = int(first_index)
        t_read = time.perf_counter()
        for obs in blocks:
            batch = prepare_batch(obs)
            frames = fitting_frames(obs, batch)
            timings["preprocessing"] += time.perf_counter() - t_read
            part = self._fit_block(model, base, rings, fit_model, obs, batch, frames,
                                   mc_samples, first, dispersion, training_data, timings)
            parts.append(part)
            # What the results need of each galaxy: not its maps, once fitted.
            kept += obs if not streamed else [o.without_maps() for o in obs]
            kept_frames += frames
            first += len(obs)
            t_read = time.perf_counter()
        part = parts[0] if len(parts) == 1 else _joined(parts)
        t4 = time.perf_counter()
        fitted, self.fit_info = results.assemble_results(
            model, part["layout"], kept, kept_frames, part["summary"], part["names"],
            std_scale=part["scale"], trained=self.trained, inplace=inplace,
            amplitude=part["amplitude"], columns=part["columns"], fixed=part["fixed"],
            unfitted=() if dispersion else type(model).dispersion_parameters)
        results.add_observation_columns(fitted, self.fit_info, kept, distances, part["layout"],
                                        part["scale"])
        if rings is not None:
            if part["start_fit"] is not None:
                self.fit_info["start_fit"] = part["start_fit"]
            self.fit_info["rings"] = fitted.ring_table()
        n_samples = self.mc_samples if mc_samples is None else int(mc_samples)
        timings["results"] = time.perf_counter() - t4
        timings["total"] = time.perf_counter() - t0
        self.fit_info.update(
            loss_history=self.loss_history, mode=self.mode, mc_samples=n_samples,
            timings=timings, n_blocks=len(parts),
            device=str(resolve_device(self.device)), torch_threads=torch.get_num_threads())
        return fitted

    def _fit_block(self, model, base, rings, fit_model, obs, batch, frames, mc_samples,
                   first_index, dispersion, training_data, timings):
        """Train (solo, combined), MC dropout, refinement and dispersion of one block.

        Returns what `~astrokin.fitting.results.assemble_results` needs of the
        block (its amplitudes solved for while its maps are at hand);
        ``timings`` is added to.
        """
        from astrokin.fitting import results
        from astrokin.fitting.dispersion import fit_dispersion
        from astrokin.fitting.preprocessing import with_training_data

        t1 = time.perf_counter()
        self._warn_beams_outside_training(batch, obs)
        framed = _framed(fit_model, frames)
        if self.mode == "solo":
            self._train(fit_model, batch, framed)
        elif self.mode == "combined":
            self._train(fit_model, *with_training_data(fit_model, batch, framed, training_data))
        t2 = time.perf_counter()
        layout = self.layout.check_compatible(fit_model) if self.mode == "blind" else self.layout
        n_samples = self.mc_samples if mc_samples is None else int(mc_samples)
        tensors = batch.to(self.trained.device)
        summary, names = self.trained.mc_summary(
            tensors, n_samples, fixed=framed, ties=layout.ties,
            overrides=getattr(layout, "overrides", ()), seed=self._dropout_seed(),
            first_index=int(first_index), keep_samples=self.keep_samples)
        t3 = time.perf_counter()
        scale, amplitude, columns, layout, fixed = self.std_scale, None, None, self.layout, None
        start_fit = None
        if rings is not None and not self.refine:  # a ring network's prediction as it is
            fixed = {"r_outer": summary.mean[:, names.index("r_outer")]}
        if self.refine:
            from astrokin.fitting.refinement import bundled_guesses, refine

            options = dict(noise_maps=[o.noise_maps for o in obs], device=self.trained.device,
                           n_samples=n_samples if self.keep_samples else 0,
                           seed=self._dropout_seed(), first_index=int(first_index),
                           data_weighted=self.data_weighted)
            ring_network = rings is not None and _is_ring_disc(rings)
            if not ring_network:
                starts = [summary.mean]
                if self.mode != "blind":  # from scratch: never worse than the blind guess
                    starts += bundled_guesses(fit_model, batch, framed)
                refined = refine(fit_model, obs, frames, starts, names, framed, **options)
                summary, amplitude, columns = refined.summary, refined.amplitude, refined.columns
                scale = self.refined_std_scale
            if rings is not None:
                from astrokin.fitting.parameters import ParameterLayout
                from astrokin.fitting.ring_fits import error_scale, fit_rings, network_model
                from astrokin.models.rings import DEFAULT_RINGS, ring_class

                if ring_network:  # the rings start from the network's own
                    start_values, start_bic, guesses = summary.mean, None, ()
                else:  # from the refined parametric fit, and a bundled ring network's
                    start_fit = results.assemble_results(
                        fit_model, self.layout, obs, frames, summary, names, std_scale=scale,
                        amplitude=amplitude, columns=columns)
                    start_values, start_bic = summary.mean, columns["bic"]
                    guess_model = network_model(model, ring_class(DEFAULT_RINGS))
                    guesses = [(guess_model, g) for g in bundled_guesses(
                        guess_model, batch, _framed(guess_model, frames))]
                refined, names, r_outer = fit_rings(
                    base, fit_model, obs, frames, start_values, names, start_bic=start_bic,
                    guesses=guesses, **options)
                summary, amplitude, columns = refined.summary, refined.amplitude, refined.columns
                scale, layout, fixed = (error_scale(model), ParameterLayout(model),
                                        {"r_outer": r_outer})
        if dispersion:
            summary, extra = fit_dispersion(
                model, obs, frames, summary, names, device=self.trained.device,
                n_samples=n_samples if self.keep_samples else 0, seed=self._dropout_seed(),
                first_index=int(first_index))
            columns = {**(columns or {}), **extra}
        if amplitude is None and results.amplitude_is_free(model, layout):
            # Solved here, while the block's maps are at hand.
            amplitude = results.fitted_amplitude(self.trained, tensors, summary.mean, names)
        timings["training"] += t2 - t1
        timings["mc_dropout"] += t3 - t2
        timings["refinement"] += time.perf_counter() - t3
        return dict(summary=summary, names=names, amplitude=amplitude, columns=columns,
                    scale=scale, layout=layout, fixed=fixed, start_fit=start_fit)

    def mc_summary(self, batch, n_samples=None, *, first_index=0):
        """MC-dropout summaries of a prepared batch, with the fitter's network and seed.

        Values stay in each galaxy's fitting frame, and the parameters not
        predicted take their values at training (pre-training and benchmarks
        compare these with the truth of synthetic galaxies).

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
        """
        if self.trained is None:
            raise ValueError("mc_summary() needs a trained network.")
        n = self.mc_samples if n_samples is None else int(n_samples)
        return self.trained.mc_summary(batch, n, seed=self._dropout_seed(),
                                       first_index=int(first_index),
                                       keep_samples=self.keep_samples)

    def _dropout_seed(self):
        """The seed of the MC-dropout masks (distinct from training's)."""
        return None if self.seed is None else int(self.seed) + 1

    def calibrate(self, model, mom0, mom1, truth, *, parameters=None, level=0.6827,
                  **kwargs):
        """Calibrate the MC-dropout spreads on galaxies whose parameters are known.

        This fits ``mom0``/``mom1`` blind, compares the fitted values with
        ``truth``, and sets for each parameter the factor by which its raw
        spread must be multiplied for a fraction ``level`` of the errors to
        fall within the scaled 1-sigma interval
        (`astrokin.fitting.calibration`). The factors replace ``std_scale``
        and are saved with the network by `save`. Use galaxies that resemble
        the ones to be fitted (simulations of your own set-up, or galaxies
        with trusted fits): the factors are only as good as that resemblance.

        Parameters
        ----------
        model : `~astrokin.models.KinematicDiskModel`
            The model fitted, as in a call of the fitter.
        mom0, mom1
            The maps, as in a call of the fitter (at least a few hundred
            galaxies give stable factors).
        truth : `~astropy.table.Table`, dict, or model set
            True values named as the model's parameters, Quantities or plain
            numbers in canonical units, one per galaxy. ``vsini`` is
            calibrated too when the truth gives the inclination and the
            velocity scale.
        parameters : list of str, optional
            Which to calibrate (default: every free parameter the truth
            gives, and ``vsini``).
        level : float, optional
            Coverage the scaled 1-sigma intervals should have (default: that
            of a Gaussian 1-sigma interval).
        **kwargs
            Passed to the fitter call (``pixel_scale``, ``beam``, ``mask``...).

        Returns
        -------
        report : `~astropy.table.QTable`
            One row per parameter: ``parameter``, ``scale``, ``n`` (galaxies
            used: those with a nonzero spread), ``coverage_before`` (of the
            raw intervals) and ``coverage_after``.

        Raises
        ------
        TypeError
            If ``level`` is not a number, ``parameters`` not a list of
            names, ``truth`` not a table, dict or model set, or a truth
            column not numbers.
        ValueError
            Without a trained network in blind mode, for ``level`` outside
            (0, 1), a ``truth`` without one finite value per galaxy or with
            none of the parameters, or ``parameters`` naming one not free or
            absent. ``truth`` is checked before the fit (its length once the
            maps are read, before the network runs).
        astropy.units.UnitConversionError
            If a truth Quantity has the wrong kind of unit.

        Examples
        --------
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
                + (" without a network." if self.trained is None else "."))
        check_real("level", level, 0.0, 1.0)
        if parameters is not None and (
                isinstance(parameters, str) or not isinstance(parameters, (list, tuple))
                or not all(isinstance(nm, str) for nm in parameters)):
            raise TypeError("parameters must be a list of parameter names (e.g. "
                            f"['inclination', 'pa']) or None; got {parameters!r}.")
        check_model(model)
        # The truth is checked before the fit: its kind, names, units and finite
        # values now, one value per galaxy once the maps are read.
        cls, free = type(model), _calibrated_free(model, mom1, kwargs)
        calibration_targets(truth, cls, free, parameters, None)
        # The factors scale the errors this fitter gives: refined or MC-dropout ones.
        attr = "refined_std_scale" if self.refine else "std_scale"
        previous = getattr(self, attr)
        setattr(self, attr, None)
        self._on_read = lambda n: calibration_targets(truth, cls, free, parameters, n)
        try:
            with warnings.catch_warnings():
                # Galaxies pinned at a range edge are left out (the report's n).
                warnings.filterwarnings("ignore", "Parameters at the edge of the network",
                                        AstropyUserWarning)
                self(model, mom0, mom1, **kwargs)
        finally:
            setattr(self, attr, previous)
            self._on_read = None
        table = self.fit_info["table"]
        names, truths = calibration_targets(truth, cls, self.fit_info["free_parameters"],
                                            parameters, len(table))
        rows = calibrate_parameters(names, *table_values(table, names, cls), truths, level)
        setattr(self, attr, {**(previous or {}), **{r.parameter: r.scale for r in rows}})
        self.metadata_extra["calibration_refined_source" if self.refine
                            else "calibration_source"] = {
            "n_galaxies": len(table), "level": float(level),
            "parameters": [r.parameter for r in rows]}
        report = QTable(rows=[(r.parameter, r.scale, r.n, r.coverage_before, r.coverage_after)
                              for r in rows],
                        names=("parameter", "scale", "n", "coverage_before", "coverage_after"))
        report.add_index("parameter")
        return report

    # ------------------------------------------------------------------
    def save(self, path, *, overwrite=False):
        """Save the trained network: weights plus JSON metadata (no pickled objects).

        The file holds only tensors and one JSON string of metadata
        (`astrokin.fitting.persistence`): loading it never runs code. Ties
        (callables) are not saved; blind fits take them from the model
        given. The file is written atomically (an interrupted save never
        leaves a truncated file under ``path``).

        Parameters
        ----------
        path : str or path-like
        overwrite : bool, optional
            Replace an existing file (default: `FileExistsError`).

        Raises
        ------
        TypeError
            If ``overwrite`` is not True or False.
        ValueError
            If there is no trained network to save.
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        FileNotFoundError
            If the directory of ``path`` does not exist.
        """
        from astrokin.fitting.persistence import RECIPE_KEYS, save_network

        check_bool("overwrite", overwrite)
        if self.trained is None:
            raise ValueError("Nothing to save: the network has not been trained yet.")
        save_network(path, self.trained, recipe={k: getattr(self, k) for k in RECIPE_KEYS},
                     seed=self.seed, calibration=self.std_scale,
                     refined_calibration=self.refined_std_scale, extra=self.metadata_extra,
                     overwrite=overwrite)

    @classmethod
    def load(cls, path, *, model=None, device="auto", **kwargs):
        """Load a network saved with `save`, as a fitter in ``'blind'`` mode.

        The file is read with ``torch.load(weights_only=True)`` (no code from
        it runs) and checked before anything is built; astrokin imports no
        module it names unless astrokin's or already imported (pass
        ``model=`` for a class of your own).

        Parameters
        ----------
        path : str or path-like
        model : type or `~astrokin.models.KinematicDiskModel`, optional
            The model class (or an instance) the network must be for.
        device : str, optional
        **kwargs
            Other `NeuralKinematicFitter` options (e.g. ``mc_samples``,
            ``seed``, ``progress``).

        Returns
        -------
        fitter : `NeuralKinematicFitter`

        Raises
        ------
        TypeError
            If ``path`` is not a str or path-like, ``model`` is not a disc
            model, or ``mode=`` or ``trained=`` is given.
        FileNotFoundError
            If ``path`` does not exist or is not a file.
        astrokin.exceptions.NetworkFormatError
            If the file is truncated or corrupt, holds anything but tensors
            and strings, is not a saved network, is of a newer format version
            than this astrokin reads (the message names both), has missing or
            malformed metadata or weights that do not fit the network it
            describes, or is for another model class than ``model``.
        """
        from astrokin.exceptions import NetworkFormatError
        from astrokin.fitting import persistence

        for name in ("mode", "trained"):
            if name in kwargs:
                raise TypeError(
                    f"load() takes no {name}=: it returns a 'blind' fitter with the file's "
                    "network (to fine-tune it, set fitter.mode = 'solo' and fitter.warm_start "
                    "= True, or use NeuralKinematicFitter.pretrained(mode=...) for a bundled "
                    "one).")
        resolve_device(device)  # an unknown or absent device fails before reading
        meta, state, model_class = persistence.read_network(path, model)
        recipe = {k: v for k, v in meta["recipe"].items() if k in persistence.RECIPE_KEYS}
        try:
            cls(mode="blind", device="cpu", **recipe)
        except (TypeError, ValueError) as err:
            raise NetworkFormatError(f"{path} holds an invalid training recipe: {err}") from None
        fitter = cls(mode="blind", device=device, **{**recipe, **kwargs})
        fitter._attach(persistence.build_network(meta, state, model_class,
                                                 dropout=fitter.dropout,
                                                 device=resolve_device(device), path=path))
        return fitter

    @classmethod
    def pretrained(cls, name=None, *, model=None, **kwargs):
        """A network bundled with astrokin, ready for blind fits.

        Parameters
        ----------
        name : str, optional
            Which bundled network (see :doc:`/pretrained`):

            - ``'exponential_arctan'`` fits
              `~astrokin.models.ExponentialArctanDisk` with every geometric
              parameter free, trained on synthetic galaxies over the paper's
              Table 2 ranges, every PA, centre offsets, systemic velocities,
              beams of 1-4 pixels, noise and masks, with spreads calibrated
              to 68% coverage on held-out galaxies;
            - ``'tilted_ring'`` fits a 10-ring `~astrokin.models.TiltedRingDisk`
              (its outermost radius too), trained on the realistic prior of
              `~astrokin.synthetic.RealisticGenerator`: holes, rings,
              truncations, clumps and arms, bulge peaks and declining curves.

            By default, the one for ``model``.
        model : `~astrokin.models.KinematicDiskModel`, optional
            The model to be fitted: a `~astrokin.models.TiltedRingDisk` (of
            any number of rings) picks ``'tilted_ring'``, anything else
            ``'exponential_arctan'``. The exponential network also fits ring
            discs: by refinement from its refined fit (and from the ring
            network's prediction), which gives the table's ``best_model``.
        **kwargs
            Options of `load` (``device``, ``mc_samples``, ``seed``, ...);
            ``mode='solo'`` or ``'combined'`` fine-tunes the bundled weights
            on the maps being fitted.

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
        from astrokin.fitting.persistence import bundled_network

        mode = kwargs.pop("mode", "blind")
        if name is None:
            name = "tilted_ring" if _is_ring_disc(model) else "exponential_arctan"
        with bundled_network(name) as path:
            fitter = cls.load(path, **kwargs)
        if mode != "blind":
            fitter.mode, fitter.warm_start = mode, True
        return fitter


#: The most MC-dropout samples per galaxy a fit takes (its cost grows with them:
#: 1e6 samples of one galaxy take ~10 s and ~100 MB here).
MAX_MC_SAMPLES = 1_000_000


def _check_mc_samples(value):
    if value > MAX_MC_SAMPLES:
        raise ValueError(f"mc_samples must be at most {MAX_MC_SAMPLES:,} (the spread is known "
                         f"to 1% from ~5,000); got {value:,}.")
    return value


def _check_mode(mode):
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}.")
    return mode


def _integer(name, value, minimum):
    check_integer(name, value, minimum)
    return int(value)


def _real(name, value, lo, hi):
    check_real(name, value, lo, hi)
    return float(value)


def _check_seed(value):
    """None, or the seed as given (a non-negative integer)."""
    if value is not None:
        check_integer("seed", value, 0)
    return value


def _check_device(value):
    """The device as given; an unknown or absent one fails now, not mid-fit."""
    resolve_device(value)
    return value


def _check_dropout(value):
    _real("dropout", value, None, 1.0)
    if not 0 <= value < 1:
        raise ValueError(f"dropout must be in [0, 1); got {value}.")
    return float(value)


def _calibrated_free(model, mom1, options):
    """The free parameters a fit of ``model`` reports (as `calibrate` will see them)."""
    from astrokin.fitting.dispersion import fitted_dispersion

    # The dispersion is fitted with mom2 (given, or made from a cube given as mom0).
    dispersion = (options.get("mom2") is not None or mom1 is None) \
        and bool(fitted_dispersion(model))
    return [nm for nm in model.param_names if not model.fixed[nm] and not model.tied[nm]
            and (dispersion or nm not in type(model).dispersion_parameters)]


def _held_dispersion(model):
    """``model``, or a copy with its dispersion parameters fixed (they change mom2 only)."""
    names = [nm for nm in type(model).dispersion_parameters if not model.fixed[nm]]
    if not names:
        return model
    held = model.copy()
    for nm in names:
        held.fixed[nm] = True
    return held


def _is_ring_disc(model):
    from astrokin.models import TiltedRingDisk

    return isinstance(model, TiltedRingDisk)


def _ring_start(model, fitter):
    """The model a ring disc's network pass predicts (parametric, or a ring network's), or None."""
    from astrokin.models import TiltedRingDisk

    if not isinstance(model, TiltedRingDisk):
        return None
    network_class = None if fitter.trained is None else fitter.layout.model_class
    if network_class is not None and issubclass(network_class, TiltedRingDisk):
        from astrokin.fitting.ring_fits import network_model

        if not fitter.refine and type(model) is not network_class:
            raise ValueError(
                f"This network predicts a {network_class.__name__} ({network_class.n_rings} "
                f"rings); without refinement (refine=False) it fits only that model, not a "
                f"{type(model).__name__}. Use TiltedRingDisk(n_rings="
                f"{network_class.n_rings}) or refine=True.")

        # A ring network: it predicts the rings' extent too (and the rings of
        # ``model`` are read off its curves).
        return network_model(model, network_class)
    if not fitter.refine:
        raise ValueError(
            f"A {type(model).__name__} is fitted by refinement from a fit of a parametric "
            "model; this fitter has refine=False. Use refine=True (the default).")
    from astrokin.fitting.ring_fits import start_model

    return start_model(model, None if fitter.mode != "blind" else network_class)


def _framed(model, frames):
    """The model's fixed values, with x_0, y_0 and pa in each galaxy's fitting frame."""
    from astrokin.fitting.frames import framed_fixed

    return framed_fixed(fixed_values(model), model, frames)


def _joined(parts):
    """The block results of a streamed fit (`NeuralKinematicFitter._fit_block`), as one."""
    import numpy as np

    from astrokin.fitting.mc_dropout import MCSummary

    head = parts[0]

    def joined(values):
        values = list(values)
        if values[0] is None:
            return None
        if isinstance(values[0], dict):
            return {k: np.concatenate([v[k] for v in values]) for k in values[0]}
        return np.concatenate(values)

    return dict(head, summary=MCSummary.concatenate([p["summary"] for p in parts]),
                amplitude=joined(p["amplitude"] for p in parts),
                columns=joined(p["columns"] for p in parts),
                fixed=joined(p["fixed"] for p in parts))
