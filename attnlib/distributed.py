"""`torchrun ... -m attnlib.distributed NOTEBOOK`: one run over several processes (attnlib.experiments.distributed)."""
import sys

from attnlib.experiments.distributed import main

if __name__ == "__main__":
    sys.exit(main())
