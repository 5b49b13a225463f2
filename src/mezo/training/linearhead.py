"""Linear probing (`--trainer linearhead`) and the LP step of LP-FT (`--from_linearhead`); docs/behaviour.md, "Linear probing".

The frozen model is run once over the training set in eval mode; a scikit-learn probe is fitted
on the features, and the probe is written into the model's own output layer, so that evaluation
(and, with `--from_linearhead`, the training that follows) needs no extra module:

* features: for the prompt model, the input of the MLM decoder at the mask
  (``PromptMLM.head_features(mask_features)``: the post-LayerNorm head vector); for the
  `finetune` model, the input of the final projection (``classifier.out_proj`` for RoBERTa,
  ``classifier`` for BERT), captured with a forward pre-hook.
* order: the reference collected the features through its shuffled *training* loader
  (transformers 4.28 ``Trainer.get_train_dataloader``), and the order decides the 5 stratified
  CV folds. ``original_train_order`` replays that loader's sampler (a ``RandomSampler`` whose
  generator is seeded from the global torch RNG, which the Trainer has just seeded with
  ``--seed``; ``DistributedSampler`` order, padding included, on several processes), and batches
  of ``train_batch_size`` as the reference did, so even the padding per batch is the same.
* probe: the reference's ``LogisticRegressionCV(multi_class="multinomial")`` of the scikit-learn
  of its time (its install instructions pin 0.24) - a softmax fit with one row per class, *also
  for two classes* - which scikit-learn 1.9 no longer offers (``multi_class`` is gone and two
  classes always get the binomial fit, a different objective: its CV picks a different C). ``multinomial_logistic_cv`` states that
  estimator's algorithm with public pieces (scipy L-BFGS-B on the summed softmax loss plus
  ||W||^2 / 2C, options gtol=tol and maxiter as it passed them; ``StratifiedKFold(5)`` on the
  collected order; Cs = logspace(-4, 4, 10), each fold's path warm-started from the previous C;
  accuracy summed over folds, first maximum; refit on all examples from the folds' mean
  solution). tol 1e-4 / max_iter 5000, or 1e-2 / 1000 with `--lp_early_stopping`; intercept
  when the output layer has a bias. Regression: ``LinearRegression``.
* write-back: rows of the label words in the decoder weight (``decoder.weight[label_word_ids]``)
  and the matching entries of the decoder bias - the bias is one vector over the vocabulary, only
  the label-word entries are written. The multinomial probe has one row per label, written as
  is (as the reference does with its two rows on a binary task). For the `finetune` model the
  whole final projection is written.
* `--prob_as_feature`: the probe reads the label-word distribution of the current model. A
  probe on raw probabilities A p + c is not linear in the head feature h, so it could not be
  written back into the decoder; here the distribution enters as *centred log-probabilities*
  f = log p - mean(log p) = C (W_l h + b_l) with C = I - 11^T / L (a one-to-one transform of p,
  free of the log-normaliser), and the fitted probe folds exactly into the label-word rows:
  W' = A C W_l, b' = A C b_l + c. (The reference applied this probe after the model instead,
  see README's differences; its rule "coefficients into the decoder rows" cannot apply to L-dimensional
  coefficients.)
* regression (prompt model, two label words, score = sigmoid(l_1 - l_0) scaled to the label
  range): the probe is fitted to the logit of the clipped normalised score, so that the model's
  own output reproduces the linear fit; the `finetune` regressor gets the fit directly.
"""
import logging
import math
import warnings

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from mezo.training import hf_private
from mezo.data.datasets import original_train_sampler
from mezo.errors import UsageError

logger = logging.getLogger(__name__)


def _is_prompt_model(model) -> bool:
    return hasattr(model, "head_features") and getattr(model, "label_word_ids", None) is not None


def final_projection(model) -> nn.Linear:
    """The Linear whose rows are the class logits of a sequence-classification model."""
    head = getattr(model, "classifier", None)
    if isinstance(getattr(head, "out_proj", None), nn.Linear):
        return head.out_proj
    if isinstance(head, nn.Linear):
        return head
    raise UsageError("--trainer linearhead: cannot find the final projection of this model "
                     "(expected classifier.out_proj or classifier)")


def centre(logits: torch.Tensor) -> torch.Tensor:
    """log softmax(l) - mean(log softmax(l)) = l - mean(l): centred log-probabilities."""
    return logits - logits.mean(-1, keepdim=True)


def original_train_order(n: int, args) -> list:
    """Indices of a training set of ``n`` examples in the order the reference's LP step read them.

    transformers 4.28 built the training loader's sampler from the global torch RNG, which its
    Trainer had just seeded with ``--seed``: one process -> ``RandomSampler`` with a generator
    seeded by ``--data_seed`` or else by one int64 draw from the global RNG; several processes ->
    ``DistributedSampler(seed=data_seed or seed)`` per rank, the ranks' features concatenated
    (padding duplicates included). ``--dataloader_drop_last`` drops each loader's last partial
    batch. Like the reference's loader iterator, one more int64 (its base seed) is drawn from the
    global RNG, so what follows (the LP-FT training loader) sees the same RNG state.
    """
    bs = max(1, int(args.train_batch_size))
    world = max(1, int(getattr(args, "world_size", 1) or 1))
    data_seed = getattr(args, "data_seed", None)
    source = range(n)
    if world == 1:
        shards = [list(original_train_sampler(source, args))]
    else:
        seed = int(data_seed) if data_seed is not None else int(args.seed)
        shards = [list(DistributedSampler(source, num_replicas=world, rank=r, seed=seed)) for r in range(world)]
    torch.empty((), dtype=torch.int64).random_()   # the loader iterator's base seed
    if args.dataloader_drop_last:
        shards = [s[:len(s) // bs * bs] for s in shards]
    return [i for s in shards for i in s]


@torch.no_grad()
def collect_features(trainer, model, dataset, prob_as_feature=False, order=None, batch_size=None):
    """(features [N, D], labels [N]) of ``dataset`` in eval mode, as float64 NumPy arrays.

    ``order``: the example indices in the order wanted (default: the dataset's), read in batches
    of ``batch_size`` (default: the evaluation batch size) padded by the trainer's collator."""
    model.eval()
    feats, labels = [], []
    prompt = _is_prompt_model(model)
    captured = []
    hook = None
    if not prompt and not prob_as_feature:
        hook = final_projection(model).register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    order = list(range(len(dataset))) if order is None else list(order)
    loader = DataLoader(dataset, batch_size=batch_size or trainer.args.eval_batch_size, sampler=order,
                        collate_fn=trainer.data_collator)
    try:
        for batch in loader:
            batch = hf_private.prepare_inputs(trainer, batch)
            labels.append(batch["labels"].detach().cpu())
            if prompt:
                h = model.mask_features(batch["input_ids"], batch.get("attention_mask"),
                                        batch.get("token_type_ids"), batch.get("mask_pos"))
                f = model.head_features(h)
                if prob_as_feature:
                    f = centre(model.label_logits(f))
            else:
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                out = model(**inputs)
                f = centre(out["logits"]) if prob_as_feature else captured.pop()
            feats.append(f.detach().float().cpu())
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(feats).double().numpy(), torch.cat(labels).numpy()


LP_CS = np.logspace(-4, 4, 10)   # LogisticRegressionCV(Cs=10): the reference's C grid
LP_FOLDS = 5                      # its default cv: StratifiedKFold(5), no shuffling


def _softmax_objective(theta, X, Y, C, fit_intercept):
    """sum_i CE(softmax(W x_i + b), y_i) + ||W||^2 / 2C and its gradient; theta = (K, D[+1]) rows."""
    K, D = Y.shape[1], X.shape[1]
    T = theta.reshape(K, D + int(fit_intercept))
    W = T[:, :D]
    Z = X @ W.T + (T[:, D] if fit_intercept else 0.0)
    lse = logsumexp(Z, axis=1)
    G = np.exp(Z - lse[:, None]) - Y
    loss = float(np.sum(lse - np.sum(Y * Z, axis=1)) + 0.5 / C * np.sum(W * W))
    grad = G.T @ X + W / C
    if fit_intercept:
        grad = np.hstack([grad, G.sum(axis=0)[:, None]])
    return loss, grad.ravel()


def _softmax_path(X, Y, Cs, tol, max_iter, fit_intercept, theta=None):
    """Softmax fits for each C in turn, each started from the previous solution (zeros first)."""
    if theta is None:
        theta = np.zeros(Y.shape[1] * (X.shape[1] + int(fit_intercept)))
    path = []
    for C in Cs:
        res = minimize(_softmax_objective, theta, args=(X, Y, float(C), fit_intercept), jac=True,
                       method="L-BFGS-B", options={"gtol": tol, "maxiter": max_iter})
        if res.nit >= max_iter:
            logger.warning("linear probe: L-BFGS did not converge in %d iterations (C=%g)", max_iter, C)
        theta = res.x
        path.append(theta)
    return path


def _split(theta, K, D, fit_intercept):
    T = theta.reshape(K, D + int(fit_intercept))
    return T[:, :D], (T[:, D] if fit_intercept else np.zeros(K))


def multinomial_logistic_cv(X, y, num_labels, *, tol, max_iter, fit_intercept=True, Cs=LP_CS, folds=LP_FOLDS):
    """The reference's ``LogisticRegressionCV(multi_class="multinomial", solver="lbfgs")``.

    Returns (W [num_labels, D], b [num_labels], selected C, mean CV accuracy per C). With fewer
    than two examples in every label there is no CV: one fit at C = 1 (the reference crashes);
    with fewer than ``folds`` examples in every label, as many folds as the largest label has."""
    from sklearn.model_selection import StratifiedKFold

    K, D = num_labels, X.shape[1]
    Y = np.eye(K)[y]
    counts = np.bincount(y, minlength=K)
    n_splits = int(min(folds, counts.max()))
    if n_splits < 2:
        W, b = _split(_softmax_path(X, Y, [1.0], tol, max_iter, fit_intercept)[0], K, D, fit_intercept)
        return W, b, 1.0, np.array([])
    scores, paths = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "least populated class has only ... members"
        splits = list(StratifiedKFold(n_splits).split(X, y))
    for train, test in splits:
        path = _softmax_path(X[train], Y[train], Cs, tol, max_iter, fit_intercept)
        paths.append(path)
        scores.append([float(np.mean(_predict(*_split(t, K, D, fit_intercept), X[test]) == y[test])) for t in path])
    best = int(np.argmax(np.sum(scores, axis=0)))
    start = np.mean([p[best] for p in paths], axis=0)
    theta = _softmax_path(X, Y, [Cs[best]], tol, max_iter, fit_intercept, theta=start)[0]
    W, b = _split(theta, K, D, fit_intercept)
    return W, b, float(Cs[best]), np.mean(scores, axis=0)


def _predict(W, b, X):
    return np.argmax(X @ W.T + b, axis=1)


def fit_probe(X, y, num_labels, *, regression=False, early_stopping=False, fit_intercept=True):
    """Fit the probe; returns (W [num_labels, D], b [num_labels], info) as float64 arrays.

    Classification: ``multinomial_logistic_cv`` (one row per label, two rows for two labels).
    Regression: LinearRegression, one row.
    """
    from sklearn.linear_model import LinearRegression

    if regression:
        reg = LinearRegression(fit_intercept=fit_intercept).fit(X, y)
        w = np.atleast_2d(reg.coef_).astype(np.float64)
        b = np.atleast_1d(np.asarray(reg.intercept_, dtype=np.float64))
        return w, b, {"lp_train_r2": float(reg.score(X, y))}
    y = y.astype(np.int64)
    counts = np.bincount(y, minlength=num_labels)
    if (counts == 0).any():
        raise UsageError(f"linear probing: the training set has no example of label(s) "
                         f"{np.flatnonzero(counts == 0).tolist()}")
    tol, max_iter = (1e-2, 1000) if early_stopping else (1e-4, 5000)
    w, b, C, _ = multinomial_logistic_cv(np.asarray(X, dtype=np.float64), y, num_labels, tol=tol,
                                         max_iter=max_iter, fit_intercept=fit_intercept)
    info = {"lp_train_acc": float(np.mean(_predict(w, b, X) == y)), "lp_C": C}
    return w, b, info


def _regression_target(y, bounds):
    lo, hi = bounds
    t = np.clip((np.asarray(y, dtype=np.float64) - lo) / (hi - lo), 1e-3, 1 - 1e-3)
    return np.log(t / (1 - t))


@torch.no_grad()
def write_rows(weight: torch.Tensor, bias, rows, w: np.ndarray, b: np.ndarray) -> None:
    """weight[rows] <- w and bias[rows] <- b (in place; other rows and bias entries untouched)."""
    idx = torch.as_tensor(rows, dtype=torch.long, device=weight.device)
    weight[idx] = torch.as_tensor(w, dtype=weight.dtype, device=weight.device)
    if bias is not None:
        bias[idx] = torch.as_tensor(b, dtype=bias.dtype, device=bias.device)


def fit_linear_head(trainer, model, train_dataset, task, training_args) -> dict:
    """Fit the probe on ``train_dataset`` and write it into the model's output rows. Returns log info."""
    if train_dataset is None or len(train_dataset) == 0:
        raise UsageError("--trainer linearhead / --from_linearhead: needs training examples")
    model = getattr(trainer, "model", None) or model
    prob = bool(training_args.prob_as_feature)
    regression = task.output_mode == "regression"
    order = original_train_order(len(train_dataset), trainer.args)
    if not order:
        raise UsageError(f"--dataloader_drop_last: with --per_device_train_batch_size "
                         f"{trainer.args.per_device_train_batch_size} no training example is left for linear probing")
    X, y = collect_features(trainer, model, train_dataset, prob_as_feature=prob, order=order,
                            batch_size=trainer.args.train_batch_size)
    if _is_prompt_model(model):
        layer = model.decoder
        rows = model.label_word_ids.tolist()
    else:
        layer = final_projection(model)
        rows = list(range(layer.weight.shape[0]))
    fit_intercept = layer.bias is not None
    n_out = len(rows)
    if regression and _is_prompt_model(model):
        w1, b1, info = fit_probe(X, _regression_target(y, task.regression_bounds), 2, regression=True,
                                 fit_intercept=fit_intercept)
        w, b = np.concatenate([-w1 / 2, w1 / 2]), np.concatenate([-b1 / 2, b1 / 2])
    else:
        w, b, info = fit_probe(X, y, n_out, regression=regression,
                               early_stopping=training_args.lp_early_stopping, fit_intercept=fit_intercept)
    if prob:
        # f = C (W_l h + b_l): fold the probe A f + c into the label-word rows.
        L = n_out
        C = np.eye(L) - np.full((L, L), 1.0 / L)
        W_l = layer.weight.detach()[torch.as_tensor(rows)].double().cpu().numpy()
        b_l = (layer.bias.detach()[torch.as_tensor(rows)].double().cpu().numpy() if layer.bias is not None
               else np.zeros(L))
        w, b = w @ C @ W_l, w @ C @ b_l + b
    write_rows(layer.weight, layer.bias, rows, w, b)
    info = {k: v for k, v in info.items() if not (isinstance(v, float) and not math.isfinite(v))}
    logger.info("linear probe on %d examples (%d features): %s", X.shape[0], X.shape[1], info)
    return info
