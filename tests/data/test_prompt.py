"""PromptSpec: the run's rendering settings, built once from the arguments and read back from JSON."""
import json
from types import SimpleNamespace

import pytest

from mezo.data import templates
from mezo.data.prompt import RENDERING, PromptSpec
from mezo.data.tasks import get_task
from mezo.errors import UsageError

SENT = "*cls**sent_0*_It_was*mask*.*sep+*"
MAPPING = "{'0':'terrible','1':'great'}"


def _args(few_shot_type="prompt", template=SENT, mapping=MAPPING, auto_demo=True, **rendering):
    data = dict(template=template, mapping=mapping, auto_demo=auto_demo, max_seq_length=128, first_sent_limit=None,
                other_sent_limit=None, truncate_head=False, double_demo=False, num_sample=16, demo_filter=False,
                demo_filter_rate=0.5, demo_filter_model=None)
    data.update(rendering)
    return SimpleNamespace(few_shot_type=few_shot_type), SimpleNamespace(**data)


def test_from_args_renders_demo_slots_and_orders_label_words(roberta_tokenizer):
    task = get_task("SST-2")
    spec = PromptSpec.from_args(*_args("prompt-demo", mapping="{'1':'great','0':'terrible'}", double_demo=True), task)
    assert spec.demo and spec.prompt and spec.max_length == 256
    assert spec.template == SENT and spec.rendered_template == templates.auto_demo_template(SENT, 2)
    assert spec.label_words == ("terrible", "great")         # label order, not the mapping's
    ids = spec.with_tokenizer(roberta_tokenizer).label_word_ids
    assert list(ids) == templates.label_word_ids(roberta_tokenizer, templates.parse_mapping(MAPPING), ["0", "1"])
    plain = PromptSpec.from_args(*_args("prompt-demo", auto_demo=False), task)
    assert plain.rendered_template == SENT                       # --auto_demo false: the template as given
    assert PromptSpec.from_args(*_args("prompt"), task).max_length == 128


def test_finetune_needs_no_template_and_has_no_label_words(roberta_tokenizer):
    spec = PromptSpec.from_args(*_args("finetune", template=None, mapping=None), get_task("SST-2"))
    assert not spec.prompt and spec.rendered_template is None and spec.label_words is None
    assert spec.with_tokenizer(roberta_tokenizer) is spec


@pytest.mark.parametrize("kw, match", [
    (dict(template=None), "--template: required"),
    (dict(mapping=None), "--mapping: required"),
    (dict(mapping="{'0':'bad','2':'good'}"), "--mapping .* do not match the task's labels"),
    (dict(template="*cls**sent_0*"), "no \\*mask\\*"),
])
def test_from_args_refuses_bad_settings_naming_the_flag(kw, match):
    with pytest.raises(UsageError, match=match):
        PromptSpec.from_args(*_args("prompt", **kw), get_task("SST-2"))


def test_json_round_trip_is_the_same_spec(roberta_tokenizer):
    spec = PromptSpec.from_args(*_args("prompt-demo", first_sent_limit=40, num_sample=4), get_task("SST-2"))
    spec = spec.with_tokenizer(roberta_tokenizer)
    back = PromptSpec.from_dict(json.loads(json.dumps({"format": 1, **spec.to_dict()})))
    assert back == spec and isinstance(back.label_word_ids, tuple)
    assert set(RENDERING) < set(spec.to_dict())


def test_unknown_few_shot_type_is_refused():
    with pytest.raises(UsageError, match="--few_shot_type 'demo'"):
        PromptSpec(few_shot_type="demo")
