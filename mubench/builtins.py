"""The built-in plug-ins: one registration per model, method kind, suite kind, scorer and named training data (models
and method kinds also name their torch-free ``Params`` dataclass, so that configurations resolve without torch)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .registry import Registries


def register_builtins(r: "Registries") -> None:
    # models
    r.models.register("tiny-sd", "mubench.models.tiny:TinySD", "tiny random-weight SD-style pipeline (tests)",
        params="mubench.models.params:TinySDParams")
    r.models.register("sd15", "mubench.models.sd15:SD15", "Stable Diffusion 1.5 from a local folder / the HF cache (weights=random: from its config)",
        params="mubench.models.params:SD15Params")
    r.models.register("sd15-reduced", "mubench.models.sd15_reduced:SD15Reduced", "SD 1.5's UNet layout at widths 64/128/256/256, random weights, 256 px (efficiency measurements)",
        params="mubench.models.params:SD15ReducedParams")
    r.models.register("micro", "mubench.micro.model:MicroModel", "the embedded micro world's text-to-image model (zoo/micro)",
        params="mubench.models.params:MicroParams")
    r.models.register("dit", "mubench.models.dit:DiT", "class-conditional DiT-XL/2 256 from a local folder (weights=random: from its config)",
        params="mubench.models.params:DiTParams")
    r.models.register("micro-dit", "mubench.micro.dit:MicroDiTModel", "the micro world's class-conditional DiT over its 15 (colour, shape) classes (zoo/micro-dit)",
        params="mubench.models.params:MicroDiTParams")
    r.models.register("pixart", "mubench.models.pixart:PixArt", "PixArt-alpha XL-2 512 (T5 text encoder) from a local folder (weights=random: from its config)",
        params="mubench.models.params:PixArtParams")
    # method kinds
    r.methods.register("sd", "mubench.methods.sd:BaseModelMethod", "the base model unchanged",
        params="mubench.methods.params:SDParams")
    r.methods.register("random-mask", "mubench.methods.random_mask:RandomMask", "Bernoulli masks with an explicit ratio over a layer set",
        params="mubench.methods.params:RandomMaskParams")
    r.methods.register("maskunet", "mubench.methods.maskunet_method:MaskUNetMethod", "MaskUNet, training-based: learned per-sample, per-timestep masks",
        params="mubench.methods.params:MaskUNetParams")
    r.methods.register("lora", "mubench.methods.lora:LoRAMethod", "peft LoRA on the attention projections",
        params="mubench.methods.params:LoRAParams")
    r.methods.register("full-ft", "mubench.methods.finetune:FullFineTune", "full fine-tune of every denoiser weight (optionally with dropout)",
        params="mubench.methods.params:FullFTParams")
    r.methods.register("maskunet-free", "mubench.methods.maskunet_free:MaskUNetFree", "MaskUNet, training-free: per-image, per-step mask logits optimised against rewards while sampling",
        params="mubench.methods.params:MaskUNetFreeParams")
    # suite kinds
    r.suites.register("toy", "mubench.suites.toy:ToySuite", "a few fixed prompts scored by pixel statistics (tests)")
    r.suites.register("micro", "mubench.suites.micro:MicroSuite", "the micro world's COCO / T2I-CompBench / GenEval analogues (CPU)")
    r.suites.register("compbench", "mubench.suites.compbench:CompBenchSuite", "T2I-CompBench attribute binding (color/shape/texture) by BLIP-VQA")
    r.suites.register("geneval", "mubench.suites.geneval:GenEvalSuite", "GenEval: 553 prompts x 4 images, official correctness rules, overall = mean of task means")
    r.suites.register("imagenet", "mubench.suites.imagenet:ImageNetSuite", "class-conditional ImageNet 256: DiT sampling defaults, FID / IS / precision / recall vs the ADM reference batch")
    r.suites.register("micro-art", "mubench.suites.micro_art:MicroArtSuite", "the micro world's fine-tuning target: micro prompts, FID / CLIP against art-style renders (CPU)")
    r.suites.register("micro-class", "mubench.suites.micro_class:MicroClassSuite", "the micro world's class-conditional suite: oracle class accuracy + micro-CLIP FID (CPU)")
    r.suites.register("efficiency", "mubench.suites.efficiency:EfficiencySuite", "costs of a method vs the base model in one run: params, GFLOPs with the mask path, latency, memory, train step")
    r.suites.register("coco", "mubench.suites.coco:CocoSuite", "COCO captions: clean-fid FID and CLIP score (coco = 2017 val 5k; coco2014-30k spec)")
    # scorers
    r.scorers.register("pixel-stats", "mubench.scorers.pixel_stats:PixelStats", "mean colour and contrast (tests)")
    r.scorers.register("micro-clip", "mubench.micro.scorers:MicroClipScorer", "micro-CLIP cosine and FID features (micro world)")
    r.scorers.register("micro-oracle", "mubench.micro.scorers:MicroOracleScorer", "micro world oracle: recovered objects, GenEval-style correctness, bindings")
    r.scorers.register("blip-vqa", "mubench.scorers.blip_vqa:BlipVqa", "T2I-CompBench BLIP-VQA: product over noun phrases of first-step P(yes)/(P(yes)+P(no))")
    r.scorers.register("geneval-detector", "mubench.scorers.geneval_detector:GenEvalDetector", "GenEval verdicts from Mask2Former detections and CLIP colour classification")
    r.scorers.register("adm-inception", "mubench.scorers.adm_inception:AdmInception", "Inception pool_3 features + no-bias softmax as the ADM evaluator (ImageNet FID / IS / P-R)")
    r.scorers.register("fid-features", "mubench.scorers.fid_features:InceptionFeatures", "Inception features for FID, clean-fid 'clean' / 'legacy_pytorch' preprocessing")
    r.scorers.register("clip-score", "mubench.scorers.clip_score:ClipScore", "raw CLIP cosine between image and caption (transformers CLIP)")
    r.scorers.register("hpsv2", "mubench.scorers.hpsv2:HPSv2Scorer", "HPSv2.1 human-preference score: open_clip ViT-H-14 + a local HPS checkpoint (differentiable reward)")
    r.scorers.register("imagereward", "mubench.scorers.image_reward:ImageRewardScorer", "ImageReward v1.0: BLIP + MLP from a local checkpoint (differentiable reward)")
    # named training data (train.data=NAME; folders and .parquet files need no entry)
    r.datasets.register("micro", "mubench.micro.sources:MICRO", "the micro world's train split: an endless seeded stream of captioned 32x32 scenes")
    r.datasets.register("micro-art", "mubench.micro.sources:MICRO_ART", "the micro world's fine-tuning domain: the same scenes and captions on a dark background the base never saw")
    r.datasets.register("micro-class", "mubench.micro.sources:MICRO_CLASS", "the micro world's class stream: single objects of its 15 (colour, shape) classes, captioned by class name")
