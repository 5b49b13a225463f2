"""`--save_model`: the trained run as a standard Hugging Face folder, loaded back for prediction.

The folder holds what any Hugging Face tool can read, plus one small JSON that says how the
model was prompted:

  * `config.json` + `model.safetensors`: `save_pretrained` of the stock `*ForMaskedLM` (prompt
    modes) or of the stock sequence classifier (`--few_shot_type finetune`), with the weights as
    trained: the MLM decoder is saved as its own matrix (`tie_word_embeddings: false`, as the
    run trains it untied), and LoRA is merged into the exported copy (W + alpha/r · B A; the live
    model is never merged, see mezo.models.lora);
  * the tokenizer files;
  * `prefix.safetensors` (prefix tuning only): the per-layer prefix keys and values as explicit
    P×hidden tensors (the reparameterisation MLP evaluated once), named as a direct
    (`--no_reparam`) injection names them; `load` re-applies them with mezo.models.prefix;
  * `mezo_export.json`: the run's `mezo.data.prompt.PromptSpec` (template, label words and their
    ids, few_shot_type, lengths and sentence limits), task and labels, and the demonstrations for
    prompt-demo.

`predict_logits` renders new sentences with the training code itself (mezo.data.datasets.build_dataset,
mezo.data.templates.render), so a saved model sees exactly the inputs it was trained on.
"""
import copy
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

from mezo.errors import UsageError

META_FILE = "mezo_export.json"
PREFIX_FILE = "prefix.safetensors"
FORMAT = 1


# ----------------------------------------------------------------------------- weights

def _lora_layers(model):
    """(name, layer) of every LoRA linear: anything carrying lora_A, lora_B and a scaling."""
    return [(n, m) for n, m in model.named_modules()
            if all(hasattr(m, a) for a in ("lora_A", "lora_B", "scaling"))]


def merged_state(model) -> dict:
    """CPU copy of the state dict with LoRA merged (W + scaling · B A) and the LoRA/prefix entries gone."""
    state = {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}
    for name, layer in _lora_layers(model):
        if getattr(layer, "merged", False):
            raise RuntimeError(f"{name}: LoRA weights are merged in the live model (mezo.models.lora forbids it)")
        delta = (layer.lora_B.detach().float() @ layer.lora_A.detach().float()) * layer.scaling
        if getattr(layer, "fan_in_fan_out", False):
            delta = delta.T
        w = state[f"{name}.weight"]
        state[f"{name}.weight"] = (w.float() + delta.cpu()).to(w.dtype)
        del state[f"{name}.lora_A"], state[f"{name}.lora_B"]
    return {n: t for n, t in state.items() if "prefix" not in n}


@torch.no_grad()
def prefix_tensors(model) -> dict:
    """Every layer's prefix keys/values as explicit tensors, keyed `<block>.prefix_keys|values`."""
    from mezo.models.prefix import prefix_states
    embeds = getattr(model, "prefix_input_embeds", None)
    out = {}
    for name, block in model.named_modules():
        if hasattr(block, "prefix_keys") or hasattr(block, "prefix_mlp_keys"):
            keys, values = prefix_states(block, embeds if hasattr(block, "prefix_mlp_keys") else None)
            out[f"{name}.prefix_keys"] = keys.detach().to("cpu", copy=True).contiguous()
            out[f"{name}.prefix_values"] = values.detach().to("cpu", copy=True).contiguous()
    return out


def stock_model(model):
    """A stock Hugging Face model holding `model`'s trained weights (LoRA merged, no prefixes)."""
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    state = merged_state(model)
    config = copy.deepcopy(model.config)
    if hasattr(model, "head_name"):  # PromptMLM: encoder + MLM head, its unused classifier dropped
        config.tie_word_embeddings = model.decoder.weight is model.encoder_model.get_input_embeddings().weight
        stock = AutoModelForMaskedLM.from_config(config)
        state = {n: t for n, t in state.items() if not n.startswith("classifier.")}
    else:
        stock = AutoModelForSequenceClassification.from_config(config)
    stock.to(next(model.parameters()).dtype)
    stock.load_state_dict(state, strict=True)
    return stock


# ----------------------------------------------------------------------------- save

def describe(spec, supports, task, training_args, adapter_args, source_model) -> dict:
    """The JSON that says how inputs were rendered (the run's PromptSpec) and what the logits mean."""
    return {
        "format": FORMAT,
        "kind": "prompt-mlm" if spec.prompt else "sequence-classification",
        "task": task.name, "output_mode": task.output_mode, "label_list": list(task.label_list),
        **spec.to_dict(),
        "pair": getattr(task, "text_b_col", None) is not None,
        "seed": training_args.seed,
        "demonstrations": [{"text_a": e.text_a, "text_b": e.text_b, "label": e.label} for e in supports]
        if spec.demo else None,
        "prefix": {"num_prefix": adapter_args.num_prefix, "file": PREFIX_FILE} if adapter_args.prefix_tuning else None,
        "lora": {"r": adapter_args.lora_r, "alpha": adapter_args.lora_alpha, "merged": True}
        if adapter_args.apply_lora else None,
        "source_model": source_model,
    }


def save(model, tokenizer, datasets, task, spec, model_args, data_args, training_args, adapter_args,
         out_dir=None) -> str:
    """Write the export folder (default `<output_dir>/model`); returns its path."""
    from safetensors.torch import save_file
    out_dir = out_dir or os.path.join(training_args.output_dir, "model")
    ds = next(iter(datasets.values()), None)
    supports = (ds.supports if ds is not None else task.read_examples(data_args.data_dir, "train")) if spec.demo else []
    meta = describe(spec, supports, task, training_args, adapter_args, model_args.model_name_or_path)
    # Written beside, then swapped in: a crash leaves the old folder, never a mix of two runs' files.
    tmp = out_dir.rstrip(os.sep) + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    stock_model(model).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    prefixes = prefix_tensors(model)
    if prefixes:
        save_file(prefixes, os.path.join(tmp, PREFIX_FILE))
    with open(os.path.join(tmp, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


# ----------------------------------------------------------------------------- load

@dataclass
class Exported:
    model: torch.nn.Module
    tokenizer: object
    meta: dict
    task: object
    spec: object          # the run's PromptSpec, read back from the meta

    @property
    def label_names(self) -> List[str]:
        """How each logit is shown: `label (word)` in prompt modes, the label otherwise."""
        words = self.meta.get("label_words") or [None] * len(self.task.label_list)
        return [f"{lab} ({w})" if w else str(lab) for lab, w in zip(self.task.label_list, words)]


def read_meta(model_dir: str) -> dict:
    path = os.path.join(model_dir, META_FILE)
    if not os.path.isdir(model_dir):
        raise UsageError(f"--model {model_dir}: no such folder")
    if not os.path.isfile(path):
        hint = " (did you mean its model/ folder?)" if os.path.isfile(os.path.join(model_dir, "model", META_FILE)) else ""
        raise UsageError(f"--model {model_dir}: no {META_FILE} (not a folder written by run.py --save_model){hint}")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"--model {model_dir}: cannot read {META_FILE} ({e})") from None
    if meta.get("format") != FORMAT:
        raise UsageError(f"--model {model_dir}: {META_FILE} format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def apply_prefix(model, model_dir: str, num_prefix: int) -> None:
    """Re-inject direct prefixes (mezo.models.prefix) and load the saved tensors into them."""
    from safetensors.torch import load_file

    from mezo.models.prefix import inject_prefix
    saved = load_file(os.path.join(model_dir, PREFIX_FILE))
    inject_prefix(model, num_prefix=num_prefix, reparam=False)
    params = {n: p for n, p in model.named_parameters() if "prefix" in n}
    if set(params) != set(saved):
        raise UsageError(f"--model {model_dir}: {PREFIX_FILE} holds {sorted(saved)[:2]}..., "
                         f"the model expects {sorted(params)[:2]}...")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name])


def load(model_dir: str, device: Optional[str] = None) -> Exported:
    """The exported classifier in eval mode, ready for `predict_logits`."""
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

    from mezo.data.prompt import PromptSpec
    from mezo.data.tasks import get_task
    from mezo.models.prompt_mlm import PromptMLM, load_pretrained, load_tokenizer
    meta = read_meta(model_dir)
    spec = PromptSpec.from_dict(meta)
    task = get_task(meta["task"])
    if list(task.label_list) != list(meta["label_list"]):
        raise UsageError(f"--model {model_dir}: labels {meta['label_list']} differ from task "
                         f"{task.name}'s {task.label_list}")
    tokenizer = load_tokenizer(model_dir)
    if meta["kind"] == "prompt-mlm":
        mlm = load_pretrained(AutoModelForMaskedLM, model_dir)
        model = PromptMLM(mlm, task.num_labels, list(spec.label_word_ids), task.output_mode,
                          getattr(task, "regression_bounds", None),
                          tie_emb=bool(getattr(mlm.config, "tie_word_embeddings", False)))
    else:
        model = load_pretrained(AutoModelForSequenceClassification, model_dir)
    if meta.get("prefix"):
        apply_prefix(model, model_dir, meta["prefix"]["num_prefix"])
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return Exported(model, tokenizer, meta, task, spec)


# ----------------------------------------------------------------------------- predict

def examples_from(texts: Sequence, pair: bool):
    """InputExamples (no label) from sentences or (sentence, sentence) pairs."""
    from mezo.data.tasks import InputExample
    out = []
    for i, t in enumerate(texts):
        a, b = (t if pair else (t, None))
        out.append(InputExample(guid=f"input-{i}", text_a=a, text_b=b))
    return out


@torch.no_grad()
def predict_logits(exp: Exported, texts: Sequence, batch_size: int = 32) -> np.ndarray:
    """Logits (N, labels) or regression scores (N,) for `texts`, rendered as in training."""
    from mezo.data.datasets import Collator, average_over_samples, build_dataset
    from mezo.data.tasks import InputExample
    m = exp.meta
    if not texts:
        return np.zeros((0,) if m["output_mode"] == "regression" else (0, len(m["label_list"])))
    spec = dataclasses.replace(exp.spec, demo_filter=False)   # the filter needs training's embedding files
    supports = [InputExample(guid=f"demo-{i}", **d) for i, d in enumerate(m["demonstrations"] or [])]
    ds = build_dataset("test", examples_from(texts, m["pair"]), supports if spec.demo else None, exp.tokenizer,
                       task=exp.task, spec=spec, seed=m["seed"])
    tok = exp.tokenizer
    collate = Collator(tok.pad_token_id, getattr(tok, "pad_token_type_id", 0))
    device = next(exp.model.parameters()).device
    chunks = []
    for start in range(0, len(ds), batch_size):
        batch = collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
        out = exp.model(**{k: v.to(device) for k, v in batch.items()})
        logits = out.logits if hasattr(out, "logits") else out[0]
        chunks.append(logits.float().cpu().numpy())
    logits = np.concatenate(chunks)
    return average_over_samples(logits, np.zeros(len(logits)), ds.num_sample)[0]


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the label logits (what the training loss normalises)."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
