"""Build the demo task's original folder from the UCI Sentiment Labelled Sentences.

Entry point only: the code is `mezo.data.uci_sentiment` (`python tools/make_uci_sentiment.py --help`).
"""
import sys

from mezo.data.uci_sentiment import main

if __name__ == "__main__":
    sys.exit(main())
