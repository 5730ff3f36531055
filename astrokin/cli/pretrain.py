"""``astrokin pretrain``: train a network on synthetic galaxies drawn like a survey's."""

import argparse
import sys

__all__ = ["add_parser", "run"]

_HELP = "train a network on synthetic galaxies of known parameters (e.g. a survey's set-up)"
_DESCRIPTION = """\
Train a network for blind fits on synthetic galaxies whose parameters are
known (astrokin.fitting.pretraining), then calibrate its error bars on
held-out ones. This is how the bundled network was made; with --init
pretrained and a recipe describing your survey's maps (beam in pixels, noise,
map size, known or narrowed parameters) it specialises the bundled network
to them, which makes blind fits of those maps more accurate (on the paper's
set-up: 10 minutes on 2 CPU cores, errors divided by two to three).

A recipe is a JSON file of overrides of DEFAULT_RECIPE, or KEY=VALUE pairs
(values as JSON). Useful keys: supervised_steps, supervised_lr, shapes,
beam_major_px, beam_axis_ratio, noise_fraction, snr_range, mask_snr, priors
(parameter -> value or [low, high], canonical units: deg, km/s, arcsec of the
1-arcsec training pixels) and seed.
"""
_EPILOG = """\
examples:
  astrokin pretrain -o survey.pt --init pretrained --set 'beam_major_px=[3, 3]' \\
      'beam_axis_ratio=[1, 1]' supervised_steps=5000 supervised_lr=2e-4
  astrokin pretrain -o paper_setup.pt --recipe benchmarks/recipes/paper_setup.json
  astrokin pretrain -o rings.pt --rings
  astrokin fit 'survey/*_mom0.fits' --network survey.pt -o survey.ecsv
"""


def add_parser(sub):
    """Add the ``pretrain`` command to the sub-command parsers."""
    p = sub.add_parser("pretrain", help=_HELP, description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="where to save the network (e.g. survey.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--recipe", metavar="JSON", help="JSON file of recipe overrides")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe overrides after the file's, values as JSON")
    p.add_argument("--rings", action="store_true",
                   help="the recipe of the bundled ring network (RING_RECIPE: a 10-ring "
                        "TiltedRingDisk on the realistic prior) under the overrides")
    p.add_argument("--init", metavar="NETWORK",
                   help="start from this saved network, or 'pretrained' for the bundled one "
                        "(default: the recipe's, else random weights)")
    p.add_argument("--calibrate-only", metavar="NETWORK",
                   help="do not train: recalibrate this saved network and save it to --output")
    p.add_argument("--device", default="auto", help="'cpu', 'cuda', ... (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.set_defaults(run=run)
    return p


def run(args):
    """Run ``astrokin pretrain``; returns the exit status."""
    import torch

    from astrokin.fitting import pretraining

    recipe = pretraining.read_recipe(args.recipe, args.set,
                                     base=pretraining.RING_RECIPE if args.rings else None)
    if args.rings:
        recipe = {**pretraining.RING_RECIPE, **recipe}
    if args.init:
        recipe["init"] = args.init
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(line):
        if not args.quiet:
            print(line, file=sys.stdout, flush=True)

    pretraining.run(recipe, args.output, device=args.device, progress=not args.quiet,
                    calibrate_only=args.calibrate_only, overwrite=args.overwrite, log=log)
    return 0
