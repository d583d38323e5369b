"""``python -m duroxy``: the same command line as the ``duroxy`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
