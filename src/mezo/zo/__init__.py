"""Zeroth-order optimisation in plain PyTorch (no transformers): the MeZO step, its noise backends,
the optimizers of the MeZO family and the SPSA gradient estimator."""
from mezo.zo.backend import FastNoise
from mezo.zo.estimator import SPSAGradient
from mezo.zo.losses import accumulated_loss
from mezo.zo.methods import (FZOO, LOZO, LOZOM, OPTIMIZERS, HiZOO, MeZO, ZeroOrderSGD, ZOAdam, ZOSGDConservative,
                             ZOSGDMomentum, ZOSGDSign, build)
from mezo.zo.optim import ZeroOrderOptimizer
from mezo.zo.step import Noise, PlainNoise, ZOStep, mezo_step

__all__ = ["FastNoise", "SPSAGradient", "accumulated_loss", "FZOO", "LOZO", "LOZOM", "OPTIMIZERS", "HiZOO", "MeZO",
           "ZeroOrderSGD", "ZOAdam", "ZOSGDConservative", "ZOSGDMomentum", "ZOSGDSign", "build",
           "ZeroOrderOptimizer", "Noise", "PlainNoise", "ZOStep", "mezo_step"]
