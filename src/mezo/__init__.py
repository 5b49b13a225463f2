"""MeZO (Malladi et al., NeurIPS 2023) for prompt-based fine-tuning of masked language models.

The step itself is `mezo.zo.mezo_step` (read src/mezo/zo.py first); `ZeroOrderSGD` wraps it for
your own training loop. run.py builds a whole run from the other modules.
"""
from mezo.zo.step import ZeroOrderSGD, ZOStep, mezo_step

__all__ = ["ZeroOrderSGD", "ZOStep", "mezo_step"]
