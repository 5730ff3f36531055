"""``python -m astrokin.cli``: the same as the ``astrokin`` command."""

import sys

from astrokin.cli import main

__all__ = []

if __name__ == "__main__":
    sys.exit(main())
