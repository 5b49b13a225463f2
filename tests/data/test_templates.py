"""Template language, label words and demo templates on the offline tokenizers (docs/behaviour.md,
"Prompt templates and label words" and "Demonstrations").

Expected ids are written out literally (the offline BPE is deterministic) and cross-checked
against ids composed by hand from the tokenizer's encoding of the individual pieces.
"""
import pytest

from mezo.errors import UsageError
from mezo.data.templates import (auto_demo_template, label_word_ids, parse_mapping, parse_template,
                           render, render_finetune, uses_token_type_ids, validate_template)

SENT = "*cls**sent_0*_It_was*mask*.*sep+*"
NLI = "*cls**sent-_0*?*mask*,*+sentl_1**sep+*"
PARA = "*cls**sent_0**mask*,*+sentl_1**sep+*"
TREC = "*cls**mask*:*+sent_0**sep+*"

CLS, PAD, SEP, UNK, MASK = 0, 1, 2, 3, 4


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


def tid(tok, token):
    return tok.convert_tokens_to_ids(token)


# ----------------------------------------------------------------------------- full templates

def test_sst2_sent_template_literal_ids(roberta_tokenizer):
    tok = roberta_tokenizer
    out = render(SENT, ["a gorgeous film ."], tok, max_length=128)
    # <s> a Ġgorgeous Ġfilm Ġ. ĠIt Ġwas <mask> . </s>
    assert out["input_ids"] == [0, 69, 408, 412, 295, 274, 265, 4, 18, 2]
    assert tok.convert_ids_to_tokens(out["input_ids"]) == [
        "<s>", "a", "Ġgorgeous", "Ġfilm", "Ġ.", "ĠIt", "Ġwas", "<mask>", ".", "</s>"]
    composed = ([tok.cls_token_id] + enc(tok, "a gorgeous film .") + enc(tok, " It was")
                + [tok.mask_token_id] + [tid(tok, ".")] + [tok.sep_token_id])
    assert out["input_ids"] == composed
    assert out["attention_mask"] == [1] * 10
    assert out["mask_pos"] == 7
    assert "token_type_ids" not in out


def test_nli_template(roberta_tokenizer):
    tok = roberta_tokenizer
    out = render(NLI, ["The cat sat.", "A cat is sitting."], tok, max_length=256)
    assert out["input_ids"] == [0, 268, 73, 303, 380, 35, 4, 16, 225, 69, 303, 266, 409, 18, 2]
    composed = ([CLS] + enc(tok, "The cat sat") + [tid(tok, "?"), MASK, tid(tok, ",")]
                + enc(tok, " a cat is sitting.") + [SEP])
    assert out["input_ids"] == composed
    assert out["mask_pos"] == 6


def test_para_template(roberta_tokenizer):
    tok = roberta_tokenizer
    out = render(PARA, ["The cat sat.", "A cat is sitting."], tok)
    assert out["input_ids"] == ([CLS] + enc(tok, "The cat sat.") + [MASK, tid(tok, ",")]
                                + enc(tok, " a cat is sitting.") + [SEP])


def test_trec_template_mask_at_1(roberta_tokenizer):
    tok = roberta_tokenizer
    out = render(TREC, ["What is the capital of France?"], tok)
    assert out["input_ids"] == [0, 4, 30, 225, 394, 266, 283, 406, 377, 398, 35, 2]
    assert out["input_ids"] == ([CLS, MASK, tid(tok, ":")]
                                + enc(tok, " What is the capital of France?") + [SEP])
    assert out["mask_pos"] == 1


# ----------------------------------------------------------------------------- every piece kind

@pytest.mark.parametrize("piece,expected", [
    ("cls", [0]), ("bos", [0]), ("eos", [2]), ("mask", [4]), ("sep", [2]), ("sep+", [2]),
])
def test_special_pieces(roberta_tokenizer, piece, expected):
    out = render(f"*{piece}**mask*", ["x"], roberta_tokenizer)
    assert out["input_ids"] == expected + [MASK]


S0, S1 = "the cat sat.", "A cat is sitting."


@pytest.mark.parametrize("piece,text,expected", [
    ("sent_0", "the cat sat.", [88, 277, 303, 380, 18]),
    ("+sent_0", " the cat sat.", [283, 303, 380, 18]),
    ("sent-_0", "the cat sat", [88, 277, 303, 380]),
    ("sent_1", "A cat is sitting.", [37, 303, 266, 409, 18]),
    ("sentl_1", "a cat is sitting.", [69, 303, 266, 409, 18]),
    ("+sentl_1", " a cat is sitting.", [225, 69, 303, 266, 409, 18]),
    ("sentl-_1", "a cat is sitting", [69, 303, 266, 409]),
    ("sentu_0", "The cat sat.", [268, 73, 303, 380, 18]),
    ("+sentu_0", " The cat sat.", [371, 303, 380, 18]),
    ("+sentu-_0", " The cat sat", [371, 303, 380]),
])
def test_sentence_pieces(roberta_tokenizer, piece, text, expected):
    tok = roberta_tokenizer
    out = render(f"*{piece}**mask*", [S0, S1], tok)
    assert out["input_ids"] == expected + [MASK]
    assert expected == enc(tok, text)


def test_variable_without_underscore_is_glued(roberta_tokenizer):
    tok = roberta_tokenizer
    # "_It_was" gives " It" " was"; "It_was" gives "It" " was"
    a = render("*mask*_It_was", ["x"], roberta_tokenizer)["input_ids"]
    b = render("*mask*It_was", ["x"], roberta_tokenizer)["input_ids"]
    assert a == [MASK, 274, 265] == [MASK] + enc(tok, " It") + enc(tok, " was")
    assert b == [MASK, 267, 265] == [MASK] + enc(tok, "It was")


def test_label_piece(roberta_tokenizer):
    out = render("*cls**sent_0**label_1**mask**label_0*", ["a"], roberta_tokenizer,
                 label_word_ids=[413, 375])
    assert out["input_ids"] == [CLS, 69, 375, MASK, 413]
    assert out["mask_pos"] == 3


def test_single_char_literal_is_raw_token(roberta_tokenizer):
    tok = roberta_tokenizer
    # '.' as a token string is '.' (18), not the BPE of ' .' ('Ġ.', 295)
    assert render("*mask*.", ["x"], tok)["input_ids"] == [MASK, 18]
    assert render("*mask*_.", ["x"], tok)["input_ids"] == [MASK, 295] == [MASK] + enc(tok, " .")
    assert render("*mask*?*mask*:", ["x"], tok)["input_ids"] == [MASK, 35, MASK, 30]
    # a lone '_' is the one-character string ' ', which is no byte-level token -> <unk>
    assert render("*mask*_", ["x"], tok)["input_ids"] == [MASK, UNK]


def test_literal_resembling_sent_is_literal(roberta_tokenizer):
    tok = roberta_tokenizer
    out = render("*mask*_sitting_is", ["x"], tok)["input_ids"]
    assert out == [MASK] + enc(tok, " sitting is")


def test_empty_sentence_and_empty_pieces(roberta_tokenizer):
    out = render("***cls****sent_0***mask***sep*", [""], roberta_tokenizer)
    assert out["input_ids"] == [CLS, MASK, SEP]


# ----------------------------------------------------------------------------- limits, truncation

def test_per_sentence_limits(roberta_tokenizer):
    tok = roberta_tokenizer
    out = render(NLI, ["The cat sat.", "A cat is sitting."], tok,
                 first_sent_limit=2, other_sent_limit=3)
    # sent-_0 "The cat sat" -> Th e | +sentl_1 " a cat is sitting." -> Ġ a Ġcat
    assert out["input_ids"] == [CLS, 268, 73, 35, MASK, 16, 225, 69, 303, SEP]
    # limits apply to every sentence form, never to literals
    out = render("*cls*_It_was_It_was*+sentu-_0**mask**sentl_1*", ["the cat sat.", "A cat"],
                 tok, first_sent_limit=1, other_sent_limit=1)
    assert out["input_ids"] == [CLS, 274, 265, 274, 265, 371, MASK, 69]


def test_head_and_tail_truncation(roberta_tokenizer):
    tok = roberta_tokenizer
    s = ["The cat sat."]  # Th e Ġcat Ġsat .
    head = render("*cls**mask**sent_0**sep*", s, tok, max_length=4)
    assert head["input_ids"] == [CLS, MASK, 268, 73]
    assert head["attention_mask"] == [1, 1, 1, 1]
    assert head["mask_pos"] == 1
    tail = render("*cls**sent_0**mask**sep*", s, tok, max_length=4, truncate_head=True)
    assert tail["input_ids"] == [380, 18, MASK, SEP]
    assert tail["mask_pos"] == 2
    assert render("*cls**sent_0**mask**sep*", s, tok, max_length=8)["input_ids"] == \
        [CLS, 268, 73, 303, 380, 18, MASK, SEP]


def test_first_mask_is_used(roberta_tokenizer):
    out = render("*cls**mask**mask*", ["x"], roberta_tokenizer)
    assert out["mask_pos"] == 1


def test_mask_lost_to_truncation(roberta_tokenizer):
    with pytest.raises(UsageError) as e:
        render(SENT, ["a gorgeous film ."], roberta_tokenizer, max_length=5, guid="dev-7")
    msg = str(e.value)
    assert msg == ("--max_seq_length: the *mask* token of example 'dev-7' was truncated away "
                   "(rendered length 10 > max length 5, tail cut)")
    with pytest.raises(UsageError, match="--max_seq_length: .*max length 3, head cut"):
        render("*cls**mask**sent_0**sep*", ["The cat sat."], roberta_tokenizer, max_length=3,
               truncate_head=True, guid="x")


# ----------------------------------------------------------------------------- bad templates

def test_template_without_mask(roberta_tokenizer):
    with pytest.raises(UsageError) as e:
        render("*cls**sent_0*", ["x"], roberta_tokenizer)
    assert str(e.value) == "--template '*cls**sent_0*': no *mask* in a prompt template"
    # not required for a non-prompt parse
    assert validate_template("*cls**sent_0*", prompt=False)


@pytest.mark.parametrize("piece", ["+sent-_0", "sentx_0", "sent_0x", "sent_", "sent",
                                   "+sentl-_0", "sentu-_0", "sent-l_0", "sentence"])
def test_unknown_sentence_forms(piece):
    with pytest.raises(UsageError) as e:
        parse_template(f"*cls**{piece}**mask*")
    assert f"*{piece}*" in str(e.value) and "--template" in str(e.value)


@pytest.mark.parametrize("piece", ["label_x", "labelx_0", "label_0_1"])
def test_bad_label_pieces(piece):
    with pytest.raises(UsageError, match="--template"):
        parse_template(f"*cls**{piece}**mask*")


def test_missing_sentence_or_label_word(roberta_tokenizer, bert_tokenizer):
    with pytest.raises(UsageError, match=r"\*sentl_1\*.*'t-3' has only 1 sentence"):
        render(NLI.replace("+sentl_1", "sentl_1"), ["a"], roberta_tokenizer, guid="t-3")
    with pytest.raises(UsageError, match=r"\*label_2\*"):
        render("*label_2**mask*", ["a"], roberta_tokenizer, label_word_ids=[5, 6])
    with pytest.raises(UsageError, match=r"\*eos\* but BertTokenizer has no eos_token"):
        render("*mask**eos*", ["a"], bert_tokenizer)


# ----------------------------------------------------------------------------- BERT

def test_token_type_ids_only_for_bert(roberta_tokenizer, bert_tokenizer):
    assert uses_token_type_ids(bert_tokenizer)
    assert not uses_token_type_ids(roberta_tokenizer)
    out = render(SENT + "*sent_1**sep*", ["a gorgeous film .", "fun"], bert_tokenizer)
    tt = out["token_type_ids"]
    assert tt == [0] * 10 + [1] * (len(out["input_ids"]) - 10)
    assert len(tt) == len(out["input_ids"]) == len(out["attention_mask"])
    assert "token_type_ids" not in render(SENT + "*sent_1**sep*", ["a", "b"],
                                          roberta_tokenizer)
    # segment id increments once per sep+
    out = render("*cls**mask**sep+**sep+**sep*", ["a"], bert_tokenizer)
    assert out["token_type_ids"] == [0, 0, 0, 1, 2]


def test_sent_template_on_bert(bert_tokenizer):
    tok = bert_tokenizer
    out = render(SENT, ["a gorgeous film ."], tok)
    # [CLS] a gorgeous film . it was [MASK] . [SEP]
    assert out["input_ids"] == [101, 1037, 9882, 2143, 1012, 2009, 2001, 103, 1012, 102]
    assert out["input_ids"] == ([tok.cls_token_id] + enc(tok, "a gorgeous film .")
                                + enc(tok, " It was") + [tok.mask_token_id, tid(tok, "."),
                                                         tok.sep_token_id])
    assert out["token_type_ids"] == [0] * 10
    assert out["mask_pos"] == 7


# ----------------------------------------------------------------------------- finetune

def test_finetune_encoding(roberta_tokenizer, bert_tokenizer):
    tok = roberta_tokenizer
    one = render_finetune(["a gorgeous film ."], tok)
    assert one == {"input_ids": [0, 69, 408, 412, 295, 2], "attention_mask": [1] * 6}
    two = render_finetune(["The cat sat.", "A cat is sitting."], tok, max_length=128)
    assert two["input_ids"] == [CLS] + enc(tok, "The cat sat.") + [SEP] + \
        enc(tok, "A cat is sitting.") + [SEP]
    assert "mask_pos" not in two
    assert render_finetune(["The cat sat.", "A cat"], tok, max_length=4)["input_ids"] == \
        [CLS, 268, 73, 303]
    b = render_finetune(["a gorgeous film .", "it was fun"], bert_tokenizer)
    assert b["input_ids"] == [101, 1037, 9882, 2143, 1012, 102] + \
        enc(bert_tokenizer, "it was fun") + [102]
    assert b["token_type_ids"] == [0] * 6 + [1] * 4


# ----------------------------------------------------------------------------- label words

def test_label_words_leading_space(roberta_tokenizer):
    tok = roberta_tokenizer
    ids = label_word_ids(tok, {"0": "terrible", "1": "great"}, ["0", "1"])
    assert ids == [413, 375]
    assert ids == [tid(tok, "Ġterrible"), tid(tok, "Ġgreat")]
    assert ids[1] != enc(tok, "great")[0]  # no-space BPE would be 'g' 'reat'


def test_label_word_order_follows_label_list(roberta_tokenizer):
    tok = roberta_tokenizer
    m = parse_mapping("{'neutral':'Maybe','contradiction':'No','entailment':'Yes'}")
    ids = label_word_ids(tok, m, ["contradiction", "entailment", "neutral"])
    assert ids == [tid(tok, "ĠNo"), tid(tok, "ĠYes"), tid(tok, "ĠMaybe")] == [390, 360, 401]
    m5 = parse_mapping("{4:'great',0:'terrible',1:'bad',2:'okay',3:'good'}")
    assert label_word_ids(tok, m5, [0, 1, 2, 3, 4]) == [413, 362, 379, 374, 375]


def test_label_word_key_types(roberta_tokenizer):
    tok = roberta_tokenizer
    # exact types
    assert label_word_ids(tok, {0: "terrible", 1: "great"}, [0, 1]) == [413, 375]
    # other type accepted when str() matches unambiguously
    assert label_word_ids(tok, {0: "terrible", 1: "great"}, ["0", "1"]) == [413, 375]
    assert label_word_ids(tok, {"1": "great", "0": "terrible"}, [0, 1]) == [413, 375]
    with pytest.raises(UsageError, match=r"--mapping .*keys \{'0', 0\}"):
        label_word_ids(tok, {0: "terrible", "0": "great"}, [0, 1])


def test_label_word_key_mismatch(roberta_tokenizer):
    with pytest.raises(UsageError) as e:
        label_word_ids(roberta_tokenizer, {"0": "No", "1": "Yes"},
                       ["contradiction", "entailment", "neutral"])
    assert str(e.value) == ("--mapping {'0': 'No', '1': 'Yes'}: keys {'0', '1'} do not match "
                            "the task's labels {'contradiction', 'entailment', 'neutral'}")
    with pytest.raises(UsageError, match="--mapping"):
        label_word_ids(roberta_tokenizer, {0: "bad", 1: "good", 2: "great"}, [0, 1])


def test_label_word_not_one_token(roberta_tokenizer):
    with pytest.raises(UsageError) as e:
        label_word_ids(roberta_tokenizer, {0: "catsat", 1: "great"}, [0, 1])
    assert str(e.value) == ("--mapping {0: 'catsat', 1: 'great'}: label word 'catsat' is not a "
                            "single token (' catsat' -> ['Ġcat', 's', 'at'])")


def test_label_word_token_strings(roberta_tokenizer):
    tok = roberta_tokenizer
    assert label_word_ids(tok, {0: ".", 1: ",", 2: "<mask>"}, [0, 1, 2]) == [18, 16, 4]
    with pytest.raises(UsageError, match="'\\[nope' is not a token"):
        label_word_ids(tok, {0: "[nope", 1: "great"}, [0, 1])


def test_label_words_regression(roberta_tokenizer):
    ids = label_word_ids(roberta_tokenizer, {"1": "Yes", "0": "No"}, [None], "regression")
    assert ids == [390, 360]
    assert label_word_ids(roberta_tokenizer, {0: "No", 1: "Yes"}, ["0"], "regression") == \
        [390, 360]


def test_label_words_bert(bert_tokenizer):
    tok = bert_tokenizer
    # uncased WordPiece: the leading space is dropped, words are lower-cased wordpieces
    ids = label_word_ids(tok, {"0": "terrible", "1": "Great"}, ["0", "1"])
    assert ids == [6659, 2307] == [tid(tok, "terrible"), tid(tok, "great")]


@pytest.mark.parametrize("text,fragment", [
    ("{'0': 'terrible'", "not a Python literal"),
    ("['terrible', 'great']", "expected a dict literal, got list"),
    ("__import__('os').system('true')", "(ValueError: malformed node or string on line 1: Call)"),
    ("{0: terrible}", "not a Python literal"),
])
def test_parse_mapping_errors(text, fragment):
    with pytest.raises(UsageError) as e:
        parse_mapping(text)
    assert str(e.value).startswith(f"--mapping {text!r}: ") and fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_parse_mapping_ok():
    assert parse_mapping("{'0':'terrible','1':'great'}") == {"0": "terrible", "1": "great"}
    assert parse_mapping(" {0:'a', 1:'b'} ") == {0: "a", 1: "b"}


# ----------------------------------------------------------------------------- auto demo

def test_auto_demo_template_quirk():
    # bare "_0" replacement also rewrites literal text containing "_0"
    assert auto_demo_template("*cls**sent_0*_0*mask*", 1) == \
        "*cls**sent_0*_0*mask**sent_1*_1*label_0*"


def test_encode_cache_is_transparent(roberta_tokenizer):
    cache = {}
    args = (NLI, ["The cat sat.", "A cat is sitting."], roberta_tokenizer)
    plain = render(*args, first_sent_limit=2)
    assert render(*args, first_sent_limit=2, cache=cache) == plain
    assert render(*args, first_sent_limit=2, cache=cache) == plain  # from the cache
    assert cache and all(isinstance(v, list) for v in cache.values())
    assert render(*args, cache=cache) == render(*args)
