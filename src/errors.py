"""One exception type for bad user input.

run.py and the tools catch it, print its one-line message (which names the flag or the
file:line at fault) and exit with code 2, before anything is written to `log`.
"""


class UsageError(ValueError):
    pass


def one_line(message) -> str:
    """A message as exactly one line: control characters from user input (a flag value with a newline,
    a carriage return) are shown escaped, as repr would."""
    text = str(message)
    return "".join(ch if ch.isprintable() or ch == "\t" else repr(ch)[1:-1] for ch in text)
