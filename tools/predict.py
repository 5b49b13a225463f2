"""Classify new text with a model saved by `run.py --save_model`.

Entry point only: the code is `mezo.cli.predict` (`python tools/predict.py --help`).
"""
import sys

from mezo.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
