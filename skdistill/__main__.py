"""``python -m skdistill``: the command line, see :mod:`skdistill.cli`."""

from skdistill.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
