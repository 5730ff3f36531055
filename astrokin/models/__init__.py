"""Astropy models of rotating gas discs whose parameters carry units."""

from .core import KinematicDiskModel, disc_coordinates
from .disks import ExponentialArctanDisk, GaussianRingDisk
from .rings import TiltedRingDisk

__all__ = ["ExponentialArctanDisk", "GaussianRingDisk", "KinematicDiskModel", "TiltedRingDisk",
           "disc_coordinates"]
