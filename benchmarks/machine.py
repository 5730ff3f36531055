"""The machine a benchmark ran on, for the header of its table."""

import platform

__all__ = ["cpu_name"]


def cpu_name():
    """The CPU model (from ``/proc/cpuinfo`` on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
