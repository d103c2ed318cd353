"""`python -m attnlib.run`: the runner's command line (attnlib.runner.run), under the name `make reproduce` calls."""
import os
import signal
import sys


STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, the terminal closed


def _interrupted_while_starting(signum, frame):
    print("interrupted before any notebook started: run the same command again", file=sys.stderr, flush=True)
    os._exit(128 + signum)  # nothing has started: no traceback from the half-finished imports


if __name__ == "__main__":  # a stop while torch and papermill load (seconds): one line, not an import traceback
    inherited = {stop: signal.getsignal(stop) for stop in STOPS}
    for stop, handler in inherited.items():
        if handler is not signal.SIG_IGN:  # ignored stays ignored: nohup's SIGHUP, a background job's SIGINT
            signal.signal(stop, _interrupted_while_starting)
    from attnlib.runner.run import command_line

    for stop, handler in inherited.items():  # loaded: main() turns each stop that is not ignored into one line
        signal.signal(stop, handler if handler is not None else signal.SIG_DFL)
    command_line()
