"""`python -m snnexp ...` is the same as the `snnexp` command."""

import sys

from snnexp.cli import main

if __name__ == "__main__":
    sys.exit(main())
