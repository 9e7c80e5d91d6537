# JupyterHub configuration for one hub instance, read from hubkeeper's configuration.
#   HUBKEEPER_CONFIG        path of hubkeeper.toml (its [jupyterhub] section)
#   HUBKEEPER_HUB_INSTANCE  which of [[jupyterhub.instances]] this process is
import os

from hubkeeper.hub.settings import apply
from hubkeeper.loader import load

apply(c, load(os.environ["HUBKEEPER_CONFIG"]), os.environ.get("HUBKEEPER_HUB_INSTANCE", "a"))
