"""Mean (std) test metric over seeds, each seed's best grid point chosen on dev: the original's report.

    python tools/gather_result.py --condition "{'tag': 'k16-roberta-large-mezo-ft', 'task_name': 'sst-2'}"

The algorithm lives in the package (mezo.experiments.gather), shared with tools/report.py.
"""
import sys

from mezo.experiments.gather import main

if __name__ == "__main__":
    sys.exit(main())
