"""`python -m attnlib.params FILE...`: check parameter files (attnlib.experiments.params)."""
import sys

from attnlib.experiments.params import main

if __name__ == "__main__":
    sys.exit(main())
