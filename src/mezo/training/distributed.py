"""Data-parallel MeZO: every rank perturbs its own full copy with the same seed, so the only
thing to exchange is the loss — two floats per step — instead of a gradient bucket per step.

Ranks start from identical weights (same --seed), draw identical step seeds, compute the loss
on their own shard of the global batch, and average it weighted by shard size; the update is
then identical everywhere. `check_in_sync` verifies that cheaply.
"""
import torch
import torch.distributed as dist

from mezo.errors import RanksDiverged


def shutdown() -> None:
    """Tear the process group down before the interpreter exits: left to static destructors, gloo's
    threads can abort a finished rank ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_mean(loss: torch.Tensor, count: int) -> torch.Tensor:
    """The mean over the global batch of per-rank means over `count` examples."""
    if world_size() == 1:
        return loss
    both = torch.stack([loss.detach().double() * count, torch.tensor(float(count), dtype=torch.float64,
                                                                       device=loss.device)])
    dist.all_reduce(both)
    return (both[0] / both[1]).to(loss.dtype)


def check_in_sync(params, step: int) -> None:
    """Raise if the trainable parameters differ across ranks (a float64 sum and sum of squares)."""
    if world_size() == 1:
        return
    device = params[0].device
    local = torch.zeros(2, dtype=torch.float64, device=device)
    for p in params:
        d = p.detach().double()
        local[0] += d.sum()
        local[1] += (d * d).sum()
    low, high = local.clone(), local.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RanksDiverged(f"step {step}: trainable parameters differ across ranks "
                            f"(checksum min {low.tolist()} vs max {high.tolist()}); MeZO replicas diverged")
