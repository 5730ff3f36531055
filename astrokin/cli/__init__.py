"""The ``astrokin`` command: fit, train and demo from the shell.

``astrokin fit MOM0 MOM1`` fits moment maps (or a cube, or many galaxies)
and writes a table; ``astrokin train`` trains or fine-tunes a network on a
set of maps; ``astrokin pretrain`` trains one on synthetic galaxies of known
parameters (e.g. specialises the bundled one to a survey's set-up);
``astrokin demo`` fits the bundled example galaxy. Run
``astrokin COMMAND --help`` for the options. `main` runs the command line
from Python (``main(['fit', 'a_mom0.fits', 'a_mom1.fits'])``).
"""

import argparse
import sys
import warnings

from astropy import units as u

__all__ = ["main"]

_DESCRIPTION = """\
Fit the kinematics of gas discs in galaxies from moment maps with the
self-supervised, physics-aware neural network of Dawson et al. (2021).

commands:
  fit       fit moment maps (mom0 + mom1 FITS files, or data cubes) and write a table
  train     train (or fine-tune) a network on a set of maps, to fit blind later
  pretrain  train a network on synthetic galaxies drawn like a survey's maps
  demo      fit the bundled example galaxy and write its table and diagnostic figure

Run 'astrokin COMMAND --help' for the options of each command.
"""


class CommandLineError(Exception):
    """A user error the command line reports in one line (bad option, missing file...)."""


def build_parser():
    """The argument parser of the ``astrokin`` command."""
    from . import demo, fit, pretrain, train

    parser = argparse.ArgumentParser(
        prog="astrokin", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from astrokin import __version__

    parser.add_argument("--version", action="version", version=f"astrokin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (fit, train, pretrain, demo):
        module.add_parser(sub)
    return parser


def main(argv=None):
    """Run the ``astrokin`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 1 on an error (reported in one line on stderr), 2 on
        bad usage, 130 when interrupted.

    Examples
    --------
    >>> from astrokin.cli import main
    >>> main(["fit", "no_such_mom0.fits", "no_such_mom1.fits"])
    1
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"astrokin {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = show
            return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"astrokin {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CommandLineError, ValueError, TypeError, KeyError, OSError, ImportError,
            RuntimeError, u.UnitsError) as err:
        if debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, KeyError):
            message = f"missing {message}"
        print(f"astrokin {args.command}: error: {message}", file=sys.stderr)
        return 1
