"""``python -m ssvae_core.cli``: the ``ssvae`` command."""

import sys

from ssvae_core.cli import main

sys.exit(main())
