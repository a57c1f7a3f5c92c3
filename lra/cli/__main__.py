"""`python -m lra.cli ...` is the `lra` command."""

import sys

from lra.cli import entry

sys.exit(entry())
