"""How a flag is declared: its --help text and the metadata the project reads back from it.

``RUN_DEFINING``: the flag defines the run, so a checkpoint written with another value is not
resumed (``mezo.training.checkpoint``). ``REFUSED``: a flag of the original that this project does
not implement; it parses so that old command lines keep working, and a non-default value is
refused with its reason (``mezo.config.legacy.check_refused``). ``ArgumentParser`` keeps both away
from argparse.
"""
from dataclasses import field

RUN_DEFINING = "run_defining"
REFUSED = "refused"


def flag(default, help, run=False, **kw):
    """A flag with its help; ``run=True`` marks it run-defining."""
    return field(default=default, metadata={"help": help, **({RUN_DEFINING: True} if run else {}), **kw})


def refused(default, help, why):
    """A flag of the original kept only so that old command lines parse; setting it is an error (why)."""
    return field(default=default, metadata={"help": f"[unsupported] {help}", REFUSED: why})
