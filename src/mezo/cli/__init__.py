"""Command-line programs; run.py and tools/ are thin entry points into these."""
