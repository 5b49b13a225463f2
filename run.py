"""Prompt-based fine-tuning of a masked LM with Adam or MeZO: one run, one `log` record. See README.

Entry point only: the code is `mezo.cli.run` (`python run.py --help`).
"""
import sys

from mezo.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
