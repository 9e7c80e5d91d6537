"""``python -m hubkeeper``: the same as the ``hubkeeper`` command."""

import sys

from hubkeeper.cli import main

sys.exit(main())
