"""The micro world's word-level tokenizer, built offline from the caption grammar's words.

Ids: ``<pad>`` 0, ``<bos>`` 1, ``<unk>`` 2, ``<eos>`` 3, then the grammar's words in sorted
order, so the vocabulary is stable. Every caption is encoded as ``<bos> words... <eos>`` padded
with ``<pad>`` to :data:`MAX_LENGTH`; the empty caption ``""`` (``<bos> <eos>``) is the
unconditional prompt. For a transformers ``CLIPTextModel`` use ``eos_token_id=EOS_ID`` (not 2:
id 2 selects CLIP's legacy "argmax id" pooling), ``bos_token_id=BOS_ID``, ``pad_token_id=PAD_ID``
and ``vocab_size=len(tokenizer)``.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders
from transformers import PreTrainedTokenizerFast

from .scene import COLORS, FILLS, NUMBER_WORDS, SHAPES

MAX_LENGTH = 16
PAD, BOS, UNK, EOS = "<pad>", "<bos>", "<unk>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, UNK, EOS)
PAD_ID, BOS_ID, UNK_ID, EOS_ID = 0, 1, 2, 3


def grammar_words() -> list[str]:
    """Every word a caption of the grammar can contain, sorted."""
    words = {"a", "an", "and", "to", "the", "left", "right", "of", "above", "below"}
    words |= set(NUMBER_WORDS.values())
    words |= set(FILLS) | set(COLORS)
    words |= set(SHAPES) | {s + "s" for s in SHAPES}
    return sorted(words)


def vocabulary() -> dict[str, int]:
    """Token → id: the special tokens, then the sorted grammar words."""
    tokens = list(SPECIAL_TOKENS) + grammar_words()
    return {tok: i for i, tok in enumerate(tokens)}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fast word-level tokenizer (no files, no network) with the fixed vocabulary above."""
    tok = Tokenizer(models.WordLevel(vocab=vocabulary(), unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   pad_token=PAD, model_max_length=MAX_LENGTH, padding_side="right")


def encode(tokenizer: PreTrainedTokenizerFast, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both int64 [B, MAX_LENGTH]; captions are lower-cased and
    truncated to MAX_LENGTH tokens (the grammar's longest caption fits)."""
    batch = tokenizer([c.lower() for c in captions], padding="max_length", truncation=True,
                      max_length=MAX_LENGTH, return_tensors="pt")
    return batch["input_ids"].long(), batch["attention_mask"].long()


def decode(tokenizer: PreTrainedTokenizerFast, input_ids: torch.Tensor) -> list[str]:
    """input_ids [B, L] → captions without special tokens."""
    return tokenizer.batch_decode(input_ids.tolist(), skip_special_tokens=True)
