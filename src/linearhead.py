"""Linear probing (`--trainer linearhead`) and the LP step of LP-FT (`--from_linearhead`), spec §4.4.

The frozen model is run once over the training set in eval mode; a scikit-learn probe is fitted
on the features, and the probe is written into the model's own output layer, so that evaluation
(and, with `--from_linearhead`, the training that follows) needs no extra module:

* features: for the prompt model, the input of the MLM decoder at the mask
  (``PromptMLM.head_features(mask_features)``: the post-LayerNorm head vector); for the
  `finetune` model, the input of the final projection (``classifier.out_proj`` for RoBERTa,
  ``classifier`` for BERT), captured with a forward pre-hook.
* probe: ``LogisticRegressionCV`` (multinomial for > 2 classes, binary otherwise; random_state 0;
  tol 1e-4 / max_iter 5000, or 1e-2 / 1000 with `--lp_early_stopping`; accuracy-scored
  stratified CV with up to 5 folds; intercept when the output layer has a bias).
  Regression: ``LinearRegression``.
* write-back: rows of the label words in the decoder weight (``decoder.weight[label_word_ids]``)
  and the matching entries of the decoder bias - the bias is one vector over the vocabulary, only
  the label-word entries are written. A binary probe has one coefficient row w (and intercept
  b): the two label words get (-w/2, +w/2) and (-b/2, +b/2), whose logit difference is w.x + b.
  For the `finetune` model the whole final projection is written.
* `--prob_as_feature`: the probe reads the label-word distribution of the current model. A
  probe on raw probabilities A p + c is not linear in the head feature h, so it could not be
  written back into the decoder; here the distribution enters as *centred log-probabilities*
  f = log p - mean(log p) = C (W_l h + b_l) with C = I - 11^T / L (a one-to-one transform of p,
  free of the log-normaliser), and the fitted probe folds exactly into the label-word rows:
  W' = A C W_l, b' = A C b_l + c. (The spec records no write-back rule for this flag; the
  reference's single rule "coefficients into the decoder rows" cannot apply to L-dimensional
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
from torch import nn

from .errors import UsageError

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


@torch.no_grad()
def collect_features(trainer, model, dataset, prob_as_feature=False):
    """(features [N, D], labels [N]) of ``dataset`` in eval mode, as float64 NumPy arrays."""
    model.eval()
    feats, labels = [], []
    prompt = _is_prompt_model(model)
    captured = []
    hook = None
    if not prompt and not prob_as_feature:
        hook = final_projection(model).register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    try:
        for batch in trainer.get_eval_dataloader(dataset):
            batch = trainer._prepare_inputs(batch)
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


def fit_probe(X, y, num_labels, *, regression=False, early_stopping=False, fit_intercept=True):
    """Fit the probe; returns (W [num_labels, D], b [num_labels], info) as float64 arrays.

    Classification: LogisticRegressionCV; a binary fit (one row) is expanded to (-w/2, +w/2).
    Regression: LinearRegression, one row.
    """
    from sklearn.linear_model import LinearRegression, LogisticRegression, LogisticRegressionCV

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
    folds = int(min(5, counts.min()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)   # sklearn API transition notices
        if folds >= 2:
            reg = LogisticRegressionCV(cv=folds, random_state=0, tol=tol, max_iter=max_iter,
                                       fit_intercept=fit_intercept, l1_ratios=(0.0,), scoring="accuracy",
                                       use_legacy_attributes=False)
        else:   # a label with a single example: no cross-validation possible
            reg = LogisticRegression(random_state=0, tol=tol, max_iter=max_iter, fit_intercept=fit_intercept)
        reg.fit(X, y)
    coef = np.asarray(reg.coef_, dtype=np.float64)
    icpt = np.asarray(reg.intercept_, dtype=np.float64) if fit_intercept else np.zeros(coef.shape[0])
    if coef.shape[0] == 1 and num_labels == 2:
        w = np.stack([-coef[0] / 2, coef[0] / 2])
        b = np.array([-icpt[0] / 2, icpt[0] / 2])
    else:
        w, b = coef, icpt
    info = {"lp_train_acc": float(reg.score(X, y))}
    if hasattr(reg, "C_"):
        info["lp_C"] = float(np.ravel(reg.C_)[0])
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
    X, y = collect_features(trainer, model, train_dataset, prob_as_feature=prob)
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
