"""hubkeeper: monitoring and reliability suite for JupyterHub."""

from typing import Any


def __getattr__(name: str) -> Any:
    """``__version__``, looked up in the installed metadata on first use only: the daemons
    do not ask, and the look-up scans every installed distribution."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("hubkeeper")
    except PackageNotFoundError:  # running from a source tree that is not installed
        found = "0.0.0"
    globals()["__version__"] = found
    return found
