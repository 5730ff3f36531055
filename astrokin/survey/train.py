r"""Command-line training on shards: ``python -m astrokin.survey.train``, or under ``torchrun``.

One process::

    python -m astrokin.survey.train --shards shards/ --out net.pt --epochs 20

Two processes on this machine (gloo on CPUs, NCCL on GPUs), or 4 GPUs on
each of 2 nodes::

    torchrun --nproc_per_node=2 -m astrokin.survey.train --shards shards/ --out net.pt
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d \
        --rdzv-endpoint=HOST:29500 -m astrokin.survey.train --shards shards/ --out net.pt

Make shards first with ``--make-shards CATALOGUE`` (a catalogue of FITS
files, see `astrokin.survey.read_catalogue`), in one process.
"""

import argparse
import json
import os

__all__ = ["main"]


def main(argv=None):
    """Parse the command line and run `~astrokin.survey.train_distributed`.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success.

    Examples
    --------
    >>> from astrokin.survey.train import main
    >>> main(["--help"])  # doctest: +SKIP
    """
    import torch

    parser = argparse.ArgumentParser(
        prog="python -m astrokin.survey.train",
        description="Train an astrokin network on shards, in one process or under torchrun.")
    parser.add_argument("--shards", required=True, help="shard directory")
    parser.add_argument("--out", required=True, help="where to save the trained network (.pt)")
    parser.add_argument("--make-shards", metavar="CATALOGUE",
                        help="first write --shards from this catalogue of FITS files")
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="galaxies per step over all processes together")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--lr-decay", type=float, default=0.975)
    parser.add_argument("--lr-decay-every", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", help="start from this saved network ('bundled': astrokin's)")
    parser.add_argument("--checkpoint", help="checkpoint file (default: OUT.checkpoint)")
    parser.add_argument("--checkpoint-every", type=int, default=1, help="epochs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.make_shards and world > 1:
        parser.error("--make-shards runs in one process: make the shards first, then launch "
                     "torchrun.")
    if args.threads:
        torch.set_num_threads(args.threads)
    from astrokin.survey.distributed import train_distributed

    if args.make_shards:
        from astrokin.survey.shards import catalogue_to_shards

        catalogue_to_shards(args.make_shards, args.shards, shard_size=args.shard_size)
    fitter = train_distributed(
        args.shards, args.out, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_decay=args.lr_decay,
        lr_decay_every=args.lr_decay_every, dropout=args.dropout, seed=args.seed,
        init=args.init, checkpoint=args.checkpoint or args.out + ".checkpoint",
        checkpoint_every=args.checkpoint_every, device=args.device, overwrite=args.overwrite,
        log=print)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"saved": args.out, "epochs": len(fitter.loss_history),
                          "final_loss": fitter.loss_history[-1] if fitter.loss_history
                          else None}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
