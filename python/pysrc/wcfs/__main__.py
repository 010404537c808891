"""``python -m wcfs ...``: the ``wcfs`` command (serve, status, stop, ...)."""

import sys

from ._wcfs import main


def _run() -> int:
    return main(["wcfs"] + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_run())
