"""``astrokin demo``: fit the bundled example galaxy and write its table and figure."""

import argparse

__all__ = ["add_parser", "run"]

_HELP = "fit the bundled example galaxy; writes a table and a diagnostic figure"
_DESCRIPTION = """\
Fit the example galaxy bundled with astrokin (a KinMS simulation of a CO disc,
with noise and a clipped mask, as FITS moment maps with WCS and beam) blind
with the bundled network, print the fitted parameters beside the true ones,
and write astrokin_example_fit.ecsv and the diagnostic figure
astrokin_example_fit.png.
"""


def add_parser(sub):
    """Add the ``demo`` command to the sub-command parsers."""
    p = sub.add_parser("demo", help=_HELP, description=_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output-dir", default=".", metavar="DIR",
                   help="directory for the table and figure (default: here)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--corner", action="store_true",
                   help="also a corner plot of the MC samples (astrokin_example_corner.png)")
    p.add_argument("--mc-samples", type=int, default=1000,
                   help="Monte Carlo dropout samples (default: 1000)")
    p.add_argument("--device", default="auto", help="'cpu', 'cuda', ... (default: auto)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.set_defaults(run=run)
    return p


def run(args):
    """Run ``astrokin demo``; returns the exit status."""
    from astrokin.examples import fit_example

    fit_example.main(args.output_dir, overwrite=args.overwrite, mc_samples=args.mc_samples,
                     device=args.device, corner=args.corner)
    return 0
