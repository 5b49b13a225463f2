"""A stock Hugging Face masked LM used as a prompt-based classifier.

The model reads the final hidden state at the `<mask>` position, runs the pretrained MLM head
there only, and keeps the logits of the label words (LM-BFF). The wrapper re-registers the
stock encoder and head under their own names (`roberta.*`, `lm_head.*`; `bert.*`, `cls.*`) so
that parameter names, freezing rules and module surgery (LoRA, prefixes) see the familiar
layout; no Hugging Face modelling code is copied.
"""
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from mezo.models.embedded import EMBEDDED_NAME, resolve_model_path
from mezo.errors import ModelSourceError
from mezo.models.families import ROBERTA_TYPES
from mezo.errors import UsageError


def find_head_name(mlm) -> str:
    """`lm_head` for RoBERTa-style heads, `cls` for BERT-style ones."""
    head = getattr(mlm, "lm_head", None)
    if head is not None and all(hasattr(head, a) for a in ("dense", "layer_norm", "decoder")):
        return "lm_head"
    if hasattr(getattr(mlm, "cls", None), "predictions"):
        return "cls"
    raise UsageError(f"--model_name_or_path: model type {mlm.config.model_type!r} has an MLM head this "
                     "project does not know; supported: RoBERTa-style (lm_head) and BERT-style (cls) models")


class PromptMLM(nn.Module):
    """Prompt-based classifier (or STS-B regressor) over a stock `*ForMaskedLM`."""

    def __init__(self, mlm, num_labels, label_word_ids=None, output_mode="classification",
                 regression_bounds=None, l2_loss=False, tie_emb=False):
        super().__init__()
        self.config = mlm.config
        self.base_prefix = mlm.base_model_prefix
        self.add_module(self.base_prefix, mlm.base_model)
        self.head_name = find_head_name(mlm)
        self.add_module(self.head_name, getattr(mlm, self.head_name))
        decoder = self.decoder
        embeddings = mlm.get_input_embeddings()
        if tie_emb:
            decoder.weight = embeddings.weight
        elif decoder.weight is embeddings.weight:
            # The reference trains the decoder as its own matrix, initialised from the embeddings.
            decoder.weight = nn.Parameter(embeddings.weight.detach().clone())
        hidden = self.config.hidden_size
        # Unused in prompt mode; kept (and perturbed by full MeZO) as in the reference.
        self.classifier = nn.Linear(hidden, num_labels)
        nn.init.normal_(self.classifier.weight, std=getattr(self.config, "initializer_range", 0.02))
        nn.init.zeros_(self.classifier.bias)
        self.num_labels = num_labels
        self.output_mode = output_mode
        self.regression_bounds = regression_bounds
        self.l2_loss = l2_loss
        ids = None if label_word_ids is None else torch.as_tensor(label_word_ids, dtype=torch.long)
        self.register_buffer("label_word_ids", ids, persistent=False)
        self.uses_token_types = self.config.model_type not in ROBERTA_TYPES

    @property
    def encoder_model(self):
        return getattr(self, self.base_prefix)

    @property
    def decoder(self) -> nn.Linear:
        head = getattr(self, self.head_name)
        return head.decoder if self.head_name == "lm_head" else head.predictions.decoder

    def mask_features(self, input_ids, attention_mask=None, token_type_ids=None, mask_pos=None):
        """Hidden state at the mask (position 0 without one): what the head and probes read."""
        kw = {}
        if token_type_ids is not None and self.uses_token_types:
            kw["token_type_ids"] = token_type_ids
        hidden = self.encoder_model(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        pos = torch.zeros(len(input_ids), dtype=torch.long, device=hidden.device) if mask_pos is None \
            else mask_pos.reshape(-1)
        return hidden[torch.arange(len(hidden), device=hidden.device), pos]

    def head_features(self, h):
        """Input of the MLM decoder (the 1024-d post-LayerNorm vector for RoBERTa-large)."""
        head = getattr(self, self.head_name)
        if self.head_name == "lm_head":
            return head.layer_norm(F.gelu(head.dense(h)))
        return head.predictions.transform(h)

    def label_logits(self, feats):
        dec = self.decoder
        ids = self.label_word_ids
        # Only the label-word rows of the vocabulary projection: same numbers, |V|/#labels less work.
        return F.linear(feats, dec.weight[ids], dec.bias[ids])

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mask_pos=None, labels=None):
        h = self.mask_features(input_ids, attention_mask, token_type_ids, mask_pos)
        if self.label_word_ids is None:
            logits = self.classifier(h)
        else:
            logits = self.label_logits(self.head_features(h))
        loss = None
        if self.output_mode == "regression":
            lb, ub = self.regression_bounds
            logp = F.log_softmax(logits, dim=-1)
            if labels is not None:
                y = ((labels.float() - lb) / (ub - lb)).clamp(0, 1)
                target = torch.stack([1 - y, y], dim=-1)
                # KL(target || model) with the target given as probabilities (the reference's
                # log-target flag on probabilities is a bug; README, Differences from the original code).
                loss = F.kl_div(logp, target, reduction="batchmean")
            logits = logp[:, 1].exp() * (ub - lb) + lb
        elif labels is not None:
            if self.l2_loss:
                loss = F.mse_loss(logits, F.one_hot(labels, logits.shape[-1]).to(logits.dtype))
            else:
                loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def load_pretrained(kind, name_or_path, cache_dir=None, config_name=None, **kw):
    """from_pretrained with a one-line error when the weights cannot be had."""
    path = resolve_model_path(name_or_path)
    try:
        if config_name:
            from transformers import AutoConfig
            kw["config"] = AutoConfig.from_pretrained(resolve_model_path(config_name), cache_dir=cache_dir)
        return kind.from_pretrained(path, cache_dir=cache_dir, **kw)
    except (OSError, ValueError) as e:  # ValueError: a folder that is not a model (no model_type)
        where = "local folder" if os.path.isdir(path) else "hub id"
        hint = "" if os.path.isdir(path) else (
            "; the Hugging Face hub may be unreachable from here — offline, use "
            f"--model_name_or_path {EMBEDDED_NAME} (MODEL={EMBEDDED_NAME})")
        raise ModelSourceError(f"--model_name_or_path {name_or_path}: cannot load this {where} "
                               f"({str(e).splitlines()[0]}){hint}") from None


def load_tokenizer(name_or_path, cache_dir=None):
    from transformers import AutoTokenizer
    return load_pretrained(AutoTokenizer, name_or_path, cache_dir=cache_dir)


def build_model(model_args, training_args, task, spec):
    """The classifier for this run: PromptMLM reading ``spec``'s label words in prompt modes, a stock
    sequence classifier otherwise (``spec``: the run's PromptSpec, label-word ids set)."""
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    if not spec.prompt:
        kw = {"num_labels": task.num_labels}
        return load_pretrained(AutoModelForSequenceClassification, model_args.model_name_or_path,
                               model_args.cache_dir, model_args.config_name, **kw)
    mlm = load_pretrained(AutoModelForMaskedLM, model_args.model_name_or_path, model_args.cache_dir,
                          model_args.config_name)
    if training_args.random_model_init:
        mlm.init_weights()
    if spec.demo:
        enlarge_token_types(mlm)
    return PromptMLM(mlm, task.num_labels, list(spec.label_word_ids), task.output_mode,
                     getattr(task, "regression_bounds", None), model_args.l2_loss, training_args.tie_emb)


DEMO_SEGMENTS = 10


def enlarge_token_types(mlm, rows: int = DEMO_SEGMENTS) -> None:
    """Demonstrations put their sentences in segments 2, 3, ... (one per `*sep+*`), past BERT's two
    token-type rows. As the original did for every BERT model: a table of 10 rows, the pretrained rows
    copied, the others freshly initialised (N(0, 1), nn.Embedding's default). Models without
    token types (RoBERTa) are left alone."""
    table = getattr(getattr(mlm.base_model, "embeddings", None), "token_type_embeddings", None)
    if table is None or table.num_embeddings >= rows or mlm.config.model_type in ROBERTA_TYPES:
        return
    new = nn.Embedding(rows, table.embedding_dim).to(table.weight.device, table.weight.dtype)
    with torch.no_grad():
        new.weight[:table.num_embeddings] = table.weight
    mlm.base_model.embeddings.token_type_embeddings = new
    mlm.config.type_vocab_size = rows


def set_trainable(model, adapter_args) -> None:
    """Freezing rules (docs/behaviour.md, "Freezing rules"; LoRA and prefix tuning add their own parameters first)."""
    names = dict(model.named_parameters())
    prefix = getattr(model, "base_prefix", None) or model.base_model_prefix
    head = getattr(model, "head_name", None)
    for name, p in names.items():
        if adapter_args.prefix_tuning:
            p.requires_grad_("prefix" in name)
        elif adapter_args.apply_lora:
            frozen_part = name.startswith(prefix) or (
                adapter_args.lora_freeze_head and not name.startswith(prefix))
            p.requires_grad_("lora_" in name or not frozen_part)
        elif adapter_args.head_tuning:
            p.requires_grad_(head is not None and name.startswith(head + "."))
        else:
            p.requires_grad_(True)


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
