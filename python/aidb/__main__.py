"""python -m aidb worker ... (the same as the `aidb` console script)."""

import sys

from .worker.cli import main

sys.exit(main())
