"""Draw the k-shot train/dev splits and the test split of every task.

Entry point only: the code is `mezo.data.kshot` (`python tools/generate_k_shot_data.py --help`).
"""
import sys

from mezo.data.kshot import main

if __name__ == "__main__":
    sys.exit(main())
