r"""Training on shards with `torch.distributed`: one process, or many GPUs and nodes.

`train_distributed` trains the network of
`~astrokin.fitting.NeuralKinematicFitter` (the self-supervised loss of Dawson
et al. 2021, Adam with the fitter's step decay of the learning rate) on maps
stored as shards (`astrokin.survey.shards`). Launched by ``torchrun``, each
process wraps the network in
`~torch.nn.parallel.DistributedDataParallel` (gloo on CPUs, NCCL on GPUs);
run plainly, the same code is one process. From the command line::

    torchrun --nproc_per_node=4 -m astrokin.survey.train --shards DIR --out net.pt \
        --epochs 50 --batch-size 256 --checkpoint-every 1

How the work is split
    Every epoch has one global order of the galaxies, drawn from
    ``(seed, epoch)``: the shards in random order, and the galaxies of each
    shard in random order (so consecutive galaxies come from the same file).
    It is cut into global batches of ``batch_size`` galaxies, and each of
    the ``W`` processes takes a contiguous ``1/W`` of every batch, reading
    only those galaxies from the memory-mapped shards. Each process's loss
    is its galaxies' summed loss times ``W / batch_size``, so that DDP's
    average of the gradients is exactly the gradient of the batch mean:
    the optimiser steps, and so the training, are those of one process with
    the same ``batch_size``, up to floating-point rounding (and, when
    ``dropout > 0``, the dropout masks, which each process draws from its
    own stream ``(seed, epoch, rank)``).

Checkpoints and restarts
    Every ``checkpoint_every`` epochs the first process writes the network,
    the optimiser and the learning-rate schedule to ``checkpoint``
    (atomically); a run started again with the same ``checkpoint`` resumes
    after the last completed epoch, with any number of processes, and gives
    the result an uninterrupted run would have (bit for bit on CPUs with
    one process). ``epochs`` may be raised on resumption, to train longer.
"""

import json
import os
import time
from pathlib import Path

import numpy as np

from astrokin._io import atomic_path

__all__ = ["epoch_batches", "train_distributed"]

_CHECKPOINT_FORMAT = "astrokin-distributed-checkpoint"
#: Settings a resumed run must share with the checkpoint it resumes.
_RESUME_KEYS = ("model_class", "free_names", "batch_size", "learning_rate", "lr_decay",
                "lr_decay_every", "dropout", "seed", "n_galaxies", "shard_sizes")


def epoch_batches(shard_sizes, batch_size, seed, epoch):
    """The global batches of one epoch: arrays of dataset indices.

    Parameters
    ----------
    shard_sizes : list of int
        Galaxies per shard (`~astrokin.survey.ShardDataset.shard_sizes`).
    batch_size : int
        Galaxies per global batch (the last batch may be smaller).
    seed : int
        Training seed.
    epoch : int
        0-based epoch.

    Returns
    -------
    batches : list of numpy.ndarray
        The order does not depend on the number of processes.

    Examples
    --------
    >>> from astrokin.survey.distributed import epoch_batches
    >>> batches = epoch_batches([4, 4, 2], batch_size=4, seed=0, epoch=0)
    >>> [len(b) for b in batches], sorted(np.concatenate(batches).tolist()) == list(range(10))
    ([4, 4, 2], True)
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    offsets = np.concatenate([[0], np.cumsum(shard_sizes)]).astype(np.int64)
    order = np.concatenate([offsets[s] + rng.permutation(int(shard_sizes[s]))
                            for s in rng.permutation(len(shard_sizes))])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def train_distributed(shards, output, *, model=None, epochs=10, batch_size=64,
                      learning_rate=1e-4, lr_decay=0.975, lr_decay_every=2, dropout=0.1,
                      seed=0, init=None, checkpoint=None, checkpoint_every=1, device="auto",
                      overwrite=False, log=print):
    """Train a network on a shard directory, in one process or as one of many (``torchrun``).

    Parameters
    ----------
    shards : str or path-like
        A directory written by `~astrokin.survey.write_shards` or
        `~astrokin.survey.catalogue_to_shards`, readable by every process.
    output : str or path-like
        Where the first process saves the trained network
        (`~astrokin.fitting.NeuralKinematicFitter.save`, atomically); load it
        with `~astrokin.fitting.NeuralKinematicFitter.load` for blind fits.
    model : `~astrokin.models.KinematicDiskModel`, optional
        Model whose free parameters the network predicts (default:
        `~astrokin.models.ExponentialArctanDisk` with default settings, or
        the model of ``init``).
    epochs : int, optional
        Total epochs (passes over all galaxies).
    batch_size : int, optional
        Galaxies per optimiser step, over all processes together.
    learning_rate, lr_decay, lr_decay_every : float, float, int, optional
        Adam's learning rate, multiplied by ``lr_decay`` every
        ``lr_decay_every`` epochs (as `~astrokin.fitting.NeuralKinematicFitter`).
    dropout : float, optional
        Dropout probability of the encoders.
    seed : int, optional
        Seeds the initial weights, the galaxy order of every epoch and the
        dropout masks.
    init : str or path-like, optional
        Start from this saved network (``'bundled'``: the network bundled
        with astrokin) instead of random weights.
    checkpoint : str or path-like, optional
        Checkpoint file: written every ``checkpoint_every`` epochs, and
        resumed from when it exists.
    checkpoint_every : int, optional
        Epochs between checkpoints.
    device : str, optional
        ``'auto'``: this process's GPU (``LOCAL_RANK``) when CUDA is
        available, else the CPU.
    overwrite : bool, optional
        Replace an existing ``output``.
    log : callable or None, optional
        Receives one line per epoch (first process only).

    Returns
    -------
    fitter : `~astrokin.fitting.NeuralKinematicFitter`
        The trained network in ``'blind'`` mode (on every process).

    Notes
    -----
    Under ``torchrun`` (the environment variables ``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``), the process group is initialised here
    unless it already is, with NCCL for CUDA devices and gloo otherwise, and
    destroyed at the end if it was initialised here.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astrokin.models import ExponentialArctanDisk
    >>> from astrokin.survey import train_distributed, write_shards
    >>> from astrokin.synthetic import make_galaxies
    >>> tmp = getfixture("tmp_path")
    >>> gals = make_galaxies(ExponentialArctanDisk(), 8, seed=0)
    >>> _ = write_shards(gals.mom0, gals.mom1 * u.km / u.s, tmp / "shards",
    ...                  pixel_scale=1 * u.arcsec, beam=2 * u.arcsec, shard_size=4)
    >>> fitter = train_distributed(tmp / "shards", tmp / "net.pt", epochs=2, batch_size=4,
    ...                            learning_rate=1e-3, device="cpu", log=None)
    >>> len(fitter.loss_history), (tmp / "net.pt").exists()
    (2, True)
    """
    import torch
    import torch.distributed as dist

    from astrokin._validation import check_bool, check_integer
    from astrokin.fitting import NeuralKinematicFitter
    from astrokin.fitting.devices import resolve_device
    from astrokin.fitting.network import KinematicAutoencoder, galaxy_losses
    from astrokin.fitting.parameters import ParameterLayout, fixed_values
    from astrokin.fitting.trained import TrainedNetwork
    from astrokin.fitting.training import TrainingLoop
    from astrokin.survey.shards import ShardDataset

    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("lr_decay_every", lr_decay_every),
                        ("checkpoint_every", checkpoint_every)):
        check_integer(name, value, 0 if name == "epochs" else 1)
    check_bool("overwrite", overwrite)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
    if seed is None or int(seed) != seed:
        raise ValueError(f"seed must be an integer (every process needs the same); got {seed!r}.")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True to replace it.")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"The directory of {output} does not exist.")
    data = ShardDataset(shards)
    if log is None or (dist.is_initialized() and dist.get_rank() != 0) \
            or int(os.environ.get("RANK", "0")) != 0:
        log = _quiet

    world = int(os.environ.get("WORLD_SIZE", "1"))
    own_group = False
    if world > 1 and not dist.is_initialized():
        use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        own_group = True
    distributed = dist.is_initialized() and dist.get_world_size() > 1
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    dev = resolve_device(device, local_rank=True)
    try:
        init_fitter = None
        if init is not None:
            kw = dict(device=str(dev), progress=False)
            init_fitter = (NeuralKinematicFitter.pretrained(**kw) if str(init) == "bundled"
                           else NeuralKinematicFitter.load(init, **kw))
        if model is None:
            from astrokin.models import ExponentialArctanDisk

            model = (init_fitter.layout.model_class() if init_fitter is not None
                     else ExponentialArctanDisk())
        layout = ParameterLayout(model)
        fixed = fixed_values(model)
        torch.manual_seed(int(seed))
        network = KinematicAutoencoder(layout, dropout, device=dev)
        if init_fitter is not None:
            init_fitter.layout.check_compatible(model)
            network.intensity_encoder.load_state_dict(
                init_fitter.network.intensity_encoder.state_dict())
            network.velocity_encoder.load_state_dict(
                init_fitter.network.velocity_encoder.state_dict())
        optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
        schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=int(lr_decay_every),
                                                   gamma=lr_decay)
        config = {"model_class": f"{type(model).__module__}:{type(model).__qualname__}",
                  "free_names": list(layout.free_names), "batch_size": int(batch_size),
                  "learning_rate": float(learning_rate), "lr_decay": float(lr_decay),
                  "lr_decay_every": int(lr_decay_every), "dropout": float(dropout),
                  "seed": int(seed), "n_galaxies": len(data),
                  "shard_sizes": list(data.shard_sizes), "init": None if init is None
                  else str(init)}
        start, history = 0, []
        if checkpoint is not None and Path(checkpoint).exists():
            start, history = _load_checkpoint(checkpoint, config, network, optimiser, schedule)
            log(f"resuming from {checkpoint} after epoch {start}")
        wrapped = (torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[dev.index] if dev.type == "cuda" else None)
            if distributed else network)
        t0 = time.perf_counter()

        def batches(epoch):
            torch.manual_seed(_stream(seed, epoch, rank))
            for batch_index in epoch_batches(data.shard_sizes, int(batch_size), seed, epoch):
                mine = np.array_split(batch_index, world)[rank]
                weight = world / len(batch_index)
                if len(mine) == 0:  # fewer galaxies than processes: take part, add nothing
                    mine, weight = batch_index[:1], 0.0
                yield (data.read(mine).to(dev), weight), len(batch_index)

        def loss(item):
            tb, weight = item
            _, r0, r1 = wrapped(tb, fixed)
            return galaxy_losses(r0, r1, tb).sum() * weight

        def mean_over_processes(value):
            # Each process's loss is its share of the batch mean times W: their mean
            # is the batch mean, the same on every process (so all stop together).
            if not distributed:
                return value
            total = torch.tensor([value], dtype=torch.float64, device=dev)
            dist.all_reduce(total)
            return float(total[0]) / world

        def end_of_epoch(epoch, mean_loss):
            log(json.dumps({"epoch": epoch + 1, "loss": round(mean_loss, 6),
                            "lr": optimiser.param_groups[0]["lr"], "processes": world,
                            "minutes": round((time.perf_counter() - t0) / 60, 3)}))
            if checkpoint is not None and rank == 0 and (
                    (epoch + 1) % int(checkpoint_every) == 0 or epoch + 1 == int(epochs)):
                _save_checkpoint(checkpoint, config, epoch + 1, loop.history, network,
                                 optimiser, schedule)

        loop = TrainingLoop(network, optimiser, schedule=schedule, reduce=mean_over_processes)
        loop.run(int(epochs), batches, loss, first_epoch=start, history=history,
                 end_of_epoch=end_of_epoch)
        fitter = NeuralKinematicFitter(
            mode="blind", epochs=int(epochs), batch_size=int(batch_size),
            learning_rate=learning_rate, lr_decay=lr_decay, lr_decay_every=int(lr_decay_every),
            dropout=dropout, device=str(dev), seed=int(seed), progress=False,
            trained=TrainedNetwork(network, layout, fixed, loss_history=loop.history,
                                   metadata={"distributed_training": {
                                       **config, "epochs": int(epochs), "processes": world,
                                       "shards": str(Path(shards).resolve())}}))
        if rank == 0:
            fitter.save(output, overwrite=overwrite)  # atomic
        if distributed:
            dist.barrier()
        return fitter
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------
def _quiet(line):
    """Discard a log line (processes other than the first)."""


def _stream(seed, epoch, rank):
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank), 7]).generate_state(1)[0])


def _save_checkpoint(path, config, epoch, history, network, optimiser, schedule):
    import torch

    state = {"format": _CHECKPOINT_FORMAT, "config": json.dumps(config), "epoch": epoch,
             "history": torch.tensor(history, dtype=torch.float64),
             "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
             "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict()}
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path, config, network, optimiser, schedule):
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an astrokin training checkpoint.")
    saved = json.loads(state["config"])
    differ = [k for k in _RESUME_KEYS if saved.get(k) != config.get(k)]
    if differ:
        raise ValueError(f"The checkpoint {path} is of another training run (it differs in "
                         f"{differ}); remove it or give another checkpoint path.")
    network.load_state_dict(state["network"])
    optimiser.load_state_dict(state["optimiser"])
    schedule.load_state_dict(state["schedule"])
    return int(state["epoch"]), [float(x) for x in state["history"]]
