"""MeZO (Malladi et al., NeurIPS 2023) for prompt-based fine-tuning of masked language models.

The step is ``mezo.zo.mezo_step`` (read ``mezo.zo.step`` first); every zeroth-order method is a
``torch.optim.Optimizer`` in ``mezo.zo`` (``MeZO``, alias ``ZeroOrderSGD``, ...) for your own
training loop. ``run.py`` (``mezo.cli.run``) builds a whole run from the other sub-packages.
"""
from mezo.zo import OPTIMIZERS, MeZO, SPSAGradient, ZeroOrderOptimizer, ZeroOrderSGD, ZOStep, mezo_step

__all__ = ["OPTIMIZERS", "MeZO", "SPSAGradient", "ZeroOrderOptimizer", "ZeroOrderSGD", "ZOStep", "mezo_step"]
