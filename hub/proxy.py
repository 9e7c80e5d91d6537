"""Run an instance's configurable-http-proxy in this process (for a service manager).

``python -m hubkeeper.hub.proxy NAME`` with ``HUBKEEPER_CONFIG`` set replaces itself with the
proxy, its arguments and token taken from the config (``settings.proxy_command``), so that
``jupyterhub-proxy@.service`` needs no copy of the ports.
"""

from __future__ import annotations

import os
import sys

from hubkeeper.hub.settings import proxy_command
from hubkeeper.loader import load


def main(argv: list[str] | None = None) -> None:
    (name,) = argv if argv is not None else sys.argv[1:]
    args, env = proxy_command(load(os.environ["HUBKEEPER_CONFIG"]), name)
    os.execvpe(args[0], args, {**os.environ, **env})


if __name__ == "__main__":
    main()
