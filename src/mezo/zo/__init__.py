"""Zeroth-order optimisation in pure PyTorch: the SPSA step, its noise, the optimizers."""
