"""``blip-vqa``: T2I-CompBench's BLIP-VQA attribute-binding score over transformers' BlipForQuestionAnswering.

Per image, for each of the first ``np_num`` (8) noun phrases of its prompt, the question is
``"<phrase>?"`` (lower-cased, BLIP's punctuation stripped); the answer decoder runs one step from the
``[DEC]`` token and p = P("yes") / (P("yes") + P("no")) of that first step's softmax. The image's score
is the product of its p's (missing phrases count 1); the suite averages images. As the reference does,
each p and each image score is rounded to 4 decimals (``decimals``; ``None`` keeps full precision).

Weights come from a local folder (asset ``blip-vqa``: the transformers port
``Salesforce/blip-vqa-capfilt-large`` of the reference's ``model_base_vqa_capfilt_large.pth``; their
numerical equivalence is not verified). Images are squashed to ``image_size``² with PIL bicubic and
normalised with CLIP's mean/std, as the reference's transform does. The question's first token is
replaced by ``[ENC]`` as the original BLIP code does (transformers' own ``generate`` keeps ``[CLS]``);
questions are never padded (see :meth:`BlipVqa.yes_probs`). ``weights=random`` builds a tiny random
model with a tiny vocabulary (tests).
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..config import LOCATION_ONLY
from ..errors import AssetError, UsageError
from ..suites.base import PromptItem
from .base import Scorer, ScorerContext

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_STRIP = re.compile(r"[.!\"()*#:;~]")


@dataclass
class BlipVqaParams:
    # local transformers folder (else $MUBENCH_HOME/assets or the HF cache)
    path: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    image_size: int = 480
    np_num: int = 8  # phrases per prompt that are asked (the reference's default since 2023-12-02; 2 before)
    decimals: Optional[int] = 4  # the reference formats each p and each image score with 4 decimals
    enc_token: str = "[ENC]"  # replaces the question's first token ("" keeps [CLS], as transformers does)
    max_question_tokens: int = 35
    max_question_words: int = 50
    yes: str = "yes"
    no: str = "no"
    batch_size: int = 16  # questions per decoder call (results do not depend on it)


def question_for(phrase: str, max_words: int = 50) -> str:
    """BLIP's ``pre_question`` applied to ``"<phrase>?"``: lower-case, strip . ! " ( ) * # : ; ~, cap words."""
    q = _STRIP.sub("", f"{phrase}?".lower()).rstrip(" ")
    words = q.split(" ")
    return " ".join(words[:max_words])


def round_prob(p: float, decimals: Optional[int]) -> float:
    return float(p) if decimals is None else float(f"{p:.{decimals}f}")


def image_score(probs: Sequence[float], np_num: int = 8, decimals: Optional[int] = 4) -> float:
    """Product of the (rounded) yes-probabilities of the first ``np_num`` phrases; 1 when there are none."""
    score = 1.0
    for p in list(probs)[:np_num]:
        score *= round_prob(p, decimals)
    return round_prob(score, decimals)


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B,3,H,W] float in [0,1] → uint8 (rounded) → PIL bicubic squash to size² → CLIP-normalised float."""
    from PIL import Image

    arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for a in arr:
        im = Image.fromarray(a, "RGB").resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
    x = torch.stack(out)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def tiny_blip_vqa(seed: int = 0, image_size: int = 32):
    """A tiny random BlipForQuestionAnswering and a matching BertTokenizer (offline; for tests)."""
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]", "yes", "no", "?", "a", "an", "the",
             "and", "red", "green", "blue", "yellow", "white", "black", "brown", "bench", "bowl", "car", "cat",
             "dog", "book", "cake", "round", "square", "wooden", "glass", "metallic", "fluffy", "plastic"]
    with tempfile.TemporaryDirectory(prefix="mubench-tiny-blip-") as vocab_dir:  # read once, into tok.vocab
        vocab = Path(vocab_dir) / "vocab.txt"
        vocab.write_text("\n".join(words) + "\n")
        tok = BertTokenizer(str(vocab), do_lower_case=True, bos_token="[DEC]")
    text = dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64, bos_token_id=words.index("[DEC]"),
                initializer_range=0.5,
                sep_token_id=words.index("[SEP]"), pad_token_id=0, encoder_hidden_size=32)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  image_size=image_size, patch_size=8, initializer_range=0.5)
    torch.manual_seed(seed)
    model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision))
    return model.eval(), tok


class BlipVqa(Scorer):
    Params = BlipVqaParams
    version = "1"

    def __init__(self, params: BlipVqaParams, ctx: ScorerContext, name: str) -> None:
        super().__init__(params, ctx, name)
        self._weights_hash = ""
        if ctx.weights == "random":
            self.model, self.tokenizer = tiny_blip_vqa(0, params.image_size)
            self._weights_hash = "random:tiny-blip-vqa:seed0"
        else:
            self.model, self.tokenizer = self._load(params)
        self.model.to(ctx.device).eval()
        ids = self.tokenizer.convert_tokens_to_ids([params.yes, params.no])
        unk = self.tokenizer.unk_token_id
        if any(i is None or i == unk for i in ids):
            raise UsageError(f"the BLIP tokenizer has no single token for {params.yes!r} / {params.no!r}")
        self.yes_id, self.no_id = ids
        self.enc_id = None
        if params.enc_token:
            enc = self.tokenizer.convert_tokens_to_ids(params.enc_token)
            self.enc_id = None if enc in (None, unk) else int(enc)
        self.dec_id = int(self.model.config.text_config.bos_token_id)
        # the Hub port (Salesforce/blip-vqa-capfilt-large) was converted at 384² (577 positions) while the reference
        # runs the checkpoint at 480²: the position embeddings are then interpolated (bicubic), as BLIP's own
        # loader interpolates a checkpoint's pos_embed to the size it runs at
        self.native_size = int(self.model.config.vision_config.image_size)
        self.interpolate = params.image_size != self.native_size

    def _load(self, params: BlipVqaParams):
        from transformers import AutoTokenizer, BlipForQuestionAnswering

        from ..assets import require

        path = require("blip-vqa", params.path)
        try:
            model = BlipForQuestionAnswering.from_pretrained(path, local_files_only=True)
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise AssetError(f"cannot load BLIP VQA from {path}: {err}") from None
        if len(tok) < 1000:
            raise AssetError(f"the tokenizer in {path} has only {len(tok)} tokens; its vocabulary files are missing")
        from ..assets import weights_files_hash

        self._weights_hash = weights_files_hash(Path(path))
        return model, tok

    def weights_hash(self) -> str:
        return self._weights_hash

    def describe(self) -> dict[str, Any]:
        p = self.params
        moved = {"position_embeddings": f"interpolated from {self.native_size}² (bicubic)"} if self.interpolate else {}
        return {**super().describe(), "backbone": "BLIP VQA (transformers BlipForQuestionAnswering)", **moved,
                "image_size": p.image_size, "np_num": p.np_num, "decimals": p.decimals,
                "enc_token": p.enc_token if self.enc_id is not None else "", "answer": "first-step P(yes)/(P(yes)+P(no))"}

    @torch.no_grad()
    def yes_probs(self, pixel_values: torch.Tensor, questions: list[str]) -> list[float]:
        """P(yes)/(P(yes)+P(no)) of the first decoding step, one question per row of ``pixel_values``.

        Questions are run in groups of equal token length, so nothing is padded: transformers 5's BLIP
        text decoder ignores ``encoder_attention_mask`` in its cross-attention (padding would leak into
        the answer), while the reference masks the question's padding. Unpadded groups give the
        reference's values whatever the batch composition.
        """
        if not questions:
            return []
        ids = [self.tokenizer(q, truncation=True, max_length=self.params.max_question_tokens)["input_ids"]
               for q in questions]
        out: list[float] = [0.0] * len(questions)
        by_len: dict[int, list[int]] = {}
        for k, row in enumerate(ids):
            by_len.setdefault(len(row), []).append(k)
        for group in by_len.values():
            for s in range(0, len(group), self.params.batch_size):
                part = group[s:s + self.params.batch_size]
                probs = self._first_step(pixel_values[part], torch.tensor([ids[k] for k in part], dtype=torch.long))
                for k, p in zip(part, probs):
                    out[k] = p
        return out

    def _first_step(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> list[float]:
        device = self.ctx.device
        input_ids = input_ids.to(device).clone()
        if self.enc_id is not None:
            input_ids[:, 0] = self.enc_id
        image_embeds = self.model.vision_model(pixel_values=pixel_values.to(device),
                                               interpolate_pos_encoding=self.interpolate)[0]
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device)
        q = self.model.text_encoder(input_ids=input_ids, encoder_hidden_states=image_embeds,
                                    encoder_attention_mask=image_mask, return_dict=False)[0]
        start = torch.full((input_ids.shape[0], 1), self.dec_id, dtype=torch.long, device=device)
        logits = self.model.text_decoder(input_ids=start, encoder_hidden_states=q, return_dict=True).logits
        prob = torch.softmax(logits[:, 0, :].double(), dim=-1)
        p = prob[:, self.yes_id] / (prob[:, self.yes_id] + prob[:, self.no_id])
        return [float(v) for v in p.cpu()]

    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        p = self.params
        pixels = preprocess(images, p.image_size)
        rows: list[tuple[int, str]] = []
        for b, item in enumerate(items):
            phrases = item.meta.get("noun_phrases")
            if phrases is None:
                raise UsageError(f"prompt {item.id}: the blip-vqa scorer needs meta['noun_phrases']")
            rows += [(b, question_for(ph, p.max_question_words)) for ph in list(phrases)[:p.np_num]]
        probs = self.yes_probs(pixels[[b for b, _ in rows]], [q for _, q in rows]) if rows else []
        out = []
        for b in range(len(items)):
            mine = [(q, pr) for (bb, q), pr in zip(rows, probs) if bb == b]
            rounded = [round_prob(pr, p.decimals) for _, pr in mine]
            out.append({"score": image_score(rounded, p.np_num, p.decimals), "probs": rounded,
                        "questions": [q for q, _ in mine]})
        return out
