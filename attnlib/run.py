"""`python -m attnlib.run`: the runner's command line (attnlib.runner.run), under the name `make reproduce` calls."""
import os
import signal
import sys


def _interrupted_while_starting(signum, frame):
    print("interrupted before any notebook started: run the same command again", file=sys.stderr, flush=True)
    os._exit(130)  # nothing has started: no traceback from the half-finished imports


if __name__ == "__main__":  # Ctrl-C while torch and papermill load (seconds): one line, not an import traceback
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    from attnlib.runner.run import command_line

    signal.signal(signal.SIGINT, signal.default_int_handler)  # loaded: main() turns Ctrl-C into one line
    command_line()
