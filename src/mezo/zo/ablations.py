"""MeZO ablations (docs/behaviour.md, "Ablations") as plain functions, plus the small state object the Trainer keeps.

What lives here:

* ``num_samples`` - the n-SPSA sample-count schedule (None/constant/linear).
* ``block_keys`` / ``assign_blocks`` / ``block_numels`` - the block partition of ``--zo_variant``:
  ``embed``, the MLM head (``lm_head`` for RoBERTa, ``cls.`` for BERT-style heads) and
  ``layer.<i>.`` for i < num_layers; a parameter belongs to the first key that is a substring of
  its name, anything else (pooler, classifier) to no block (constant 1, unscaled).
* ``param_norm_constants`` / ``grad_norm_constants`` / ``zo_grad_norm_constants`` - the block
  constants c_b, and ``ZOAblation.compute_consts`` applies ``--scale_norm_by_num_params``.
  A constant that is 0 or not finite is replaced by 1 (``safe_constant``): the reference divides
  by zero there.
* Two readings of the variant flags (README, Differences from the original code). By default the original's
  *effective* behaviour: with ``--efficient_zero_order`` the perturbation ignores c_b (plain z);
  the direct update always uses plain z; the trainer-optimizer path writes c_b z into ``.grad``
  (plain z with ``--change_grad_estimate``); ``--scale_norm_by_num_params`` turns a param_norm
  constant c into c / sqrt(c) and a back-propagated grad_norm constant into c / sqrt(#params),
  and leaves ZO-estimated constants alone. ``--zo_variant_corrected`` gives the variants as the
  paper describes them: perturb z / c_b and use c_b z (or z) on every path, and divide every kind
  of constant by sqrt(#params of the block).
* ``layer_wise_indices`` - ``--layer_wise_optim``: parameters whose name contains ``.<k>.`` with
  k = global_step mod num_layers (the reference's substring rule, docs/behaviour.md "Ablations").
* ``minus_accuracy`` - the ``--optimize_acc`` objective.
* ``ZOAblation`` - what the Trainer holds for the ablation paths: the trainer-optimizer step
  (SPSA pair(s) -> ``.grad``), the direct step with layer selection / block scaling, and the
  block-constant bookkeeping (mezo.training.zo_run schedules the constants at epoch starts and
  stops training after ``--max_zo_forward_steps``).

Every SPSA pair here is ``zo.mezo_step`` with per-parameter scales. z depends on the *list* of
parameters (mezo.zo.backend), so each pair perturbs, restores and accumulates with one list.
"""
import logging
import math
from typing import Callable, Dict, List, Optional, Sequence

import torch

from mezo.zo import step as zo

logger = logging.getLogger(__name__)

SAMPLE_SCHEDULERS = (None, "constant", "linear")
VARIANTS = (None, "grad_norm", "param_norm")
REST = "<rest>"   # pseudo-block of --zo_by_layer: trainable parameters outside every block


# ----------------------------------------------------------------------------- n-SPSA
def num_samples(scheduler: Optional[str], n: int, global_step: int, max_steps: int) -> int:
    """Samples (SPSA pairs) for this step.

    ``constant`` -> n; ``linear`` -> max(1, floor(global_step / max_steps * n)); None -> n as well
    (the reference used a single sample when no scheduler was named, silently ignoring
    ``--zero_order_sample``; here n alone means n samples).
    """
    if n < 1:
        raise ValueError(f"zero_order_sample must be >= 1, got {n}")
    if scheduler in (None, "constant"):
        return int(n)
    if scheduler == "linear":
        if max_steps <= 0:
            return 1
        return max(1, int(math.floor(global_step / max_steps * n)))
    raise ValueError(f"unknown zero_order_sample_scheduler {scheduler!r} (constant or linear)")


# ----------------------------------------------------------------------------- blocks
def head_key(names: Sequence[str]) -> Optional[str]:
    if any("lm_head" in n for n in names):
        return "lm_head"
    if any(n.startswith("cls.") for n in names):
        return "cls."
    return None


def block_keys(names: Sequence[str], num_layers: int) -> List[str]:
    """Block keys in the reference's order: embed, the MLM head, layer.0. ... layer.<L-1>."""
    keys = ["embed"]
    head = head_key(names)
    if head:
        keys.append(head)
    keys += [f"layer.{i}." for i in range(num_layers)]
    return keys


def assign_blocks(names: Sequence[str], keys: Sequence[str]) -> List[Optional[str]]:
    """The block of each name: the first key that is a substring of it, else None."""
    return [next((k for k in keys if k in n), None) for n in names]


def block_numels(params: Sequence[torch.Tensor], blocks: Sequence[Optional[str]]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for p, b in zip(params, blocks):
        if b is not None:
            out[b] = out.get(b, 0) + p.numel()
    return out


def safe_constant(c) -> float:
    """Block constants of 0 (or inf/nan) would divide by zero: use 1 (unscaled) instead."""
    c = float(c)
    return c if math.isfinite(c) and c > 0 else 1.0


@torch.no_grad()
def param_norm_constants(params, blocks) -> Dict[str, float]:
    """c_b = ||theta_b||_2."""
    sq: Dict[str, float] = {}
    for p, b in zip(params, blocks):
        if b is not None:
            sq[b] = sq.get(b, 0.0) + float(p.detach().double().pow(2).sum())
    return {b: math.sqrt(v) for b, v in sq.items()}


def grad_norm_constants(params, blocks, loss_with_grad: Callable[[], torch.Tensor]) -> Dict[str, float]:
    """c_b = ||dL/dtheta_b||_2 from one back-propagation of ``loss_with_grad()``.

    The gradient is taken with ``torch.autograd.grad``: ``.grad`` is left untouched.
    Parameters the loss does not depend on count as zero gradient.
    """
    params = list(params)
    with torch.enable_grad():
        loss = loss_with_grad()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    sq: Dict[str, float] = {}
    for g, b in zip(grads, blocks):
        if b is not None:
            sq[b] = sq.get(b, 0.0) + (0.0 if g is None else float(g.detach().double().pow(2).sum()))
    return {b: math.sqrt(v) for b, v in sq.items()}


def block_members(blocks: Sequence[Optional[str]], keys: Sequence[str],
                  indices: Optional[Sequence[int]] = None, rest: bool = False) -> List[tuple]:
    """[(key, [indices])] in key order (only non-empty blocks); ``rest`` appends the unblocked ones."""
    idx = range(len(blocks)) if indices is None else indices
    out = [(k, [i for i in idx if blocks[i] == k]) for k in keys]
    if rest:
        out.append((REST, [i for i in idx if blocks[i] is None]))
    return [(k, m) for k, m in out if m]


def zo_grad_norm_constants(params, blocks, keys, loss_fn: Callable[[], torch.Tensor], noise,
                           next_seed: Callable[[], int], eps: float) -> Dict[str, float]:
    """c_b = |projected gradient| of an SPSA pair that perturbs only block b (plain z; lr 0: theta kept)."""
    params = list(params)
    consts = {}
    for key, members in block_members(blocks, keys):
        sub = [params[i] for i in members]
        consts[key] = abs(zo.mezo_step(sub, loss_fn, noise, next_seed(), eps=eps).grad)
    return consts


# ----------------------------------------------------------------------------- selection, objective
def layer_wise_indices(names: Sequence[str], global_step: int, num_layers: int) -> List[int]:
    """--layer_wise_optim: parameters of layer k = global_step mod num_layers (``.<k>.`` in the name)."""
    k = f".{global_step % num_layers}."
    return [i for i, n in enumerate(names) if k in n]


def minus_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """--optimize_acc objective: minus the batch accuracy of the argmax prediction."""
    return -(logits.argmax(-1) == labels.to(logits.device)).float().mean()


# ----------------------------------------------------------------------------- trainer state
def needs_state(args) -> bool:
    """Whether the direct path needs a ZOAblation (layer selection or block scaling)."""
    return bool(args.zo_variant or args.layer_wise_optim or args.zo_by_layer)


class ZOAblation:
    """Per-run state of the ablation paths: the parameter list, blocks, block constants."""

    def __init__(self, named, num_layers: int, args, noise):
        self.noise = noise
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.args = args
        self.num_layers = max(1, int(num_layers or 1))
        self.keys = block_keys(self.names, self.num_layers)
        self.blocks = assign_blocks(self.names, self.keys)
        self.numels = block_numels(self.params, self.blocks)
        self.consts: Dict[str, float] = {}
        self.need_consts = False   # set at epoch starts (mezo.training.zo_run.ZORun.on_epoch_begin)

    # --- bookkeeping
    @property
    def uses_consts(self) -> bool:
        return bool(self.args.zo_variant)

    def const(self, block: Optional[str]) -> float:
        if block is None or block == REST:
            return 1.0
        return safe_constant(self.consts.get(block, 1.0))

    def pert_factor(self, block) -> float:
        """z is scaled by this in the perturbation: 1 / c_b, except on the original's efficient path."""
        if self.args.efficient_zero_order and not self.args.zo_variant_corrected:
            return 1.0
        return 1.0 / self.const(block)

    def grad_factor(self, block, direct: bool = False) -> float:
        """z is scaled by this in the update (direct) or in .grad (trainer path)."""
        if self.args.change_grad_estimate or (direct and not self.args.zo_variant_corrected):
            return 1.0
        return self.const(block)

    def compute_consts(self, loss_fn, loss_with_grad, next_seed) -> None:
        a = self.args
        if a.zo_variant == "param_norm":
            consts = param_norm_constants(self.params, self.blocks)
        elif a.use_zo_grad_est:
            consts = zo_grad_norm_constants(self.params, self.blocks, self.keys, loss_fn, self.noise, next_seed,
                                            a.zero_order_eps)
        else:
            consts = grad_norm_constants(self.params, self.blocks, loss_with_grad)
        if a.scale_norm_by_num_params:
            if a.zo_variant_corrected:
                consts = {b: c / math.sqrt(self.numels[b]) for b, c in consts.items()}
            elif a.zo_variant == "param_norm":   # the original's c / sqrt(c) (see README's differences)
                consts = {b: math.sqrt(c) for b, c in consts.items()}
            elif not a.use_zo_grad_est:
                consts = {b: c / math.sqrt(self.numels[b]) for b, c in consts.items()}
        self.consts = consts
        logger.info("zo_variant %s block constants: %s", a.zo_variant,
                    {k: round(v, 6) for k, v in self.consts.items()})

    def maybe_consts(self, loss_fn, loss_with_grad, next_seed) -> None:
        if self.need_consts and self.uses_consts:
            self.compute_consts(loss_fn, loss_with_grad, next_seed)
        self.need_consts = False

    def selected(self, global_step: int) -> List[int]:
        if self.args.layer_wise_optim:
            return layer_wise_indices(self.names, global_step, self.num_layers)
        return list(range(len(self.params)))

    # --- the direct path: the optimizer's param groups
    def group_key(self, i: int) -> dict:
        """What sets parameter i apart in the optimizer: its block (--zo_variant) and the layers that
        select it (--layer_wise_optim). Parameters with equal keys and weight decay share a group."""
        key = {}
        if self.uses_consts:
            key["block"] = self.blocks[i]
        if self.args.layer_wise_optim:
            key["layers"] = tuple(k for k in range(self.num_layers) if f".{k}." in self.names[i])
        return key

    def configure(self, optimizer, global_step: int) -> None:
        """Before a direct step: which groups this step perturbs (layer k = step mod L) and their
        block scales in the perturbation and the update."""
        k = global_step % self.num_layers
        for g in optimizer.param_groups:
            if self.args.layer_wise_optim:
                g["active"] = k in g["layers"]
            if self.uses_consts:
                g["pert"] = self.pert_factor(g["block"])
                g["upd"] = self.grad_factor(g["block"], direct=True)

    # --- the trainer-optimizer path: the pairs of mezo.zo.estimator.SPSAGradient
    def pairs(self, global_step: int) -> List[tuple]:
        """[(block key or None, parameter indices)]: one SPSA pair over the selected parameters, or
        with --zo_by_layer one per block (the unblocked ones last)."""
        idx = self.selected(global_step)
        if self.args.zo_by_layer:
            return block_members(self.blocks, self.keys, idx, rest=True)
        return [(None, idx)]

    def scales(self, key, members) -> tuple:
        """(pert, upd) for the pair: per-parameter block factors, or --zo_by_layer's z / c_b."""
        if key is None:
            blocks = [self.blocks[i] for i in members]
            pert = [self.pert_factor(b) if self.uses_consts else 1.0 for b in blocks]
        else:
            blocks = [key] * len(members)
            pert = [1.0 / self.const(key)] * len(members)
        return pert, [self.grad_factor(b) for b in blocks]

    def after_pair(self, key, g: float) -> None:
        """--norm_running_update: the block's constant becomes the pair's unscaled |directional derivative|."""
        if key not in (None, REST) and self.args.norm_running_update:
            c = abs(g) * self.const(key)
            if self.args.scale_norm_by_num_params:
                c /= math.sqrt(self.numels[key])
            self.consts[key] = c
