"""The original's flags this project does not implement, one mixin per argument group.

Each is declared once with the reason it is refused (``fields.refused``); ``check_refused`` is the
one check: a non-default value stops the run with that reason, before anything loads, instead of
being silently ignored.
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional

from mezo.config.fields import REFUSED, refused
from mezo.errors import UsageError

_SFC = "surface-form calibration (OPT-era) is not implemented"
_GPT3 = "GPT-3 style in-context prompts are not implemented"
_ENTK = "the eNTK kernel trainer is not implemented"


@dataclass(kw_only=True)
class LegacyModelArguments:
    random_segment: bool = refused(False, "BERT: random re-init of an enlarged token-type table",
                                   "BERT token-type re-initialisation is not implemented")
    use_task_word: bool = refused(False, "legacy lm_head path; regression scores are always produced here",
                                  "legacy; STS-B scores are always produced from the two label words")
    sfc: bool = refused(False, "surface-form calibration (OPT-era)", _SFC)
    icl_sfc: bool = refused(False, "in-context surface-form calibration (OPT-era)", _SFC)


@dataclass(kw_only=True)
class LegacyDataArguments:
    num_demo: int = refused(1, "demonstrations per label (only 1 supported)",
                            "exactly one demonstration per label is used (as in the reference)")
    template_path: Optional[str] = refused(None, "file of templates", "template files are not implemented; pass --template")
    mapping_path: Optional[str] = refused(None, "file of mappings", "mapping files are not implemented; pass --mapping")
    prompt_path: Optional[str] = refused(None, "file of template<TAB>mapping lines",
                                         "prompt files are not implemented; pass --template and --mapping")
    template_id: Optional[int] = refused(None, "line of --template_path", "template files are not implemented")
    mapping_id: Optional[int] = refused(None, "line of --mapping_path", "mapping files are not implemented")
    prompt_id: Optional[int] = refused(None, "line of --prompt_path", "prompt files are not implemented")
    top_n_template: Optional[int] = refused(None, "template ensemble size", "template ensembles are not implemented")
    sfc_prompt: Optional[str] = refused(None, "calibration prompt", "surface-form calibration is not implemented")
    debug_mode: bool = refused(False, "prints while filtering demonstrations",
                               "the demonstration filter's debugging prints are not implemented")
    use_full_length: Optional[bool] = refused(None, "unused in the reference", "unused in the reference")
    gpt3_in_context_head: bool = refused(False, "GPT-3 style in-context prompts", _GPT3)
    gpt3_in_context_tail: bool = refused(False, "GPT-3 style in-context prompts", _GPT3)
    gpt3_in_context_num: int = refused(32, "GPT-3 style in-context prompts", _GPT3)
    gpt3_demo_separator: str = refused("\n\n\n", "GPT-3 style in-context prompts", _GPT3)


@dataclass(kw_only=True)
class LegacyTrainingArguments:
    fix_layers: int = refused(0, "exclude embeddings and the bottom n layers from Adam",
                              "layer exclusion from the optimizer is not implemented")
    optimizer_variant: str = refused("", "signgd", "sign-GD is not implemented")
    hf_inference_model: bool = refused(False, "OPT multi-GPU fp16 loading",
                                       "OPT multi-GPU loading is not part of the medium-model code")
    efficient_zero_order_fp16: bool = refused(False, "OPT fp16 loading",
                                              "OPT fp16 loading is not part of the medium-model code")
    untie_emb: bool = refused(False, "OPT: untie embeddings", "OPT only")
    kernel_formula: str = refused("sgd", "eNTK experiments", _ENTK)
    kernel_solver: str = refused("logistic", "eNTK experiments", _ENTK)
    load_kernels: Optional[str] = refused(None, "eNTK experiments", _ENTK)
    overwrite_kernels: bool = refused(False, "eNTK experiments", _ENTK)
    exclude_embeddings: bool = refused(False, "eNTK experiments", _ENTK)
    exclude_head: bool = refused(False, "eNTK experiments", _ENTK)
    only_biases: bool = refused(False, "eNTK experiments", _ENTK)
    exclude_first_layers: int = refused(-1, "eNTK experiments", _ENTK)
    sync_embedding_layers: bool = refused(False, "eNTK experiments", _ENTK)
    kernel_regularization: float = refused(0.0, "eNTK experiments", _ENTK)
    kernel_gamma: float = refused(1.0, "eNTK experiments", _ENTK)
    binary_classification: bool = refused(False, "eNTK experiments", _ENTK)
    adjust_for_init: bool = refused(False, "eNTK experiments", _ENTK)
    f0_scaling: float = refused(1.0, "eNTK experiments", _ENTK)
    num_hvp_vecs: int = refused(128, "unused in the reference", "unused in the reference")
    mc_tol: float = refused(0.1, "unused in the reference", "unused in the reference")


def refused_fields(group_cls) -> dict:
    """name -> why, for the refused flags of an argument dataclass."""
    return {f.name: f.metadata[REFUSED] for f in dataclasses.fields(group_cls) if REFUSED in f.metadata}


def check_refused(*groups) -> None:
    """The first refused flag set to a non-default value stops the run with its reason (one line)."""
    for group in groups:
        for f in dataclasses.fields(group):
            if REFUSED in f.metadata and getattr(group, f.name) != f.default:
                raise UsageError(f"--{f.name} {getattr(group, f.name)!r}: not supported ({f.metadata[REFUSED]})")
