"""Which torch device a ``device=`` option means, checked to exist on this machine."""

import os

__all__ = ["DEVICE_TYPES", "resolve_device"]

#: Devices astrokin knows how to check; anything else torch accepts is refused
#: with a clear message rather than failing deep inside torch.
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def resolve_device(device, *, local_rank=False):
    """The `torch.device` for a ``device=`` option.

    Parameters
    ----------
    device : str, int, `torch.device` or None
        ``'auto'`` (or None): CUDA when available, else the CPU; otherwise
        anything `torch.device` accepts, of a type in `DEVICE_TYPES`.
    local_rank : bool, optional
        Under ``torchrun``: a CUDA device without an index (``'auto'`` or
        ``'cuda'``) is this process's GPU, ``cuda:LOCAL_RANK``.

    Returns
    -------
    device : `torch.device`

    Raises
    ------
    TypeError
        If ``device`` is not a string, an integer or a `torch.device`.
    ValueError
        If torch does not know it, astrokin does not support its type, or
        it does not exist on this machine (e.g. ``'cuda'`` without CUDA).

    Examples
    --------
    >>> from astrokin.fitting.devices import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError(
            "device must be 'auto', a device string such as 'cpu', 'cuda' or 'cuda:1', or a "
            f"torch.device; got {type(device).__name__} {device!r}."
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(
            f"Unknown device {device!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or "
            "'xpu'."
        ) from err
    if dev.type not in DEVICE_TYPES:
        raise ValueError(
            f"Unsupported device {device!r} (type {dev.type!r}): expected one of "
            f"{('auto',) + DEVICE_TYPES}."
        )
    if dev.type == "cpu":
        return dev
    if local_rank and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        available = backend is not None and backend.is_available()
        count = 1 if available else 0
    else:
        backend = getattr(torch, dev.type, None)
        available = backend is not None and backend.is_available()
        count = backend.device_count() if available else 0
    if not available:
        raise ValueError(
            f"device={device!r} was asked for, but this torch ({torch.__version__}) has no "
            f"usable {dev.type.upper()} device (torch.{dev.type}.is_available() is False). "
            "Use device='cpu', or 'auto' to take an accelerator only when there is one."
        )
    if dev.index is not None and dev.index >= count:
        raise ValueError(
            f"device={device!r} was asked for, but only {count} {dev.type.upper()} device(s) "
            f"are visible (indices 0 to {count - 1})."
        )
    return dev
