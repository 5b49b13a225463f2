"""One exception type for bad user input.

run.py and the tools catch it, print its one-line message (which names the flag or the
file:line at fault) and exit with code 2, before anything is written to `log`.
"""


class UsageError(ValueError):
    pass
