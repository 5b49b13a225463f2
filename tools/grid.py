"""One command per table cell: the paper's hyper-parameter grid x five seeds, run restartably.

Entry point only: the code is `mezo.experiments.grid` (`python tools/grid.py --help`).
"""
import sys

from mezo.experiments.grid import main

if __name__ == "__main__":
    sys.exit(main())
