"""The fast noise backend of the MeZO step (mezo.zo.step.mezo_step): z(seed) drawn and applied in place, in chunks.

A step runs 100,000 times per run and its noise passes compete with two forward passes, so
everything here is in place, chunked and allocation-light. ``FastNoise`` implements the three
operations of ``zo.Noise``; tests/zo/test_zo.py checks it against ``zo.PlainNoise``, the literal one.

* **z is a pure function of the seed.** The parameters are grouped by (device, dtype); each
  group is viewed as the concatenation of its flattened parameters (in list order) and cut into
  fixed-size chunks (``CPU_CHUNK`` / ``CUDA_CHUNK`` elements). Chunk ``k`` of group ``g`` draws its
  noise from its own generator keyed by BLAKE2b(seed, g, k), so the same seed regenerates the same
  z whatever the number of threads, and chunks can be drawn in parallel. (z therefore depends on
  the list of parameters, not only on the parameter itself; exact reproduction of the reference's
  z stream is not required, same-seed regeneration within a step is - docs/behaviour.md, "The MeZO step".)
* **CPU:** chunks run on a small thread pool (the calling thread plus ``workers - 1`` threads;
  ``workers`` defaults to ``torch.get_num_threads()``). A chunk is drawn into a per-thread buffer
  and applied to the parameter slices at once while still in cache, so z is never materialised for
  the whole model. Bits come from NumPy's PCG64DXSM (a fraction of the cost of torch's CPU
  mt19937, which dominates ``normal_``) and become Gaussians by Box-Muller, the transform torch's
  own CPU ``normal_`` uses, computed with single-threaded NumPy ufuncs that release the GIL. A
  whole pass (draw + apply) costs about 3.4 ns per parameter per core on the project's CPU,
  against about 9 for torch ``normal_`` + ``add_`` and about 19 for the reference's out-of-place
  pass. Every chunk is computed by the same serial code, so results are bitwise identical for
  any number of workers and torch threads (on a given machine; SIMD math may differ in the last
  ulp across CPU types).
* **CUDA:** one generator per device, re-seeded per chunk; chunks are looped (no threads) and
  applied with multi-tensor ``torch._foreach_*`` kernels.
* **dtype:** z is drawn "in the parameter dtype" as the reference does: float32 and float64
  parameters get float32/float64 Box-Muller (uniforms of 23/52 bits; float32 tails are cut at
  5.65 sigma, torch's CPU ``normal_`` cuts at 5.77); float16/bfloat16 parameters get the float32
  draw rounded to their dtype (on CUDA: ``normal_`` in that dtype). Updates of low-precision
  parameters are computed in float32 and rounded once.
* **cache_z:** ``FastNoise(cache_z=True)`` keeps the z of the last seed in buffers reused across
  steps: the first pass of a seed draws and keeps z, later passes of the same seed read it back
  (one noise draw per step instead of three, at the cost of one copy of the parameters).

A ``FastNoise`` instance is not meant to be used from several threads at once.
"""
import concurrent.futures
import enum
import hashlib
import itertools
import math
import struct
import threading
from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import numpy as np
import torch

from mezo.zo.step import per_param

__all__ = ["FastNoise", "CPU_CHUNK", "CUDA_CHUNK"]

# Part of the definition of z (changing them changes the noise stream of a given seed).
CPU_CHUNK = 1 << 17    # 512 KiB of float32: chunk + bits + parameter slice stay in L2
CUDA_CHUNK = 1 << 24   # 64 MiB fp32 buffer (at most the group's size): few launches per pass
_SUB = 1 << 14         # sub-blocks for torch ops in worker threads: below ATen's grain size, so serial

_M64 = (1 << 64) - 1
_PACK = struct.Struct("<QQQ").pack
_PERSON = b"mezo-z/1"
_F32_MANT, _F32_ONE = np.uint32(0x007FFFFF), np.uint32(0x3F800000)
_F64_MANT, _F64_ONE = np.uint64(0x000FFFFFFFFFFFFF), np.uint64(0x3FF0000000000000)
_NATIVE = {torch.float32: np.float32, torch.float64: np.float64}


class ZSource(enum.Enum):
    """Where a pass takes z from: drawn and dropped, drawn and kept (cache_z), or read back."""
    DRAW = "draw"
    FILL = "fill"
    USE = "use"


class Segment(NamedTuple):
    """The part of one parameter that falls into a chunk."""
    param: int          # index in the parameter list
    param_offset: int   # first element in the flattened parameter
    chunk_offset: int   # first element in the chunk
    numel: int
    whole: bool         # the segment is the whole parameter


class Chunk(NamedTuple):
    """One unit of noise: ``size`` elements of group ``group``, drawn from its own keyed generator."""
    group: int
    index: int
    size: int
    segments: List[Segment]


def _key(seed: int, group: int, chunk: int, size: int) -> bytes:
    return hashlib.blake2b(_PACK(int(seed) & _M64, group, chunk), digest_size=size,
                           person=_PERSON).digest()


def _gauss(bg, m: int, out: np.ndarray) -> None:
    """Fill ``out[:m]`` with N(0, 1) by Box-Muller from ``bg``'s raw bits (float32 or float64).

    Uniforms are built by bit tricks (mantissa bits | exponent of 1.0 -> [1, 2)); the first half
    of the chunk gets r cos(t), the second half r sin(t) of the same pairs.
    """
    h = (m + 1) >> 1
    if out.dtype == np.float32:
        w = bg.random_raw(h).view(np.uint32)          # 2h random 32-bit words
        np.bitwise_and(w, _F32_MANT, out=w)
        np.bitwise_or(w, _F32_ONE, out=w)
        f = w.view(np.float32)
    else:
        w = bg.random_raw(2 * h)
        np.bitwise_and(w, _F64_MANT, out=w)
        np.bitwise_or(w, _F64_ONE, out=w)
        f = w.view(np.float64)
    r, t = f[:h], f[h:]                               # both uniform on [1, 2)
    np.subtract(2.0, r, out=r)                        # u in (0, 1]: log never sees 0
    np.log(r, out=r)
    np.multiply(r, -2.0, out=r)
    np.sqrt(r, out=r)                                 # radius
    np.multiply(t, 2.0 * math.pi, out=t)              # angle (cos/sin are 2pi-periodic)
    lo, hi = out[:h], out[h:m]
    np.cos(t, out=lo)
    np.multiply(lo, r, out=lo)
    k = m - h
    if k:
        np.sin(t[:k], out=hi)
        np.multiply(hi, r[:k], out=hi)


class _Cache(NamedTuple):
    """cache_z: the z of ``seed`` for the parameter list ``sig``, one flat buffer per group."""
    sig: tuple
    seed: Optional[int]
    flat: List[torch.Tensor]
    flat_np: List[Optional[np.ndarray]]


@dataclass
class _Plan:
    """Grouping of a parameter list into (device, dtype) streams and chunks (cached per list).

    Holds no tensors: a plan is keyed by (data_ptr, shape, dtype, device) and only describes
    the layout, so reusing it for a new tensor at a recycled address is harmless.
    """
    sig: tuple
    groups: list          # [(device, dtype, total_numel)]
    param_gid: list       # group of each parameter
    cpu_tasks: List[Chunk]
    cuda_tasks: List[Chunk]


def _signature(params) -> tuple:
    return tuple((p.data_ptr(), p.shape, p.dtype, p.device) for p in params)


def _build_plan(params, sig) -> _Plan:
    gid_of, groups, members, param_gid = {}, [], [], []
    for i, p in enumerate(params):
        if not p.is_contiguous():
            raise ValueError(f"parameter {i} is not contiguous; MeZO updates flat views in place")
        key = (p.device, p.dtype)
        if key not in gid_of:
            gid_of[key] = len(groups)
            groups.append([p.device, p.dtype, 0])
            members.append([])
        g = gid_of[key]
        param_gid.append(g)
        members[g].append((i, groups[g][2], p.numel()))
        groups[g][2] += p.numel()
    cpu_tasks, cuda_tasks = [], []
    for g, (device, _, total) in enumerate(groups):
        cuda = device.type == "cuda"
        chunk = CUDA_CHUNK if cuda else CPU_CHUNK
        mem = iter(members[g])
        cur = next(mem, None)
        for k in range(-(-total // chunk)):
            lo, hi = k * chunk, min(total, (k + 1) * chunk)
            segs = []
            while cur is not None and cur[1] < hi:
                i, off, n = cur
                a, b = max(lo, off), min(hi, off + n)
                if b > a:
                    segs.append(Segment(i, a - off, a - lo, b - a, b - a == n))
                if off + n > hi:
                    break
                cur = next(mem, None)
            (cuda_tasks if cuda else cpu_tasks).append(Chunk(g, k, hi - lo, segs))
    return _Plan(sig, [tuple(g) for g in groups], param_gid, cpu_tasks, cuda_tasks)


def _np_view(t: torch.Tensor) -> Optional[np.ndarray]:
    if t.device.type == "cpu" and t.dtype in _NATIVE:
        return t.detach().view(-1).numpy()
    return None


class FastNoise:
    """``zo.Noise`` done fast: thread pool, per-thread buffers, chunk plans, optional z cache.

    ``workers=None`` follows ``torch.get_num_threads()`` at each call.
    """

    def __init__(self, workers: Optional[int] = None, cache_z: bool = False):
        self.workers = workers
        self.cache_z = bool(cache_z)
        self._pool = None
        self._pool_size = 0
        self._local = threading.local()
        self._plan: Optional[_Plan] = None
        self._cache: Optional[_Cache] = None
        self._cuda = {}               # (device, dtype) -> (generator, buffer)
        self._zv = {}                 # cached views of CUDA z buffers

    # ------------------------------------------------------------------ zo.Noise
    def add_(self, params, seed: int, scales) -> None:
        """theta_i <- theta_i + scales_i z_i(seed), in place (a float: the same for every parameter)."""
        params = list(params)
        self._pass(params, params, seed, [0.0] * len(params), per_param(scales, len(params), "scales"))

    def decay_add_(self, params, seed: int, decays, scales) -> None:
        """theta_i <- theta_i + decays_i theta_i + scales_i z_i(seed): MeZO's fused restore and update."""
        params = list(params)
        n = len(params)
        self._pass(params, params, seed, per_param(decays, n, "decays"), per_param(scales, n, "scales"))

    def add_to_grad_(self, params, seed: int, scales) -> None:
        """p.grad_i += scales_i z_i(seed) (``.grad`` allocated as zeros when None)."""
        params = list(params)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
        grads = [p.grad for p in params]
        self._pass(params, grads, seed, [0.0] * len(params), per_param(scales, len(params), "scales"),
                   targets_np=[_np_view(g) for g in grads])

    def draw_z(self, params, seed: int) -> List[torch.Tensor]:
        """The z of ``seed`` as new tensors shaped like ``params``: the definition of z."""
        params = list(params)
        outs = [torch.empty_like(p, memory_format=torch.contiguous_format) for p in params]
        self._pass(params, outs, seed, None, None, targets_np=[_np_view(o) for o in outs], cached=False)
        return outs

    def release_cache(self) -> None:
        """Free the cache_z buffers (they are otherwise kept, and reused, for the next seed)."""
        self._cache = None
        self._zv.clear()

    # ------------------------------------------------------------------ machinery
    def _get_plan(self, params) -> _Plan:
        sig = _signature(params)
        if self._plan is None or self._plan.sig != sig:
            self._plan = _build_plan(params, sig)
            self._zv.clear()
        return self._plan

    def _source(self, plan: _Plan, seed: int):
        """(ZSource, cache): with cache_z, the first pass of a seed fills the cache, the next ones read it."""
        if self._cache is not None and self._cache.sig == plan.sig and self._cache.seed == seed:
            return ZSource.USE, self._cache
        if self._cache is None or self._cache.sig != plan.sig:
            self._cache = None   # free the old buffers before allocating new ones
            bufs = [torch.empty(total, dtype=dt, device=dev) for dev, dt, total in plan.groups]
            self._cache = _Cache(plan.sig, None, bufs, [_np_view(b) for b in bufs])
        self._cache = self._cache._replace(seed=seed)
        return ZSource.FILL, self._cache

    def _pass(self, params, targets, seed, decay, coef, targets_np=None, cached=True) -> None:
        """targets[i] <- targets[i] + decay[i] targets[i] + coef[i] z_i, or <- z_i when coef is None."""
        if not params:
            return
        plan = self._get_plan(params)
        seed = int(seed)
        cache, cache_bufs = self._source(plan, seed) if (self.cache_z and cached) else (ZSource.DRAW, None)
        if plan.cuda_tasks:
            with torch.no_grad():   # in-place on leaves that require grad
                self._cuda_pass(plan, targets, seed, decay, coef, cache, cache_bufs)
        if plan.cpu_tasks:
            targets = [t.detach() for t in targets]   # grad mode is per thread: detach instead
            if targets_np is None:
                targets_np = [_np_view(t) for t in targets]
            job = _CpuJob(self, plan, targets, targets_np, seed, decay, coef, cache, cache_bufs)
            self._run(job.run, plan.cpu_tasks)

    def _n_workers(self) -> int:
        return max(1, int(self.workers if self.workers is not None else torch.get_num_threads()))

    def _run(self, fn, tasks) -> None:
        """Run fn(task) for every task on the calling thread plus workers - 1 pool threads.

        Tasks are handed out dynamically (a shared counter), which keeps both cores busy when
        other processes share the machine; the result does not depend on who ran what.
        """
        ntasks = len(tasks)
        w = min(self._n_workers(), ntasks)
        if w <= 1:
            for t in tasks:
                fn(t)
            return
        if self._pool is None or self._pool_size < w - 1:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = concurrent.futures.ThreadPoolExecutor(w - 1, thread_name_prefix="mezo-z")
            self._pool_size = w - 1
        counter = itertools.count()
        failed = []

        def loop():
            while not failed:
                i = next(counter)   # atomic under the GIL
                if i >= ntasks:
                    return
                try:
                    fn(tasks[i])
                except BaseException as e:   # stop the others; re-raised on the caller
                    failed.append(e)
                    raise

        futs = [self._pool.submit(loop) for _ in range(w - 1)]
        try:
            loop()
        finally:
            concurrent.futures.wait(futs)
        for f in futs:
            f.result()

    def _thread_state(self):
        st = self._local
        if not hasattr(st, "bg"):
            st.bg = np.random.PCG64DXSM(0)
            st.bufs = {}
        return st

    def _cuda_pass(self, plan, targets, seed, decay, coef, cache, cache_bufs) -> None:
        """Chunks in order, one generator per device re-seeded per chunk, multi-tensor updates.

        Host overhead is what limits this path on a fast GPU, hence the cached z views and the
        whole-parameter targets (no slicing unless a parameter straddles two chunks).
        """
        store = coef is None
        if not store:
            # The decay term needs no z: one multi-tensor pass per distinct coefficient.
            for c in set(decay):
                sel = [t for i, t in enumerate(targets)
                       if decay[i] == c and plan.groups[plan.param_gid[i]][0].type == "cuda"]
                if c != 0.0 and sel:
                    torch._foreach_add_(sel, sel, alpha=c)
            same = coef[0] if len(set(coef)) == 1 else None
        for gid, k, m, segs in plan.cuda_tasks:
            device, dtype, total = plan.groups[gid]
            base = k * CUDA_CHUNK
            if cache is ZSource.USE:
                zsrc, off = cache_bufs.flat[gid], base
            else:
                gen, buf = self._cuda_state(device, dtype, min(total, CUDA_CHUNK))
                zsrc, off = (cache_bufs.flat[gid], base) if cache is ZSource.FILL else (buf, 0)
                gen.manual_seed(int.from_bytes(_key(seed, gid, k, 8), "little"))
                zsrc[off:off + m].normal_(generator=gen)
            zv = self._zviews(plan, zsrc, off, gid, k, segs, targets)
            tv = [targets[i] if whole else targets[i].view(-1)[po:po + n]
                  for i, po, co, n, whole in segs]
            if store:
                torch._foreach_copy_(tv, zv)
            elif same is not None:
                if same != 0.0:
                    torch._foreach_add_(tv, zv, alpha=same)
            else:
                cs = [coef[s[0]] for s in segs]
                for c in set(cs):
                    if c != 0.0:
                        idx = [j for j, cj in enumerate(cs) if cj == c]
                        torch._foreach_add_([tv[j] for j in idx], [zv[j] for j in idx], alpha=c)

    def _zviews(self, plan, zsrc, off, gid, k, segs, targets):
        """Views of a chunk's z shaped like their targets (cached: the buffers are ours)."""
        key = (plan.sig, zsrc.data_ptr(), off, gid, k)
        views = self._zv.get(key)
        if views is None:
            if len(self._zv) > 4096:
                self._zv.clear()
            views = [zsrc[off + co:off + co + n].view(targets[i].shape) if whole
                     else zsrc[off + co:off + co + n] for i, po, co, n, whole in segs]
            self._zv[key] = views
        return views

    def _cuda_state(self, device, dtype, size):
        key = (device, dtype)
        st = self._cuda.get(key)
        if st is None or st[1].numel() < size:
            self._zv.clear()
            st = self._cuda[key] = (torch.Generator(device=device),
                                    torch.empty(size, dtype=dtype, device=device))
        return st


class _CpuJob:
    """One CPU pass: the per-chunk work run by the pool threads (all of it serial code)."""

    def __init__(self, owner, plan, targets, targets_np, seed, decay, coef, cache, cache_bufs):
        self.owner, self.plan, self.targets, self.targets_np = owner, plan, targets, targets_np
        self.seed, self.decay, self.coef, self.cache = seed, decay, coef, cache
        self.cache_t = cache_bufs.flat if cache_bufs else None
        self.cache_np = cache_bufs.flat_np if cache_bufs else None

    def run(self, task) -> None:
        gid, k, m, segs = task
        dtype = self.plan.groups[gid][1]
        native = dtype in _NATIVE
        st = self.owner._thread_state()
        gen_dt = _NATIVE.get(dtype, np.float32)
        bufs = st.bufs.get(gen_dt)
        if bufs is None:
            bufs = st.bufs[gen_dt] = (np.empty(CPU_CHUNK, gen_dt), np.empty(CPU_CHUNK, gen_dt))
        zbuf, scratch = bufs
        base = k * CPU_CHUNK
        # z: in the per-thread buffer (may be scaled in place) or in the cache (read-only).
        if self.cache is ZSource.USE:
            if native:
                z, disposable = self.cache_np[gid][base:base + m], False
            else:
                z, disposable = zbuf[:m], True
                for s, e in _blocks(m):
                    torch.from_numpy(z[s:e]).copy_(self.cache_t[gid][base + s:base + e])
        else:
            st.bg.state = _pcg_state(self.seed, gid, k)
            if self.cache is ZSource.FILL and native:
                z, disposable = self.cache_np[gid][base:base + m], False
            else:
                z, disposable = zbuf[:m], True
            _gauss(st.bg, m, z)
            if not native:
                _round_inplace(z, dtype)   # z "in the parameter dtype"
                if self.cache is ZSource.FILL:
                    for s, e in _blocks(m):
                        self.cache_t[gid][base + s:base + e].copy_(torch.from_numpy(z[s:e]))
        for i, po, co, n, _ in segs:
            zz = z[co:co + n]
            if not native:
                self._lowp(self.targets[i].view(-1)[po:po + n], zz, i)
                continue
            t = self.targets_np[i][po:po + n]
            if self.coef is None:
                np.copyto(t, zz)
                continue
            c, s = self.decay[i], self.coef[i]
            if c != 0.0:   # t + c t: the reference's "theta - lr wd theta"
                tmp = scratch[:n]
                np.multiply(t, c, out=tmp)
                np.add(t, tmp, out=t)
            if s != 0.0:
                w = zz if disposable else scratch[:n]
                np.multiply(zz, s, out=w)
                np.add(t, w, out=t)

    def _lowp(self, t: torch.Tensor, zz: np.ndarray, i: int) -> None:
        """float16/bfloat16 targets: compute in float32, round once (small serial torch ops)."""
        for s, e in _blocks(t.numel()):
            zt = torch.from_numpy(zz[s:e])
            tt = t[s:e]
            if self.coef is None:
                tt.copy_(zt)
                continue
            x = tt.float()
            if self.decay[i] != 0.0:
                x.add_(x, alpha=self.decay[i])
            x.add_(zt, alpha=self.coef[i])
            tt.copy_(x)


def _blocks(n: int):
    """Sub-blocks small enough that ATen runs an elementwise op serially (below its grain size),
    so torch ops inside pool threads neither oversubscribe the cores nor depend on thread count."""
    return ((s, min(n, s + _SUB)) for s in range(0, n, _SUB))


def _pcg_state(seed: int, gid: int, k: int) -> dict:
    d = _key(seed, gid, k, 32)
    return {"bit_generator": "PCG64DXSM",
            "state": {"state": int.from_bytes(d[:16], "little"),
                      "inc": int.from_bytes(d[16:], "little") | 1},
            "has_uint32": 0, "uinteger": 0}


def _round_inplace(z: np.ndarray, dtype: torch.dtype) -> None:
    """Round a float32 buffer to ``dtype`` values (kept as float32), in serial sub-blocks."""
    for s, e in _blocks(z.shape[0]):
        zt = torch.from_numpy(z[s:e])
        zt.copy_(zt.to(dtype))


