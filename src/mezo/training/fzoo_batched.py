"""--fzoo_batched: FZOO's N perturbed losses of a step in one batched forward, for the Trainer.

What "batched" means for FZOO (Dang et al. 2025, arXiv 2506.09034; code DKmiyan/FZOO): the N
one-sided losses l_i = L(theta + eps u_i) of a step are computed in one pass over N copies of the
batch instead of N passes. The public code does it for OPT only (``ParallelOPTForCausalLM.py``):
the batch is repeated N times and every layer adds its branch's Rademacher term, x W^T + eps x u_i^T;
its training loop (``trainer.py::zo_step``) still evaluates the N losses one forward at a time.

Here the same N losses come from ``torch.func.vmap`` over N stacked copies of the trainable
parameters, theta + eps u_i with u_i drawn from the step's seeds exactly as the sequential loop
draws them (``mezo.zo.losses.VmapLosses``), through ``torch.func.functional_call`` of the unchanged
model and the Trainer's own loss: any model vmap can batch, the same update up to float rounding.

Guard: ``functional_call`` swaps parameters where modules look them up; code that keeps its own
reference to a parameter (a hook closing over it) would silently read the unperturbed tensor. So
the first batched evaluation first runs one plain functional forward watching every torch call
(``TorchFunctionMode``); if an original trainable parameter shows up, the run falls back (warning).

Cost: N copies of the trainable parameters (all at once) and the activations of N times the batch.
Rule (``reason_not_batched``): batched only while the N copies take at most half of the device's
free memory when training starts (the other half is left for the N-fold activations); the choice
changes no number, only speed and memory, so it may depend on the device. Otherwise, or when vmap
cannot batch an op of the model (found at the first step), or when a batched forward runs out of
memory, the run logs a warning and evaluates the N losses one forward at a time: the same numbers,
only slower. These are known only once the model is built, hence a warning, not a UsageError.
"""
import logging
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from mezo.training import distributed
from mezo.zo.losses import VmapLosses

logger = logging.getLogger(__name__)


def reason_not_batched(n: int, trainable_bytes: int, free_bytes: int) -> Optional[str]:
    """Why N stacked copies of the trainable set are refused (None: they are allowed)."""
    if n * trainable_bytes > free_bytes // 2:
        return (f"{n} copies of the trainable parameters ({n * trainable_bytes / 2**20:,.1f} MiB) exceed half "
                f"the free memory ({free_bytes / 2**20:,.1f} MiB)")
    return None


def free_memory(device: torch.device) -> int:
    """Free bytes where the parameters live: the accelerator's, else the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil   # an accelerate dependency
    return psutil.virtual_memory().available


class _Bound(nn.Module):
    """``model_loss(model)`` as a module, so that ``functional_call`` swaps the model's parameters
    (tied ones included) for the whole loss computation, the Trainer's own compute_loss."""

    def __init__(self, model: nn.Module, model_loss: Callable[[nn.Module], torch.Tensor]):
        super().__init__()
        self.model = model
        self.model_loss = model_loss
        self.watch: Optional[TorchFunctionMode] = None   # entered after the swap (the swap itself reads theta)

    def forward(self):
        if self.watch is None:
            return self.model_loss(self.model)
        with self.watch:
            return self.model_loss(self.model)


class _Watch(TorchFunctionMode):
    """Records which of the given tensors any torch function receives."""

    def __init__(self, tensors: Sequence[torch.Tensor]):
        super().__init__()
        self.ids = {id(t) for t in tensors}
        self.seen = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        stack = [args, kwargs]
        while stack:
            a = stack.pop()
            if isinstance(a, (list, tuple)):
                stack.extend(a)
            elif isinstance(a, dict):
                stack.extend(a.values())
            elif isinstance(a, torch.Tensor) and id(a) in self.ids:
                self.seen.add(id(a))
        return func(*args, **kwargs)


def side_references(bound: _Bound, names: Sequence[str], params: Sequence[torch.Tensor]) -> List[str]:
    """Names of the parameters the bound loss still reads after functional_call swapped every one for a
    copy: the model reaches them outside its module attributes (e.g. a hook's closure)."""
    bound.watch = watch = _Watch(params)
    try:
        with torch.no_grad():
            torch.func.functional_call(bound, {"model." + n: p.detach().clone() for n, p in zip(names, params)}, ())
    finally:
        bound.watch = None
    return [n for n, p in zip(names, params) if id(p) in watch.seen]


class Batcher:
    """One per run: the trainable names, the forward counter, and whether vmap works on this model."""

    def __init__(self, model: nn.Module, names: Sequence[str], on_forwards: Callable[[int], None] = lambda k: None):
        self.model = model
        self.names = list(names)
        self.on_forwards = on_forwards
        self.disabled: Optional[str] = None   # why the run fell back to the sequential loop
        self.worked = False                   # a batched evaluation has succeeded

    def wrap(self, loss_fn: Callable[[], torch.Tensor], model_loss: Callable[[nn.Module], torch.Tensor],
             size: int) -> "BatchedLoss":
        """``loss_fn`` (one forward at the current parameters) of a batch of ``size`` rows, which can
        also give FZOO's N perturbed losses; ``model_loss(model)`` is that forward's loss as a function
        of the model (it is called with the parameters swapped)."""
        return BatchedLoss(self, loss_fn, model_loss, size)

    def disable(self, reason: str) -> None:
        self.disabled = reason
        logger.warning("--fzoo_batched: cannot batch this model's forward (%s); computing FZOO's perturbed "
                       "losses one forward at a time from here on (same numbers, slower)", reason)


class BatchedLoss:
    """A loss_fn with ``perturbed_losses`` (read by mezo.zo.methods.FZOO and mezo.zo.losses.accumulated_loss)."""

    def __init__(self, batcher: Batcher, loss_fn, model_loss, size: int):
        self.batcher, self.loss_fn, self.size = batcher, loss_fn, int(size)
        self.bound = bound = _Bound(batcher.model, model_loss)
        self.vmap = VmapLosses(batcher.names, lambda d: torch.func.functional_call(
            bound, {"model." + k: v for k, v in d.items()}, ()))

    def __call__(self) -> torch.Tensor:
        return self.loss_fn()

    def perturbed_losses(self, noise, params, seeds, eps) -> Optional[List[float]]:
        """The N losses at theta + eps u_k, or None when the batched forward cannot run (then the
        caller loops). A failure on the first call (an op vmap cannot batch) or out of memory at any
        call switches the run to the loop; any other failure after a success is a bug and is raised."""
        b = self.batcher
        if b.disabled:
            return None
        try:
            if not b.worked:
                hidden = side_references(self.bound, b.names, params)
                if hidden:
                    b.disable(f"it reads {', '.join(hidden)} outside its module attributes, where "
                              "functional_call cannot swap them")
                    return None
            losses = self.vmap.losses(noise, params, seeds, eps)
        except (RuntimeError, NotImplementedError) as err:
            if b.worked and not isinstance(err, torch.OutOfMemoryError):
                raise
            b.disable(f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
            return None
        b.worked = True
        b.on_forwards(len(seeds))
        # data-parallel runs: each loss is the global-batch mean, as zo_forward's
        return [float(distributed.global_mean(losses[k], self.size)) for k in range(len(seeds))]


def for_run(model: nn.Module, named: Sequence[Tuple[str, torch.Tensor]], n: int,
            on_forwards: Callable[[int], None]) -> Optional[Batcher]:
    """The run's Batcher, or None (with a logged warning) when the memory rule refuses batching."""
    params = [p for _, p in named]
    device = params[0].device
    reason = reason_not_batched(n, sum(p.numel() * p.element_size() for p in params), free_memory(device))
    if reason:
        logger.warning("--fzoo_batched: %s on %s; computing FZOO's perturbed losses one forward at a time "
                       "(same numbers, slower)", reason, device)
        return None
    return Batcher(model, [name for name, _ in named], on_forwards)
