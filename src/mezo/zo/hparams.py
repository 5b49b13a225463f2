"""A method's hyper-parameter, declared once next to the method (``ZeroOrderOptimizer.hyper``).

From the declaration come the optimizer's param-group default, the ``run.py`` flag (its name,
default and --help text, ``mezo.config.arguments``), the range check with its wording
(``mezo.config.ranges``) and the grid catalogue's flags (``mezo.experiments.catalog``).
"""
import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class HParam:
    default: object
    flag: str                      # the run.py flag (without --)
    help: str
    lo: Optional[float] = None     # numeric range [lo, hi] (hi_open: [lo, hi))
    hi: Optional[float] = None
    hi_open: bool = False
    integer: bool = False
    choices: tuple = ()
    shared: bool = False           # the flag is a stock TrainingArguments one (--adam_beta1 ...)

    @property
    def wording(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        what = "an integer" if self.integer else "a number"
        if self.hi is None:
            return f"{what} >= {self.lo:g}" if self.lo is not None else what
        return f"{what} in [{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"

    def ok(self, v) -> bool:
        if self.choices:
            return v in self.choices
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if self.lo is not None and v < self.lo:
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def check(self, name: str, v) -> None:
        """ValueError naming the hyper-parameter when ``v`` is outside its range."""
        if not self.ok(v):
            raise ValueError(f"{name} (--{self.flag}) {v!r}: expected {self.wording}")
