"""Reward scorers loaded without the hpsv2 / image-reward packages, on tiny random weights: checkpoint loading (key
layout, strictness), the score formulas, differentiability, preprocessing, and AssetError on missing files."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from mubench.errors import AssetError
from mubench.scorers.base import ScorerContext
from mubench.suites.base import PromptItem

pytest.importorskip("open_clip")

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                             "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
MED = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
       "max_position_embeddings": 40, "vocab_size": 40, "layer_norm_eps": 1e-12}
VISION = {"image_size": 32, "vision_width": 48, "vision_layers": 1, "vision_heads": 2, "patch_size": 16}
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "two", "green"]
CPU = ScorerContext(torch.device("cpu"), torch.float32, "pretrained")
RANDOM = ScorerContext(torch.device("cpu"), torch.float32, "random")


def _images(n: int = 2, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- preprocessing


def test_clip_preprocess_matches_torchvision():
    tv = pytest.importorskip("torchvision.transforms.functional")
    from mubench.scorers.rewards import CLIP_MEAN, CLIP_STD, clip_preprocess

    x = _images(2, 300)[:, :, :, :260]
    ref = tv.normalize(tv.center_crop(tv.resize(x, 224, interpolation=tv.InterpolationMode.BICUBIC,
                                                antialias=True), [224, 224]), CLIP_MEAN, CLIP_STD)
    out = clip_preprocess(x, 224)
    assert out.shape == (2, 3, 224, 224) and torch.allclose(out, ref, atol=1e-5)
    small = _images(1, 32).requires_grad_(True)
    clip_preprocess(small, 224).sum().backward()  # upsampling (micro images) is differentiable too
    assert small.grad is not None and small.grad.abs().sum() > 0


# --------------------------------------------------------------------------- HPSv2


@pytest.fixture
def clip_config(tmp_path) -> Path:
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return path


def test_hpsv2_loads_a_checkpoint_and_scores_the_cosine(clip_config, tmp_path):
    from open_clip.tokenizer import SimpleTokenizer

    from mubench.scorers.hpsv2 import HPSv2Params, HPSv2Scorer, build_open_clip

    source, _ = build_open_clip("ViT-H-14", str(clip_config), seed=7)
    ckpt = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": source.state_dict()}, ckpt)
    scorer = HPSv2Scorer(HPSv2Params(checkpoint=str(ckpt), model_config=str(clip_config)), CPU, "hpsv2")
    assert scorer.weights_hash() and scorer.describe()["image_size"] == 32

    images, prompts = _images(2, 32), ["a red circle", "two blue squares"]
    with torch.no_grad():
        img = source.eval().encode_image((images - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1))
                                         / torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1))
        txt = source.encode_text(SimpleTokenizer()(prompts))
    expected = torch.nn.functional.cosine_similarity(img, txt)
    got = scorer.reward(images, prompts)
    assert torch.allclose(got, expected, atol=1e-5)
    assert [r["reward"] for r in scorer.score(images, [PromptItem("0", p) for p in prompts])] == \
        pytest.approx(got.tolist(), abs=1e-6)

    x = images.clone().requires_grad_(True)  # differentiable w.r.t. the images, the model stays frozen
    scorer.reward(x, prompts).sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in scorer.model.parameters())


def test_hpsv2_refuses_a_wrong_or_missing_checkpoint(clip_config, tmp_path):
    from mubench.scorers.hpsv2 import HPSv2Params, HPSv2Scorer, build_open_clip

    source, _ = build_open_clip("ViT-H-14", str(clip_config))
    state = source.state_dict()
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(AssetError, match="does not fit"):
        HPSv2Scorer(HPSv2Params(checkpoint=str(bad), model_config=str(clip_config)), CPU, "hpsv2")
    with pytest.raises(AssetError, match="hpsv2.1"):
        HPSv2Scorer(HPSv2Params(checkpoint=str(tmp_path / "missing.pt"), model_config=str(clip_config)), CPU, "hpsv2")
    with pytest.raises(AssetError, match="hpsv2.1"):  # nothing configured, nothing in MUBENCH_HOME or the HF cache
        HPSv2Scorer(HPSv2Params(model_config=str(clip_config)), CPU, "hpsv2")


# --------------------------------------------------------------------------- ImageReward


@pytest.fixture
def ir_files(tmp_path) -> dict[str, str]:
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    (tmp_path / "med_config.json").write_text(json.dumps(MED))
    return {"med_config": str(tmp_path / "med_config.json"), "tokenizer": str(tmp_path / "bert")}


def _original_checkpoint(seed: int = 0, head_bias: float | None = None):
    """An ImageReward.pt state dict in the released naming: BLIP's timm-style ViT, med.py's BERT, the MLP."""
    timm = pytest.importorskip("timm")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=16, embed_dim=48, depth=1, num_heads=2, mlp_ratio=4.0, num_classes=0, global_pool="",
        qkv_bias=True, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)).eval()
    state = {f"blip.visual_encoder.{k}": v for k, v in vit.state_dict().items()}
    h, i, v, p, w = MED["hidden_size"], MED["intermediate_size"], MED["vocab_size"], MED["max_position_embeddings"], 48
    text = {"embeddings.word_embeddings.weight": (v, h), "embeddings.position_embeddings.weight": (p, h),
            "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,)}
    for part, kin in (("attention", h), ("crossattention", w)):
        text.update({f"encoder.layer.0.{part}.self.query.weight": (h, h), f"encoder.layer.0.{part}.self.query.bias": (h,),
                     f"encoder.layer.0.{part}.self.key.weight": (h, kin), f"encoder.layer.0.{part}.self.key.bias": (h,),
                     f"encoder.layer.0.{part}.self.value.weight": (h, kin),
                     f"encoder.layer.0.{part}.self.value.bias": (h,),
                     f"encoder.layer.0.{part}.output.dense.weight": (h, h),
                     f"encoder.layer.0.{part}.output.dense.bias": (h,),
                     f"encoder.layer.0.{part}.output.LayerNorm.weight": (h,),
                     f"encoder.layer.0.{part}.output.LayerNorm.bias": (h,)})
    text.update({"encoder.layer.0.intermediate.dense.weight": (i, h), "encoder.layer.0.intermediate.dense.bias": (i,),
                 "encoder.layer.0.output.dense.weight": (h, i), "encoder.layer.0.output.dense.bias": (h,),
                 "encoder.layer.0.output.LayerNorm.weight": (h,), "encoder.layer.0.output.LayerNorm.bias": (h,)})
    for key, shape in text.items():
        state[f"blip.text_encoder.{key}"] = torch.randn(shape, generator=gen) * 0.05
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(p).unsqueeze(0)
    dims = [(h, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    for idx, (fin, fout) in zip((0, 2, 4, 6, 7), dims):
        scale = 0.0 if head_bias is not None else 0.05
        state[f"mlp.layers.{idx}.weight"] = torch.randn(fout, fin, generator=gen) * scale
        state[f"mlp.layers.{idx}.bias"] = torch.zeros(fout)
    if head_bias is not None:
        state["mlp.layers.7.bias"] = torch.tensor([head_bias])
    state["blip.text_proj.weight"] = torch.zeros(4, h)  # BLIP parts ImageReward does not use: ignored
    return state, vit


def test_image_reward_remap_loads_the_released_layout(ir_files, tmp_path):
    from mubench.scorers.image_reward import REWARD_MEAN, REWARD_STD, ImageRewardParams, ImageRewardScorer

    state, vit = _original_checkpoint()
    ckpt = tmp_path / "ImageReward.pt"
    torch.save(state, ckpt)
    scorer = ImageRewardScorer(ImageRewardParams(checkpoint=str(ckpt), **ir_files, **VISION), CPU, "imagereward")
    assert scorer.ignored == ["blip.text_encoder.embeddings.position_ids", "blip.text_proj.weight"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the vision tower computes exactly BLIP's (timm) ViT
        assert torch.allclose(scorer.net.vision(pixel_values=x).last_hidden_state, vit.forward_features(x), atol=1e-5)

    const, _ = _original_checkpoint(head_bias=0.9)  # a head that outputs 0.9: the reward is its standardisation
    torch.save(const, ckpt)
    fixed = ImageRewardScorer(ImageRewardParams(checkpoint=str(ckpt), **ir_files, **VISION), CPU, "imagereward")
    r = fixed.reward(_images(3, 48), ["a red circle", "two blue squares", "a green circle"])
    assert torch.allclose(r, torch.full((3,), (0.9 - REWARD_MEAN) / REWARD_STD), atol=1e-6)


def test_image_reward_tokenizes_as_released(ir_files):
    from mubench.scorers.image_reward import ImageRewardParams, ImageRewardScorer

    scorer = ImageRewardScorer(ImageRewardParams(**ir_files, **VISION), RANDOM, "imagereward")
    tok = scorer.tokenizer(["a red circle"], padding="max_length", truncation=True, max_length=35)
    ids = tok["input_ids"][0]
    assert len(ids) == 35 and ids[:5] == [2, 5, 6, 8, 3]  # [CLS] a red circle [SEP], then [PAD]s
    assert len(scorer.tokenizer) == len(WORDS) + 2  # BLIP adds [DEC] and [ENC]


def test_image_reward_is_differentiable_and_frozen(ir_files):
    from mubench.scorers.image_reward import ImageRewardParams, ImageRewardScorer

    scorer = ImageRewardScorer(ImageRewardParams(**ir_files, **VISION), RANDOM, "imagereward")
    x = _images(2, 40).requires_grad_(True)
    r = scorer.reward(x, ["a red circle", "a blue square"])
    r.sum().backward()
    assert r.shape == (2,) and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in scorer.net.parameters())


def test_image_reward_missing_files(ir_files, tmp_path):
    from mubench.scorers.image_reward import ImageRewardParams, ImageRewardScorer

    with pytest.raises(AssetError, match="imagereward"):
        ImageRewardScorer(ImageRewardParams(checkpoint=str(tmp_path / "nope.pt"), **ir_files, **VISION), CPU, "ir")
    with pytest.raises(AssetError, match="bert-base-uncased"):
        ImageRewardScorer(ImageRewardParams(med_config=ir_files["med_config"], tokenizer=str(tmp_path / "none"),
                                            **VISION), RANDOM, "ir")


def test_micro_clip_reward_matches_its_score():
    from mubench.micro.scorers import MicroClipScorer

    scorer = MicroClipScorer(MicroClipScorer.Params(), RANDOM, "micro-clip")
    x = _images(2, 32).requires_grad_(True)
    prompts = ["a red circle", "two blue squares"]
    r = scorer.reward(x, prompts)
    r.sum().backward()
    assert x.grad.abs().sum() > 0
    scores = scorer.score(x.detach(), [PromptItem(str(i), p) for i, p in enumerate(prompts)])
    assert [s["clip"] for s in scores] == pytest.approx(r.tolist(), abs=1e-5)
