"""Runnable examples shipped with astrokin (``python -m astrokin.examples.<name>``)."""
