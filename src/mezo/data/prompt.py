"""How a run turns examples into model inputs, as one object: ``PromptSpec``.

Built once from the arguments (``from_args``, which also checks the template and the mapping);
the datasets take it, ``--save_model`` writes it into the export (``to_dict``) and prediction
reads it back (``from_dict``), so a saved model sees its inputs rendered exactly as in training.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from mezo.data import templates
from mezo.errors import UsageError

FEW_SHOT_TYPES = ("finetune", "prompt", "prompt-demo")


@dataclass(frozen=True)
class PromptSpec:
    few_shot_type: str = "prompt"            # finetune (CLS head), prompt, prompt-demo (with demonstrations)
    template: Optional[str] = None           # --template as given
    rendered_template: Optional[str] = None  # what is rendered: with one demo slot per label under --auto_demo
    mapping: Optional[str] = None            # --mapping as given
    label_words: Optional[Tuple[str, ...]] = None     # in label order (regression: low, high)
    label_word_ids: Optional[Tuple[int, ...]] = None  # their token ids (``with_tokenizer``)
    max_seq_length: int = 128
    first_sent_limit: Optional[int] = None
    other_sent_limit: Optional[int] = None
    truncate_head: bool = False
    double_demo: bool = False
    num_sample: int = 16
    demo_filter: bool = False
    demo_filter_rate: float = 0.5
    demo_filter_model: Optional[str] = None

    def __post_init__(self):
        if self.few_shot_type not in FEW_SHOT_TYPES:
            raise UsageError(f"--few_shot_type {self.few_shot_type!r}: expected {', '.join(FEW_SHOT_TYPES)}")
        if self.prompt and not self.rendered_template:
            raise UsageError(f"--template: required with --few_shot_type {self.few_shot_type}")

    @property
    def prompt(self) -> bool:
        """Rendered through a template and read at the mask (not a classification head)."""
        return self.few_shot_type != "finetune"

    @property
    def demo(self) -> bool:
        return self.few_shot_type == "prompt-demo"

    @property
    def max_length(self) -> int:
        """Token budget of one rendered input (doubled by --double_demo with demonstrations)."""
        return self.max_seq_length * 2 if self.demo and self.double_demo else self.max_seq_length

    @classmethod
    def from_args(cls, model_args, data_args, task) -> "PromptSpec":
        """The spec of a run: template and mapping checked against the task (no tokenizer needed)."""
        d = data_args
        fst = model_args.few_shot_type
        rendered = words = None
        if fst != "finetune" and d.template:   # no template: refused by __post_init__
            templates.validate_template(d.template, prompt=True)
            if not d.mapping:
                raise UsageError(f"--mapping: required with --few_shot_type {fst}")
            rendered = d.template
            if fst == "prompt-demo" and d.auto_demo:
                rendered = templates.auto_demo_template(d.template, task.num_labels)
            words = tuple(templates.label_words(templates.parse_mapping(d.mapping), task.label_list,
                                                task.output_mode))
        return cls(few_shot_type=fst, template=d.template, rendered_template=rendered, mapping=d.mapping,
                   label_words=words, **{k: getattr(d, k) for k in RENDERING})

    def with_tokenizer(self, tokenizer) -> "PromptSpec":
        """The same spec with the label words' token ids (each must be one token of ``tokenizer``)."""
        if not self.prompt:
            return self
        mapping = templates.parse_mapping(self.mapping)
        ids = tuple(templates.label_word_id(tokenizer, w, mapping) for w in self.label_words)
        return dataclasses.replace(self, label_word_ids=ids)

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), as the export stores it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PromptSpec":
        """Read back from ``to_dict`` output; other keys are ignored, missing ones take their defaults."""
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        for k in ("label_words", "label_word_ids"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


# the rendering flags of DataArguments, carried as they are
RENDERING = ("max_seq_length", "first_sent_limit", "other_sent_limit", "truncate_head", "double_demo",
             "num_sample", "demo_filter", "demo_filter_rate", "demo_filter_model")
