"""`python -m attnlib.explore IMAGE --run RUN_ID`: the explorer page for your own image (attnlib.explorer.cli)."""
import sys

from attnlib.explorer.cli import main

if __name__ == "__main__":
    sys.exit(main())
