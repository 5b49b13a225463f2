"""Our results next to the paper's: a Markdown table, a bar chart, per-run training curves.

Entry point only: the code is `mezo.experiments.report` (`python tools/report.py --help`).
"""
import sys

from mezo.experiments.report import main

if __name__ == "__main__":
    sys.exit(main())
