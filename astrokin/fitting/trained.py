"""A trained network as one value: weights, layout, fixed values and provenance.

`TrainedNetwork` is what every way of training produces (a solo or combined
fit, `~astrokin.fitting.NeuralKinematicFitter.train`, pre-training,
distributed training) and what reading a network file gives; the fitter
takes one (``NeuralKinematicFitter(network=...)``) and exposes it as
``fitter.trained``. It knows how to draw its own MC-dropout predictions for a
batch of prepared maps (`TrainedNetwork.mc_summary`).
"""

from dataclasses import dataclass, field

__all__ = ["TrainedNetwork", "describe_model"]


def describe_model(model_class, layout=None, model=None):
    """JSON description of the model a network is trained for: class, units, bounds.

    Parameters
    ----------
    model_class : type
        The disc model class.
    layout : `~astrokin.fitting.parameters.ParameterLayout`, optional
        What the network predicts; gives the ``fixed`` and ``tied`` names.
    model : `~astrokin.models.KinematicDiskModel`, optional
        The model trained on: its units and bounds (default: the class's),
        and its fixed and tied names when there is no ``layout``.

    Returns
    -------
    block : dict
        ``class`` (``'module:Qualname'``), ``param_names``, ``units``,
        ``bounds``, and ``fixed``/``tied`` when known.

    Examples
    --------
    >>> from astrokin.fitting.trained import describe_model
    >>> from astrokin.models import ExponentialArctanDisk
    >>> describe_model(ExponentialArctanDisk)["units"]["inclination"]
    'deg'
    """
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


@dataclass(eq=False)
class TrainedNetwork:
    """A trained network and everything needed to use, describe and save it.

    Parameters
    ----------
    network : `~astrokin.fitting.network.KinematicAutoencoder`
        The encoders and the rendering decoder.
    layout : `~astrokin.fitting.parameters.ParameterLayout`
        Which parameters the network predicts, and over which ranges.
    fixed_values : dict
        Canonical values of the parameters it does not predict, as at
        training (`~astrokin.fitting.parameters.fixed_values`).
    model : dict, optional
        The model block of the network file (`describe_model`); default:
        described from ``layout``'s class.
    loss_history : list of float, optional
        Mean training loss per epoch (or per evaluation of pre-training).
    calibration : dict, optional
        Per-parameter factors of the MC-dropout spreads (see
        `~astrokin.fitting.NeuralKinematicFitter.calibrate`), which a fitter
        built on this network starts with.
    refined_calibration : dict, optional
        The same for the errors of refined fits
        (`astrokin.fitting.refinement`); None: none needed.
    metadata : dict, optional
        Provenance saved with the network (e.g. the pre-training recipe and
        its validation history); for a network read from a file, the file's
        whole metadata.

    Examples
    --------
    >>> import numpy as np
    >>> import astropy.units as u
    >>> from astrokin.fitting import NeuralKinematicFitter
    >>> from astrokin.fitting.preprocessing import parse_maps, prepare_batch
    >>> from astrokin.models import ExponentialArctanDisk
    >>> trained = NeuralKinematicFitter.pretrained().trained
    >>> disk = ExponentialArctanDisk(inclination=60 * u.deg, r_scale=5 * u.arcsec,
    ...                              r_turn=2 * u.arcsec, v_max=200 * u.km / u.s)
    >>> mom0, mom1 = disk.render((64, 64), 0.5 * u.arcsec, beam=1.5 * u.arcsec)
    >>> batch = prepare_batch(parse_maps(mom0, mom1, pixel_scale=0.5 * u.arcsec,
    ...                                  beam=1.5 * u.arcsec))
    >>> summary, names = trained.mc_summary(batch, 100, seed=0)
    >>> bool(abs(summary.mean[0, names.index("inclination")] - 60) < 5)
    True
    """

    network: object
    layout: object
    fixed_values: dict
    model: dict | None = None
    loss_history: list = field(default_factory=list)
    calibration: dict | None = None
    refined_calibration: dict | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.model is None:
            self.model = describe_model(self.layout.model_class, self.layout)
        self.loss_history = [float(v) for v in self.loss_history]
        self.metadata = dict(self.metadata)

    @property
    def model_class(self):
        """The disc model class the network predicts the parameters of."""
        return self.layout.model_class

    @property
    def device(self):
        """The `torch.device` the weights are on."""
        return next(self.network.parameters()).device

    def output_names(self):
        """Names of the quantities `mc_summary` returns: every parameter, then ``vsini``."""
        names = list(self.layout.param_names)
        vname = self.layout.model_class.velocity_scale_parameter
        return names + (["vsini"] if vname is not None and "inclination" in names else [])

    def mc_summary(self, batch, n_samples, *, fixed=None, ties=None, overrides=(), seed=None,
                   first_index=0, keep_samples=False):
        """MC-dropout summaries of every parameter (canonical units) and ``vsini``.

        Parameters
        ----------
        batch : `~astrokin.fitting.batch.PreparedBatch` or `~astrokin.fitting.batch.TensorBatch`
            Prepared maps; values are in each galaxy's fitting frame.
        n_samples : int
            MC samples per galaxy.
        fixed : dict, optional
            Values of the parameters not predicted (scalars, or ``(N, 1)``
            arrays of per-galaxy values); default `fixed_values`.
        ties : dict, optional
            Tie callables; default the layout's.
        overrides : sequence of str, optional
            Predicted parameters that take their ``fixed`` value instead.
        seed : int, optional
            Seed of the dropout masks (see
            `~astrokin.fitting.mc_dropout.mc_dropout_summary`).
        first_index : int, optional
            Position of the first galaxy in a larger catalogue.
        keep_samples : bool, optional
            Keep every sample.

        Returns
        -------
        summary : `~astrokin.fitting.mc_dropout.MCSummary`
        names : list of str
            The quantities, in the order of the summary's last axis.
        """
        import torch

        from astrokin.fitting.mc_dropout import mc_dropout_summary
        from astrokin.fitting.parameters import select_fixed

        net = self.network
        net.eval()
        if not hasattr(batch, "context"):
            batch = batch.to(self.device)
        layout = self.layout
        fixed = self.fixed_values if fixed is None else fixed
        names = self.output_names()
        n_params = len(layout.param_names)
        vname = layout.model_class.velocity_scale_parameter

        def transform(outputs, index):
            context = {k: v[index][:, None] for k, v in batch.context.items()}
            params = layout.to_parameters(
                {"intensity": outputs[0], "velocity": outputs[1]}, context,
                select_fixed(fixed, index), ties, overrides,
            )
            cols = [params[n] for n in names[:n_params]]
            if len(names) > n_params:
                cols.append(params[vname] * torch.sin(torch.deg2rad(params["inclination"])))
            return torch.stack(cols, dim=-1)

        periods = [None] * len(names)
        for slot, period in zip(layout.slots, layout.periods, strict=True):
            periods[names.index(slot["name"])] = period
        summary = mc_dropout_summary(
            net.encoders, [batch.mom0, batch.mom1], n_samples, transform,
            periods=periods, seed=seed, keep_samples=keep_samples, first_index=first_index,
        )
        return summary, names
