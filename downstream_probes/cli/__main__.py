"""``python -m downstream_probes.cli``: the same as the ``mrsuperb`` console script."""

import sys

from downstream_probes.cli import main

sys.exit(main())
