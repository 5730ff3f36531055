"""The one guarded optimisation loop, and the paper's self-supervised training with it.

`TrainingLoop` runs every training in astrokin: solo and combined fits and
`~astrokin.fitting.NeuralKinematicFitter.train` (through
`train_self_supervised`), pre-training (`astrokin.fitting.pretraining`) and
distributed training (`astrokin.survey.train_distributed`, which wraps the
network in `~torch.nn.parallel.DistributedDataParallel` and hands the loop
its shards). Callers differ in their data, their loss and what they do at the
end of an epoch; the loop is the same:

- every step is checked before the optimiser applies it: a non-finite loss,
  a loss more than `EXPLODE_FACTOR` times the first batch's (and above
  ``EXPLODE_FACTOR * LOSS_FLOOR``: the losses compare maps normalised to
  about [-1, 1], so they start at ~0.01-1 and even a poor fit stays far
  below that), or non-finite gradients raise
  `~astrokin.exceptions.TrainingDivergedError`;
- gradients are clipped to a norm when asked (pre-training);
- on that error, on `KeyboardInterrupt` (Ctrl-C) and on any other exception,
  the network goes back to the last weights that gave a finite loss, is left
  in eval mode, and the exception propagates; `TrainingLoop.info` says how
  training ended and `TrainingLoop.history` holds the completed epochs;
- the learning-rate schedule steps once per epoch; a progress bar shows the
  loss.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from astropy.utils.exceptions import AstropyUserWarning

from astrokin.exceptions import TrainingDivergedError

__all__ = ["EXPLODE_FACTOR", "LOSS_FLOOR", "TrainingLoop", "TrainingOutcome",
           "train_self_supervised"]

#: A batch loss above this many times the first batch's counts as exploding.
EXPLODE_FACTOR = 1e4
#: ... and only when it is above ``EXPLODE_FACTOR * LOSS_FLOOR``.
LOSS_FLOOR = 1e-3


class TrainingLoop:
    """The guarded optimisation loop (see the module notes).

    Parameters
    ----------
    network : `torch.nn.Module`
        The module whose weights are trained, checked and restored (the
        module itself, not a `~torch.nn.parallel.DistributedDataParallel`
        wrapper around it).
    optimiser : `torch.optim.Optimizer`
    schedule : `torch.optim.lr_scheduler.LRScheduler`, optional
        Stepped once at the end of every epoch.
    clip_grad_norm : float, optional
        Clip the gradients to this total norm before each step.
    progress : bool, optional
        Show a tqdm progress bar over the epochs.
    description : str, optional
        The progress bar's label.
    unit : {'epoch', 'step'}, optional
        What one pass of `run` is called in messages; with ``'step'`` (one
        batch per pass) the batch number is left out.
    reduce : callable, optional
        Applied to each batch's loss value before it is checked and
        recorded; distributed training passes the mean over processes, so
        that every process sees the same value and stops together.
    start_is_good : bool, optional
        The weights the network starts with are good (a network continued
        from a trained one): a failure at the first step restores them.

    Attributes
    ----------
    history : list of float
        Mean loss of each completed epoch (weighted by the batch weights).
    info : dict
        ``epochs_requested``, ``epochs_completed``, ``stopped``
        (``'completed'``, ``'interrupted'``, ``'diverged'`` or ``'error'``)
        and ``message``.
    has_good_weights : bool
        Whether the network holds weights that gave a finite loss (after a
        failure: whether they could be restored).

    Examples
    --------
    >>> import torch
    >>> from astrokin.fitting.training import TrainingLoop
    >>> torch.manual_seed(0)  # doctest: +IGNORE_OUTPUT
    >>> layer = torch.nn.Linear(1, 1)
    >>> x = torch.linspace(-1, 1, 32)[:, None]
    >>> loop = TrainingLoop(layer, torch.optim.Adam(layer.parameters(), lr=0.05))
    >>> history = loop.run(200, lambda epoch: [(x, len(x))],
    ...                    lambda x: ((layer(x) - 3 * x) ** 2).mean())
    >>> loop.info["stopped"], bool(history[-1] < 0.01 * history[0])
    ('completed', True)
    """

    def __init__(self, network, optimiser, *, schedule=None, clip_grad_norm=None,
                 progress=False, description="training", unit="epoch", reduce=None,
                 start_is_good=False):
        self.network = network
        self.optimiser = optimiser
        self.schedule = schedule
        self.clip_grad_norm = clip_grad_norm
        self.progress = progress
        self.description = description
        self.unit = unit
        self.reduce = reduce
        self.learning_rate = float(optimiser.param_groups[0]["lr"])
        self.history = []
        self.info = {}
        self._last_good = _snapshot(network) if start_is_good else None

    @property
    def has_good_weights(self):
        """Whether some weights gave a finite loss (or the start was good)."""
        return self._last_good is not None

    def run(self, epochs, batches, step_loss, *, first_epoch=0, history=None,
            end_of_epoch=None):
        """Train from epoch ``first_epoch`` up to, not including, ``epochs``.

        Parameters
        ----------
        epochs : int
            The epoch to stop before (the total, when resuming).
        batches : callable
            ``batches(epoch)`` gives the epoch's batches, as pairs
            ``(batch, weight)``; the epoch's loss is the weighted mean of the
            batch losses (weight: the number of galaxies).
        step_loss : callable
            ``step_loss(batch)`` gives the scalar loss tensor to minimise.
        first_epoch : int, optional
            Resume after this many epochs.
        history : list of float, optional
            The losses of the epochs before ``first_epoch``.
        end_of_epoch : callable, optional
            ``end_of_epoch(epoch, mean_loss)``, called after the schedule
            stepped (evaluation, logging, checkpoints).

        Returns
        -------
        history : list of float
            Mean loss of every epoch, the resumed ones included.

        Raises
        ------
        astrokin.exceptions.TrainingDivergedError
            If the loss or the gradients become non-finite or the loss
            explodes; the network holds its last good weights.
        """
        self.history = list(history or [])
        self.info = {"epochs_requested": int(epochs), "epochs_completed": len(self.history),
                     "stopped": None, "message": None}
        params = [p for p in self.network.parameters() if p.requires_grad]
        first_loss = None
        bar = _progress(range(int(first_epoch), int(epochs)), self.progress, self.description)
        try:
            for epoch in bar:
                self.network.train()
                total = weights = 0.0
                for k, (batch, weight) in enumerate(batches(epoch)):
                    self.optimiser.zero_grad()
                    loss = step_loss(batch)
                    value = float(loss.detach())
                    if self.reduce is not None:
                        value = float(self.reduce(value))
                    where = f"{self.unit} {epoch + 1}/{epochs}"
                    if self.unit == "epoch":
                        where += f", batch {k + 1}"
                    if first_loss is None and np.isfinite(value):
                        first_loss = value
                    limit = EXPLODE_FACTOR * max(first_loss or 0.0, LOSS_FLOOR)
                    if not np.isfinite(value) or value > limit:
                        what = (f"the loss became {value}" if not np.isfinite(value) else
                                f"the loss exploded to {value:.4g}, more than "
                                f"{EXPLODE_FACTOR:g} times the first batch's "
                                f"{first_loss:.4g}")
                        raise TrainingDivergedError(self._message(what, where),
                                                    epoch=epoch, loss=value)
                    self._last_good = _snapshot(self.network)
                    loss.backward()
                    grads = [p.grad for p in params if p.grad is not None]
                    if grads and not bool(torch.stack(
                            [torch.isfinite(g).all() for g in grads]).all()):
                        raise TrainingDivergedError(
                            self._message("the gradients became non-finite", where),
                            epoch=epoch, loss=float("nan"))
                    if self.clip_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
                    self.optimiser.step()
                    total += value * weight
                    weights += weight
                if self.schedule is not None:
                    self.schedule.step()
                self.history.append(total / weights)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{self.history[-1]:.4g}")
                if end_of_epoch is not None:
                    end_of_epoch(epoch, self.history[-1])
        except BaseException as err:
            stopped = ("interrupted" if isinstance(err, KeyboardInterrupt) else
                       "diverged" if isinstance(err, TrainingDivergedError) else "error")
            self.info.update(epochs_completed=len(self.history), stopped=stopped,
                             message=str(err) or type(err).__name__)
            if self._last_good is not None:
                self.network.load_state_dict(self._last_good)
            self.network.eval()
            raise
        self.network.eval()
        self.info.update(epochs_completed=len(self.history), stopped="completed")
        return self.history

    def _message(self, what, where):
        kept = ("the fitter keeps the last weights that gave a finite loss"
                if self._last_good is not None
                else "no weights of this training gave a finite loss, so the fitter is unchanged")
        return (f"Training diverged at {where}: {what}. Training stopped before applying the "
                f"step; {kept}. Check the maps for extreme or non-finite values (and a custom "
                f"model's profiles for NaN), or lower learning_rate (now "
                f"{self.learning_rate:g}).")


@dataclass
class TrainingOutcome:
    """How a `train_self_supervised` run ended.

    Attributes
    ----------
    network : `~astrokin.fitting.network.KinematicAutoencoder` or None
        The trained network, or after a failure the network with its last
        good weights; None when no weights of a fresh network gave a finite
        loss.
    layout : `~astrokin.fitting.parameters.ParameterLayout`
    history : list of float
        Mean loss of every completed epoch.
    info : dict
        As `TrainingLoop.info`.
    error : BaseException or None
        What stopped the training, for the caller to raise once it has kept
        what was learnt.
    """

    network: object
    layout: object
    history: list
    info: dict
    error: BaseException | None = None


def train_self_supervised(layout, batch, fixed, *, epochs, batch_size, learning_rate, lr_decay,
                          lr_decay_every, dropout, device, seed=None, progress=False,
                          start=None, overrides=()):
    """Train a network on maps with the paper's self-supervised loss (Adam, step decay).

    Parameters
    ----------
    layout : `~astrokin.fitting.parameters.ParameterLayout`
        What a fresh network predicts (ignored with ``start``, which keeps
        its own).
    batch : `~astrokin.fitting.batch.PreparedBatch`
        The maps to train on.
    fixed : dict
        Values of the parameters not predicted, per galaxy where framed
        (`~astrokin.fitting.frames.framed_fixed`).
    epochs, batch_size, learning_rate, lr_decay, lr_decay_every, dropout
        As the options of `~astrokin.fitting.NeuralKinematicFitter`.
    device : `torch.device`
    seed : int, optional
        Seeds the initial weights and the batch order (the global torch
        random state is left as it was).
    progress : bool, optional
    start : `~astrokin.fitting.trained.TrainedNetwork`, optional
        Continue training this network (in place) instead of fresh weights.
    overrides : sequence of str, optional
        Predicted parameters that take their ``fixed`` value
        (`~astrokin.fitting.parameters.ParameterLayout.check_compatible`).

    Returns
    -------
    outcome : `TrainingOutcome`
        Never raises for a failed training: the error is in
        ``outcome.error``.
    """
    from astrokin.fitting.network import KinematicAutoencoder, reconstruction_loss
    from astrokin.fitting.parameters import select_fixed

    epochs = int(epochs)
    tensors = batch.to(device)
    n = len(tensors)
    network, loop = None, None
    if start is not None:
        layout = start.layout
    try:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            if start is not None:
                network = start.network.to(device)
            else:
                network = KinematicAutoencoder(layout, dropout, device=device)
            order_gen = torch.Generator()
            order_gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
            optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
            schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=lr_decay_every,
                                                       gamma=lr_decay)
            loop = TrainingLoop(network, optimiser, schedule=schedule, progress=progress,
                                description=f"training ({n} maps)",
                                start_is_good=start is not None)

            def batches(epoch):
                order = torch.randperm(n, generator=order_gen).to(device)
                for first in range(0, n, batch_size):
                    index = order[first:first + batch_size]
                    yield (tensors.select(index), select_fixed(fixed, index.cpu().numpy())), \
                        len(index)

            def loss(item):
                sub, sub_fixed = item
                _, r0, r1 = network(sub, sub_fixed, overrides=overrides)
                return reconstruction_loss(r0, r1, sub)

            loop.run(epochs, batches, loss)
    except BaseException as err:  # kept for the caller, which raises it
        info = loop.info if loop is not None and loop.info else {
            "epochs_requested": epochs, "epochs_completed": 0,
            "stopped": "interrupted" if isinstance(err, KeyboardInterrupt) else "error",
            "message": str(err) or type(err).__name__}
        keep = network if loop is not None and loop.has_good_weights else None
        return TrainingOutcome(keep, layout, list(loop.history) if loop else [], dict(info), err)
    return TrainingOutcome(network, layout, list(loop.history), dict(loop.info))


def _snapshot(network):
    """A copy of the network's weights (cheap: ~5 MB for the paper's encoders)."""
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _progress(iterable, enabled, desc):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        warnings.warn("tqdm is not installed; no progress bar.", AstropyUserWarning, stacklevel=3)
        return iterable
    return tqdm(iterable, desc=desc, leave=False)
