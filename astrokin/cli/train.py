"""``astrokin train``: train or fine-tune a network on a set of maps and save it."""

import argparse
import os
import sys
import time

from .options import add_common_options, add_map_options, make_fitter_model

__all__ = ["add_parser", "run"]

_HELP = "train (or fine-tune) a network on a set of maps and save it"
_DESCRIPTION = """\
Train the network of Dawson et al. (2021) on a set of moment maps, without
labels: it learns to reproduce the maps through the disc model, and can then
fit these or similar galaxies blind ('astrokin fit --network FILE'). With
--init the training starts from a saved network, or from the bundled one
('--init pretrained'): this fine-tunes it to your data (e.g. another
resolution, noise level or beam), which needs far fewer epochs than a fresh
network.

Inputs are given as for 'astrokin fit': MOM0 MOM1 pairs, cubes, patterns or
--catalogue. The network file holds only tensors and JSON metadata.
"""
_EPILOG = """\
examples:
  astrokin train 'survey/*_mom0.fits' -o my_network.pt --epochs 300
  astrokin train 'survey/*_mom0.fits' -o tuned.pt --init pretrained --epochs 30
  astrokin fit 'survey/*_mom0.fits' --network my_network.pt -o survey.ecsv
"""


def add_parser(sub):
    """Add the ``train`` command to the sub-command parsers."""
    p = sub.add_parser("train", help=_HELP, description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="FILE",
                   help="FITS files: MOM0 MOM1 pairs, data cubes, or quoted patterns")
    p.add_argument("--catalogue", "--catalog", metavar="TABLE",
                   help="table of galaxies with columns mom0 and mom1 (or cube)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="where to save the network (e.g. my_network.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--init", metavar="NETWORK",
                   help="start from this saved network, or 'pretrained' for the bundled one "
                        "(default: random weights)")
    p.add_argument("--epochs", type=int, default=300, help="training epochs (default: 300)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="Adam learning rate (default: 1e-3 from scratch, 1e-4 fine-tuning)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="galaxies per optimiser step (default: 64, as in the paper)")
    add_map_options(p)
    add_common_options(p)
    p.set_defaults(run=run)
    return p


def run(args):
    """Run ``astrokin train``; returns the exit status."""
    from astrokin.fitting import NeuralKinematicFitter

    from .inputs import collect_galaxies

    t0 = time.perf_counter()
    if args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    if os.path.lexists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} already exists; use --overwrite to replace it")
    galaxies = collect_galaxies(args.inputs, args.catalogue)
    common = {"seed": args.seed, "device": args.device, "progress": not args.quiet,
              "batch_size": args.batch_size}
    if args.init:
        if args.init == "pretrained":
            fitter = NeuralKinematicFitter.pretrained(**common)
        elif not os.path.exists(args.init):
            raise FileNotFoundError(f"no such network file: {args.init}")
        else:
            fitter = NeuralKinematicFitter.load(args.init, **common)
        fitter.warm_start = True
        fitter.learning_rate = 1e-4 if args.learning_rate is None else args.learning_rate
        model_class = fitter.layout.model_class
    else:
        lr = 1e-3 if args.learning_rate is None else args.learning_rate
        fitter = NeuralKinematicFitter(mode="solo", learning_rate=lr, **common)
        model_class = None
    model = make_fitter_model(args.model, args.fix, model_class, args.rings)
    maps = [g.load(rest_value=args.rest_value) for g in galaxies]
    mom0 = [m[0] for m in maps]
    mom1 = [m[1] for m in maps]
    fitter.train(model, mom0 if len(mom0) > 1 else mom0[0], mom1 if len(mom1) > 1 else mom1[0],
                 pixel_scale=args.pixel_scale, beam=args.beam, epochs=args.epochs)
    fitter.save(args.output, overwrite=args.overwrite)  # atomic: a temporary file, renamed
    if not args.quiet:
        loss = fitter.loss_history[-1] if fitter.loss_history else float("nan")
        print(f"trained on {len(galaxies)} galaxies for {args.epochs} epochs in "
              f"{time.perf_counter() - t0:.1f} s (final loss {loss:.4g})", file=sys.stdout)
        print(f"wrote {args.output}")
    return 0
