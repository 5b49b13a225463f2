"""--save_model and tools/predict.py: train two steps, save, reload, predict the in-memory logits.

The in-memory model's logits come from the run itself (`--save_logit`: the test-set logits of
the best-dev weights, computed by the Trainer); the reloaded folder must give the same numbers
on the same test sentences, for full fine-tuning, LoRA (merged at export) and prefix tuning.
"""
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from mezo.cli import run
import tiny
from mezo.models import export
from mezo.data.tasks import get_task
from mezo.cli import predict
from mezo.config.arguments import parse_args
from mezo.data.prompt import PromptSpec

TEMPLATE = "*cls**sent_0*_It_was*mask*.*sep+*"
MAPPING = "{0:'terrible',1:'great'}"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return tiny.small_uci_split(tmp_path_factory.mktemp("data") / "uci-sentiment" / "16-42", 12)


def run_argv(model_dir, data, out, *extra):
    return (["--model_name_or_path", model_dir, "--task_name", "uci-sentiment", "--data_dir", data,
                   "--few_shot_type", "prompt", "--template", TEMPLATE, "--mapping", MAPPING,
                   "--output_dir", str(out), "--log_file", str(out / "log"), "--do_train", "--do_predict",
                   "--max_steps", "2", "--zero_order_optim", "--efficient_zero_order", "--learning_rate", "1e-2",
                   "--per_device_train_batch_size", "8", "--optimizer", "sgd", "--lr_scheduler_type", "constant",
                   "--seed", "42", "--disable_tqdm", "true", "--per_device_eval_batch_size", "5",
                   "--save_model", "--save_logit", *extra])


def train_and_save(model_dir, data, out, *extra):
    rc = run.main(run_argv(model_dir, data, out, *extra))
    assert rc == 0
    return np.load(out / "uci-sentiment--1--1.npy"), out / "model"


def sentences_of(data):
    return [e.text_a for e in get_task("uci-sentiment").read_examples(data, "test")]


VARIANTS = {
    "full": [],
    "lora": ["--apply_lora", "--lora_r", "4", "--lora_alpha", "16"],
    "prefix": ["--prefix_tuning", "--num_prefix", "3"],
    "finetune": ["--few_shot_type", "finetune"],  # no prompt: the stock sequence classifier is saved
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_save_load_predict_same_logits(variant, tmp_path, small_data, tiny_bert_dir, one_thread):
    memory, folder = train_and_save(tiny_bert_dir, small_data, tmp_path, *VARIANTS[variant])
    texts = sentences_of(small_data)
    results = predict.predict(str(folder), texts, batch_size=4)  # other batches than in training: padding differs
    logits = np.stack([r[2] for r in results])
    assert logits.shape == memory.shape == (len(texts), 2)
    np.testing.assert_allclose(logits, memory, rtol=0, atol=2e-6)
    labels = [r[0] for r in results]
    assert labels == [int(np.argmax(m)) for m in memory]  # label_list of uci-sentiment is [0, 1]
    for (_, probs, lg) in results:
        e = np.exp(lg - lg.max())
        assert list(probs.values()) == pytest.approx(list(e / e.sum()), abs=1e-6)

    saved = load_file(folder / "model.safetensors")
    pretrained = load_file(os.path.join(tiny_bert_dir, "model.safetensors"))
    assert not any("lora" in k or "prefix" in k or (k.startswith("classifier") and variant != "finetune")
                   for k in saved)
    config = json.loads((folder / "config.json").read_text())
    meta = json.loads((folder / export.META_FILE).read_text())
    assert meta["task"] == "uci-sentiment" and meta["label_list"] == [0, 1] and meta["max_seq_length"] == 128
    if variant == "finetune":
        assert config["architectures"] == ["BertForSequenceClassification"] and meta["kind"] == "sequence-classification"
        assert "classifier.weight" in saved and meta["label_words"] is None
        return
    assert config["tie_word_embeddings"] is False and config["architectures"] == ["BertForMaskedLM"]
    assert (meta["template"], meta["label_words"], meta["few_shot_type"]) == (TEMPLATE, ["terrible", "great"], "prompt")
    query = "bert.encoder.layer.0.attention.self.query.weight"
    if variant == "full":  # MeZO trained every weight; the decoder is its own (untied) matrix
        assert not np.allclose(saved[query].numpy(), pretrained[query].numpy())
        assert not np.allclose(saved["cls.predictions.decoder.weight"].numpy(),
                               saved["bert.embeddings.word_embeddings.weight"].numpy())
    if variant == "lora":  # the frozen W changed only by the merged B A
        assert not np.allclose(saved[query].numpy(), pretrained[query].numpy(), atol=1e-7)
        key = query.replace("query", "key")
        np.testing.assert_array_equal(saved[key].numpy(), pretrained[key].numpy())
        assert meta["lora"] == {"r": 4, "alpha": 16, "merged": True}
    if variant == "prefix":  # encoder frozen; the prefixes are explicit P x hidden tensors per layer
        np.testing.assert_array_equal(saved[query].numpy(), pretrained[query].numpy())
        prefixes = load_file(folder / export.PREFIX_FILE)
        assert sorted(prefixes) == sorted(f"bert.encoder.layer.{i}.attention.prefix_{kv}"
                                          for i in (0, 1) for kv in ("keys", "values"))
        assert all(t.shape == (3, 32) for t in prefixes.values())
        # Without the prefixes re-applied the same folder predicts something else.
        bare = tmp_path / "bare"
        shutil.copytree(folder, bare)
        meta["prefix"] = None
        (bare / export.META_FILE).write_text(json.dumps(meta))
        other = np.stack([r[2] for r in predict.predict(str(bare), texts)])
        assert np.abs(other - memory).max() > 1e-4


def test_cli_prints_label_and_probabilities(tmp_path, small_data, tiny_bert_dir, one_thread, capsys):
    memory, folder = train_and_save(tiny_bert_dir, small_data, tmp_path)
    texts = sentences_of(small_data)[:3]
    sentences = tmp_path / "s.txt"
    sentences.write_text("\n".join(texts[1:]) + "\n\n")
    capsys.readouterr()
    assert predict.main(["--model", str(folder), texts[0], "--file", str(sentences)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, text, m in zip(lines, texts, memory):
        best, probs, shown = line.split("\t")
        p = np.exp(m - m.max()) / np.exp(m - m.max()).sum()
        assert shown == text and best == ["0 (terrible)", "1 (great)"][int(np.argmax(m))]
        assert probs == f"0 (terrible)={p[0]:.4f} 1 (great)={p[1]:.4f}"

    assert predict.main(["--model", str(folder), "--json", texts[0]]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["input"] == texts[0] and row["label"] == int(np.argmax(memory[0]))

    # Bad input: one line naming the flag, exit 2.
    for argv, needle in ([["--model", str(tmp_path / "nope"), "x"], "--model"],
                         [["--model", str(tmp_path), "x"], "did you mean its model/ folder?"],
                         [["--model", str(folder), "--pair", "a\tb"], "--pair"],
                         [["--model", str(folder)], "no input"],
                         [["--model", str(folder), "--file", str(tmp_path / "none.txt")], "--file"]):
        assert predict.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1


def test_pair_inputs_are_split_at_the_tab():
    assert predict.read_inputs(["A man sleeps.\tNobody sleeps."], None, pair=True) == [
        ("A man sleeps.", "Nobody sleeps.")]
    with pytest.raises(predict.UsageError, match="--pair: input 1"):
        predict.read_inputs(["no tab here"], None, pair=True)


def test_prompt_demo_model_predicts_with_its_stored_demonstrations(tmp_path, small_data, tiny_roberta_dir, one_thread):
    """prompt-demo: the folder keeps the training examples; the same seeded demo draws give the same logits."""
    demo_flags = ("--few_shot_type", "prompt-demo", "--num_sample", "2", "--max_seq_length", "250",
                  "--first_sent_limit", "40", "--other_sent_limit", "40")
    memory, folder = train_and_save(tiny_roberta_dir, small_data, tmp_path, *demo_flags)
    texts = sentences_of(small_data)
    logits = np.stack([r[2] for r in predict.predict(str(folder), texts)])
    np.testing.assert_allclose(logits, memory, rtol=0, atol=2e-6)
    meta = json.loads((folder / export.META_FILE).read_text())
    train = get_task("uci-sentiment").read_examples(small_data, "train")
    assert [d["text_a"] for d in meta["demonstrations"]] == [e.text_a for e in train]
    assert meta["rendered_template"].startswith(TEMPLATE) and "*label_1*" in meta["rendered_template"]
    # the folder carries the run's PromptSpec: read back, it is the one the run's arguments build
    model_args, data_args, _, _ = parse_args(run_argv(tiny_roberta_dir, small_data, tmp_path, *demo_flags))
    exp = export.load(str(folder), device="cpu")
    want = PromptSpec.from_args(model_args, data_args, get_task("uci-sentiment")).with_tokenizer(exp.tokenizer)
    assert exp.spec == want and want.demo and want.num_sample == 2 and want.first_sent_limit == 40
