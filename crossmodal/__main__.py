"""``python -m crossmodal`` (also what ``torchrun -m crossmodal`` and the Slicer modules run)."""

import sys

from crossmodal.cli import main

sys.exit(main())
