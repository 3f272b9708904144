"""``python -m torchformers``: the same as the ``torchformers`` command."""

import sys

from .cli import main

sys.exit(main())
