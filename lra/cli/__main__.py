"""`python -m lra.cli ...` is the `lra` command."""

import sys

from lra.cli import main

sys.exit(main())
