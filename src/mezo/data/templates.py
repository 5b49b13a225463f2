"""Prompt templates, label words and demonstration templates (docs/behaviour.md: "Prompt templates and
label words", "Demonstrations").

Template language
-----------------
A template is one string split on ``*``; every piece (empty ones contribute nothing) is
rendered in order and appended to the token sequence:

========================  ======================================================================
piece                     renders as
========================  ======================================================================
``cls`` / ``bos``         CLS / BOS id (skipped for T5 and GPT-2 tokenizers)
``eos`` / ``mask``        EOS / mask id
``sep``                   SEP id
``sep+``                  SEP id, then the segment id increases by one (token types, BERT only)
``label_i``               label word id i (``label_word_ids[i]``; used by demonstration slots)
``sent_i``                sentence i as stored (no leading space)
``+sent_i``               ``' ' + sentence``
``sent-_i``               sentence with its last *character* removed
``sentl_i``               first character lower-cased (``+sentl_i``: with a leading space,
                          ``sentl-_i``: and the last character removed)
``sentu_i``               first character upper-cased (``+sentu_i``, ``+sentu-_i`` analogues)
anything else             literal: ``_`` -> space; a one-character result is converted as a
                          token string (``.`` ``,`` ``?`` ``:`` map to exactly those tokens),
                          longer text is encoded without special tokens (``_It_was`` -> " It"
                          " was")
========================  ======================================================================

Differences from the reference, all on inputs it crashed on:
* an unknown ``sent*`` form (any piece starting with ``sent`` or ``+sent`` that is not one of
  the nine forms above, e.g. ``+sent-_0``, ``sentx_0``, ``sent_0_x``) is a ``UsageError``;
* ``label*`` pieces must be exactly ``label_<int>``; the GPT-3 ``labelx_i`` is rejected;
* a literal whose 2nd-5th characters are ``sent`` (``_sentiment``) renders as literal text
  (the reference tried to parse a sentence index out of it and crashed);
* referencing a missing sentence / label word, or a special token the tokenizer lacks
  (``*eos*`` with BERT), is a ``UsageError``.

Literal one-character pieces are converted as token strings exactly like the reference, so a
lone ``_`` (a space) becomes the tokenizer's unknown token for byte-level BPE vocabularies.

Token-type ids are emitted only for BERT-style tokenizers: the class name contains ``Bert`` and
not ``Roberta``.  (The reference tested the upper-case substring ``BERT``, which no
``transformers`` tokenizer class name contains, so it never passed token types; see
``uses_token_type_ids``.)

Label words
-----------
A word starting with ``<``, ``[``, ``.`` or ``,`` is converted as a token string; any other word
is tokenized as ``' ' + word`` and must give exactly one token (``Ġgreat`` for RoBERTa).  With an
uncased WordPiece (BERT) tokenizer the leading space is dropped by pre-tokenization, so the rule
is a no-op there and label words must be single lower-cased wordpieces ("Great" -> ``great``).

Mapping keys must equal the task's label set.  Key-type rule: an exact match (same values and
types) is used as is; otherwise keys are compared as ``str(key)`` to ``str(label)``, which is
accepted only when unambiguous (no two keys, and no two labels, share a string form).  So
``{0: 'terrible', 1: 'great'}`` works for SST-2 (labels ``'0'``, ``'1'``) and ``{'0': ..}`` for
mr (labels ``0``, ``1``), but ``{0: .., '0': ..}`` is rejected.  Regression tasks use keys
``'0'`` (low) and ``'1'`` (high) under the same rule.
"""
from __future__ import annotations

import ast
import functools
import logging
import re
from typing import NamedTuple, Optional, Sequence

from mezo.errors import UsageError

logger = logging.getLogger(__name__)

SPECIAL_PIECES = ("cls", "bos", "eos", "mask", "sep", "sep+")
# (leading '+', case op, drop last char) for each supported sentence form.
SENT_FORMS = {
    "sent": ("", "", False),
    "+sent": ("+", "", False),
    "sent-": ("", "", True),
    "sentl": ("", "l", False),
    "+sentl": ("+", "l", False),
    "sentl-": ("", "l", True),
    "sentu": ("", "u", False),
    "+sentu": ("+", "u", False),
    "+sentu-": ("+", "u", True),
}
_SENT_RE = re.compile(r"^(\+?sent[lu]?-?)_(\d+)$")
_LABEL_RE = re.compile(r"^label_(\d+)$")
_SUPPORTED = "cls, bos, eos, mask, sep, sep+, label_i, " + ", ".join(
    f"{k}_i" for k in SENT_FORMS)


class Piece(NamedTuple):
    """One parsed template piece.

    kind: 'special' (value = piece name), 'label' (index), 'sent' (index, form) or
    'literal' (value = text with '_' already replaced by spaces).
    """
    kind: str
    value: object = None
    index: int = -1
    form: str = ""


def _quote(template: str) -> str:
    return repr(template)


@functools.lru_cache(maxsize=256)
def parse_template(template: str) -> tuple[Piece, ...]:
    """Split a template on '*' and classify every non-empty piece (UsageError on bad pieces)."""
    if not isinstance(template, str):
        raise UsageError(f"--template {template!r}: must be a string")
    pieces = []
    for part in template.split("*"):
        if part == "":
            continue
        if part in SPECIAL_PIECES:
            pieces.append(Piece("special", part))
        elif part.startswith("label"):
            m = _LABEL_RE.match(part)
            if m:
                pieces.append(Piece("label", index=int(m.group(1))))
            elif part.startswith("labelx_"):
                raise UsageError(f"--template {_quote(template)}: piece *{part}* (GPT-3 in-context "
                                 "label) is not supported")
            elif part.startswith("label_"):
                raise UsageError(f"--template {_quote(template)}: bad label piece *{part}* "
                                 "(expected label_<int>)")
            else:
                pieces.append(Piece("literal", part.replace("_", " ")))
        elif part.startswith("sent") or part.startswith("+sent"):
            m = _SENT_RE.match(part)
            if not m or m.group(1) not in SENT_FORMS:
                raise UsageError(f"--template {_quote(template)}: unknown sentence piece *{part}* "
                                 f"(supported: {_SUPPORTED})")
            pieces.append(Piece("sent", index=int(m.group(2)), form=m.group(1)))
        else:
            pieces.append(Piece("literal", part.replace("_", " ")))
    return tuple(pieces)


def validate_template(template: Optional[str], prompt: bool = True) -> tuple[Piece, ...]:
    """Parse ``template``; for prompt templates require a ``*mask*`` piece."""
    if template is None:
        raise UsageError("--template: required for prompt-based fine-tuning "
                         "(--few_shot_type prompt / prompt-demo)")
    pieces = parse_template(template)
    if prompt and not any(p.kind == "special" and p.value == "mask" for p in pieces):
        raise UsageError(f"--template {_quote(template)}: no *mask* in a prompt template")
    return pieces


def uses_token_type_ids(tokenizer) -> bool:
    """True for BERT-style tokenizers (class name contains 'Bert' but not 'Roberta')."""
    name = type(tokenizer).__name__
    return "Bert" in name and "Roberta" not in name


def _skips_cls(tokenizer) -> bool:
    name = type(tokenizer).__name__
    return "T5" in name or "GPT2" in name


def _encode(tokenizer, text: str, cache: Optional[dict] = None) -> list[int]:
    if cache is None:
        return tokenizer.encode(text, add_special_tokens=False)
    ids = cache.get(text)
    if ids is None:
        ids = cache[text] = tokenizer.encode(text, add_special_tokens=False)
    return list(ids)


def _sentence_text(text: str, form: str) -> str:
    plus, case, drop = SENT_FORMS[form]
    if case == "l":
        text = text[:1].lower() + text[1:]
    elif case == "u":
        text = text[:1].upper() + text[1:]
    if drop:
        text = text[:-1]
    if plus:
        text = " " + text
    return text


def _special_id(tokenizer, name: str, template: str) -> int:
    attr = {"cls": "cls_token_id", "bos": "bos_token_id", "eos": "eos_token_id",
            "mask": "mask_token_id", "sep": "sep_token_id", "sep+": "sep_token_id"}[name]
    tid = getattr(tokenizer, attr, None)
    if tid is None:
        raise UsageError(f"--template {_quote(template)}: piece *{name}* but "
                         f"{type(tokenizer).__name__} has no {attr[:-3]}")
    return tid


def _finish(input_ids, token_type_ids, tokenizer, max_length, truncate_head, warn_long):
    if warn_long and len(input_ids) > max_length:
        logger.warning("Input exceeds max_length limit (%d > %d): %s", len(input_ids),
                       max_length, tokenizer.decode(input_ids))
    if len(input_ids) > max_length:
        if truncate_head:
            input_ids = input_ids[-max_length:]
            token_type_ids = token_type_ids[-max_length:]
        else:
            input_ids = input_ids[:max_length]
            token_type_ids = token_type_ids[:max_length]
    out = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids)}
    if uses_token_type_ids(tokenizer):
        out["token_type_ids"] = token_type_ids
    return out


def render(template: str, sentences: Sequence[str], tokenizer,
           label_word_ids: Optional[Sequence[int]] = None, max_length: int = 128,
           first_sent_limit: Optional[int] = None, other_sent_limit: Optional[int] = None,
           truncate_head: bool = False, guid: str = "", cache: Optional[dict] = None) -> dict:
    """Render one prompt-template input (docs/behaviour.md, "Prompt templates and label words").

    Returns ``{input_ids, attention_mask, [token_type_ids], mask_pos}`` with python lists and
    ``mask_pos`` the int index of the first mask token after truncation.  ``cache``: optional
    dict memoising text -> token ids for this tokenizer (a dataset passes one dict to all its
    renders; demo sentences and literals repeat a lot).
    """
    pieces = validate_template(template, prompt=True)
    input_ids: list[int] = []
    token_type_ids: list[int] = []
    segment = 0
    for p in pieces:
        if p.kind == "special":
            if p.value in ("cls", "bos") and _skips_cls(tokenizer):
                continue
            new = [_special_id(tokenizer, p.value, template)]
        elif p.kind == "label":
            if label_word_ids is None or p.index >= len(label_word_ids):
                n = 0 if label_word_ids is None else len(label_word_ids)
                raise UsageError(f"--template {_quote(template)}: piece *label_{p.index}* but "
                                 f"only {n} label word(s) (--mapping)")
            new = [int(label_word_ids[p.index])]
        elif p.kind == "sent":
            if p.index >= len(sentences):
                raise UsageError(f"--template {_quote(template)}: piece *{p.form}_{p.index}* but "
                                 f"example {guid!r} has only {len(sentences)} sentence(s)")
            new = _encode(tokenizer, _sentence_text(sentences[p.index], p.form), cache)
            limit = first_sent_limit if p.index == 0 else other_sent_limit
            if limit is not None:
                new = new[:limit]
        else:
            text = p.value
            if len(text) == 1:
                new = [tokenizer.convert_tokens_to_ids(text)]
            else:
                new = _encode(tokenizer, text, cache)
        input_ids += new
        token_type_ids += [segment] * len(new)
        if p.kind == "special" and p.value == "sep+":
            segment += 1

    out = _finish(input_ids, token_type_ids, tokenizer, max_length, truncate_head,
                  warn_long=first_sent_limit is not None)
    mask_id = tokenizer.mask_token_id
    try:
        out["mask_pos"] = out["input_ids"].index(mask_id)
    except ValueError:
        raise UsageError(f"--max_seq_length: the *mask* token of example {guid!r} was truncated "
                         f"away (rendered length {len(input_ids)} > max length {max_length}, "
                         f"{'head' if truncate_head else 'tail'} cut)") from None
    return out


def render_finetune(sentences: Sequence[str], tokenizer, max_length: int = 128) -> dict:
    """No-prompt encoding: ``cls A sep`` or ``cls A sep B sep`` (segment ids 0 / 1 for BERT),
    truncated to ``max_length`` keeping the head.  No mask position."""
    input_ids: list[int] = []
    token_type_ids: list[int] = []
    if not _skips_cls(tokenizer) and tokenizer.cls_token_id is not None:
        input_ids.append(tokenizer.cls_token_id)
        token_type_ids.append(0)
    sep = tokenizer.sep_token_id
    for i, text in enumerate(sentences):
        new = _encode(tokenizer, text) + [sep]
        input_ids += new
        token_type_ids += [i] * len(new)
    return _finish(input_ids, token_type_ids, tokenizer, max_length, False, warn_long=False)


# ----------------------------------------------------------------------------- label words

def parse_mapping(text) -> dict:
    """Parse ``--mapping`` (a Python dict literal, via ast.literal_eval; never eval)."""
    if isinstance(text, dict):
        return dict(text)
    if not isinstance(text, str):
        raise UsageError(f"--mapping {text!r}: expected a Python dict literal")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        detail = str(e).splitlines()[0] if str(e) else ""
        detail = re.sub(r"<ast\.(\w+) object at 0x[0-9a-fA-F]+>", r"\1", detail)
        raise UsageError(f"--mapping {text!r}: not a Python literal "
                         f"({type(e).__name__}: {detail})") from None
    if not isinstance(value, dict):
        raise UsageError(f"--mapping {text!r}: expected a dict literal, got "
                         f"{type(value).__name__}")
    return value


def _keys_repr(keys) -> str:
    return "{" + ", ".join(sorted((repr(k) for k in keys))) + "}"


def match_mapping_keys(mapping: dict, labels: Sequence) -> list:
    """Return the mapping values ordered like ``labels`` (key-type rule in the module doc)."""
    labels = list(labels)
    if set(mapping.keys()) == set(labels) and len(mapping) == len(labels):
        return [mapping[lab] for lab in labels]
    str_keys = {str(k): v for k, v in mapping.items()}
    str_labels = [str(lab) for lab in labels]
    if (len(str_keys) == len(mapping) and len(set(str_labels)) == len(labels)
            and set(str_keys) == set(str_labels)):
        return [str_keys[s] for s in str_labels]
    raise UsageError(f"--mapping {mapping!r}: keys {_keys_repr(mapping)} do not match the task's "
                     f"labels {_keys_repr(labels)}")


def label_word_id(tokenizer, word: str, mapping=None) -> int:
    """Token id of one label word (the module docstring's "Label words" rule)."""
    shown = mapping if mapping is not None else word
    if not isinstance(word, str) or word == "":
        raise UsageError(f"--mapping {shown!r}: label word {word!r} must be a non-empty string")
    if word[0] in "<[.,":
        tid = tokenizer.convert_tokens_to_ids(word)
        if tid is None or (tid == tokenizer.unk_token_id and word != tokenizer.unk_token):
            raise UsageError(f"--mapping {shown!r}: label word {word!r} is not a token of the "
                             "vocabulary")
        return tid
    pieces = tokenizer.tokenize(" " + word)
    if len(pieces) != 1:
        raise UsageError(f"--mapping {shown!r}: label word {word!r} is not a single token "
                         f"(' {word}' -> {pieces})")
    tid = tokenizer.convert_tokens_to_ids(pieces[0])
    if tid == tokenizer.unk_token_id and tokenizer.unk_token is not None:
        raise UsageError(f"--mapping {shown!r}: label word {word!r} maps to the unknown token "
                         f"{tokenizer.unk_token!r}")
    return tid


def label_word_ids(tokenizer, mapping: dict, label_list: Sequence,
                   output_mode: str = "classification") -> list[int]:
    """Label-word token ids ordered by ``label_list`` (logit k <-> label id k).

    Regression: ``[id(mapping['0']), id(mapping['1'])]`` (low, high).
    """
    if not isinstance(mapping, dict):
        mapping = parse_mapping(mapping)
    return [label_word_id(tokenizer, w, mapping) for w in label_words(mapping, label_list, output_mode)]


def label_words(mapping: dict, label_list: Sequence, output_mode: str = "classification") -> list:
    """The mapping's words ordered by ``label_list``; regression: ``[mapping['0'], mapping['1']]``."""
    labels = ["0", "1"] if output_mode == "regression" else list(label_list)
    return match_mapping_keys(mapping, labels)


# ----------------------------------------------------------------------------- demonstrations

def auto_demo_template(template: str, num_labels: int) -> str:
    """Append one demonstration slot per label (docs/behaviour.md, "Demonstrations").

    ``*cls*`` is removed from a copy; the template is a pair template if it contains ``_1``
    anywhere.  For label l the copy gets every ``_0`` -> ``_{n+n*l}`` and (pair) ``_1`` ->
    ``_{n+n*l+1}`` (n = sentences per example), and ``*mask*`` -> ``*label_l*``.

    Quirks kept from the reference: the bare substrings ``_0``/``_1`` are replaced (not
    ``_0*``), so literal text containing them is rewritten too (and a literal ``_1`` turns a
    single-sentence template into a "pair" one); for pair templates with five or more labels the
    second replacement also rewrites the first one's ``_10``... (no such task exists).
    """
    old = template.replace("*cls*", "")
    n = 2 if "_1" in old else 1
    new = template
    for label in range(num_labels):
        sub = old
        for sent in range(n):
            sub = sub.replace(f"_{sent}", f"_{n + n * label + sent}")
        sub = sub.replace("*mask*", f"*label_{label}*")
        new += sub
    return new
