"""`python -m lgvit ...` (also what `torchrun -m lgvit train ...` runs)."""

import sys

from .cli import main

sys.exit(main())
