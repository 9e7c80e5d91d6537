"""hubkeeper: monitoring and reliability suite for JupyterHub."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hubkeeper")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
