"""Text conditioning shared by the text-to-image models: a tokenizer + a CLIP-style text encoder."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Conditioner, Conditioning


class TextEncoderConditioner(Conditioner):
    """Tokenize, run the text encoder, return its last hidden states (SD 1.5 style; "" is the null prompt).

    ``use_attention_mask`` passes the padding mask to the denoiser's cross-attention (the micro world trains
    with it); SD 1.5 does not.
    """

    def __init__(self, tokenizer: Any, text_encoder: nn.Module, max_length: int, use_attention_mask: bool = False):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_length = max_length
        self.use_attention_mask = use_attention_mask

    @torch.no_grad()
    def encode(self, prompts: list[Any]) -> Conditioning:
        batch = self.tokenizer([str(p) for p in prompts], padding="max_length", max_length=self.max_length,
                               truncation=True, return_tensors="pt")
        device = next(self.text_encoder.parameters()).device
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        hidden = self.text_encoder(ids, attention_mask=mask if self.use_attention_mask else None)[0]
        return Conditioning(hidden_states=hidden, attention_mask=mask if self.use_attention_mask else None)

    def unconditional(self, n: int) -> Conditioning:
        return self.encode([""] * n)


def byte_level_clip_tokenizer(max_length: int = 16):
    """A file-free CLIP BPE tokenizer over bytes only (514 tokens, no merges): for tiny test models."""
    from transformers import CLIPTokenizer

    units = list(_byte_units().values())
    vocab_list = units + [u + "</w>" for u in units] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {s: i for i, s in enumerate(vocab_list)}
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)
    if len(tok) < 500:  # transformers 5 silently builds near-empty tokenizers when inputs are missing
        raise RuntimeError(f"byte-level tokenizer came out with only {len(tok)} tokens")
    return tok


def _byte_units() -> dict[int, str]:
    """The byte → printable-unicode table byte-level BPE vocabularies use (printable bytes map to themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
