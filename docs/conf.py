# Licensed under a 3-clause BSD style license - see LICENSE
"""Sphinx configuration for the astrokin documentation."""

import os
from importlib import metadata

try:
    from sphinx_astropy.conf.v2 import *  # noqa: F403
except ImportError:  # older sphinx-astropy without the v2 configuration
    from sphinx_astropy.conf.v1 import *  # noqa: F403

# -- Project information -----------------------------------------------------

project = "astrokin"
author = "The astrokin developers"
copyright = f"2026, {author}"

try:
    release = metadata.version("astrokin")
except metadata.PackageNotFoundError:  # building from a tree that is not installed
    release = "unknown"
# The short X.Y version.
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------

# ``extensions`` comes from sphinx-astropy (numpydoc, sphinx_automodapi, doctestplus,
# intersphinx, matplotlib's plot directive, ...).

exclude_patterns.append("_templates")  # noqa: F405

rst_epilog = """
.. _Astropy: https://www.astropy.org
.. _PyTorch: https://pytorch.org
"""

# Broken cross-references are reported only when asked for (``-n``); the default -W build
# stays clean while referenced third-party objects live in other projects' docs.
nitpicky = False

# automodapi: the inheritance diagrams need graphviz's ``dot``, which the CI machines do
# not have (and a missing ``dot`` is a warning, i.e. an error under -W).
automodapi_inheritance_diagram = False
automodsumm_inherited_members = False

# -- Intersphinx -------------------------------------------------------------

# Fetching inventories needs network access, which CI and the development machines do not
# have; an unreachable inventory is a warning and so fails ``-W`` builds. Intersphinx is
# therefore off unless ASTROKIN_DOCS_INTERSPHINX=1 (e.g. on a documentation host).
if os.environ.get("ASTROKIN_DOCS_INTERSPHINX", "0") == "1":
    intersphinx_mapping.update(  # noqa: F405
        {
            "astropy": ("https://docs.astropy.org/en/stable/", None),
            "numpy": ("https://numpy.org/doc/stable/", None),
            "scipy": ("https://docs.scipy.org/doc/scipy/", None),
            "torch": ("https://docs.pytorch.org/docs/stable/", None),
            "radio_beam": ("https://radio-beam.readthedocs.io/en/latest/", None),
            "specutils": ("https://specutils.readthedocs.io/en/stable/", None),
            "regions": ("https://astropy-regions.readthedocs.io/en/stable/", None),
        }
    )
else:
    intersphinx_mapping = {}

# -- Options for HTML output -------------------------------------------------

html_title = f"{project} v{release}"
htmlhelp_basename = project + "doc"

# -- Options for LaTeX / man output ------------------------------------------

latex_documents = [("index", project + ".tex", project + " Documentation", author, "manual")]
man_pages = [("index", project.lower(), project + " Documentation", [author], 1)]
