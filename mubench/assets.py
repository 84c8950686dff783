"""The manifest of every external file mubench can use, and the one function that finds them: :func:`require`.

mubench never downloads. A suite, model or scorer asks for an asset by name; :func:`require` looks, in
order, at (1) an explicit path from the configuration (the component's own key, e.g.
``suite.prompts_dir=...``, or ``assets.NAME=PATH`` on the ``mubench assets`` command line), (2)
``$MUBENCH_HOME/assets/<relpath>`` (``MUBENCH_HOME`` defaults to the user cache dir), (3) the place
the reference tool itself caches the file (e.g. clean-fid's ``/tmp``, torch hub's checkpoints folder)
and (4) the Hugging Face cache with ``local_files_only``. The first hit is checked (required files of
a folder; sha256 of a file when the manifest fixes it) and returned. A miss or a mismatch raises
:class:`~mubench.errors.AssetError` (exit 2) naming the asset, every place looked and the checksum.

Checksums: ``sha256`` is either the full hex digest or, where only that is published, its prefix
(torch hub and mmdetection put the first 8 hex digits of the sha256 in the file name). ``None``
means no fixed checksum is known: ``mubench assets verify`` prints the digest it computed so a user
can pin it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

from .paths import mubench_home
from .errors import AssetError, UsageError, unknown
from .fsutil import atomic_write_text


@dataclass(frozen=True)
class Asset:
    """One external file or folder: what it is, who needs it, its checksum and where it may be."""

    name: str
    description: str
    relpath: str  # where it lives under $MUBENCH_HOME/assets/
    kind: str = "file"  # file | folder
    sha256: Optional[str] = None  # full hex digest or a published prefix (>= 8 hex digits); None: not fixed
    required_files: tuple[str, ...] = ()  # folder: files that must exist inside it
    used_by: tuple[str, ...] = ()  # "suite:coco", "model:sd15", "scorer:blip-vqa"...
    config_key: str = ""  # the configuration key that points at it explicitly
    hf_repo: Union[str, tuple[str, ...], None] = None  # Hugging Face repo id(s), looked up in the local cache only
    hf_filename: Optional[str] = None  # a single file of that repo (else the repo snapshot is the folder)
    extra_paths: tuple[str, ...] = ()  # where the reference tool caches it ("~" and $VARS expanded)
    source: str = ""  # where a user obtains it (informational; never fetched)
    license: str = ""
    # (scorer parameter, values) under which a scorer needs this asset, where several share one config_key (the
    # FID protocol picks the Inception file); a parameter the scorer is not given does not rule it out
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()


# ------------------------------------------------------------------------------------------------
# the manifest

_SD15_FILES = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
               "tokenizer/vocab.json", "scheduler/scheduler_config.json")

MANIFEST: tuple[Asset, ...] = (
    Asset("sd15", "Stable Diffusion 1.5 (diffusers folder)", "models/stable-diffusion-v1-5", "folder",
          required_files=_SD15_FILES, used_by=("model:sd15",), config_key="model.path",
          hf_repo=("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5"),
          source="huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5", license="CreativeML OpenRAIL-M"),
    Asset("inception-clean", "Inception-v3 2015-12-05 TorchScript port (clean-fid 'clean' / 'legacy_tensorflow')",
          "fid/inception-2015-12-05.pt",
          used_by=("suite:coco", "suite:coco2014-30k", "suite:imagenet", "scorer:fid-features",
                   "scorer:adm-inception"),
          config_key="suite.fid.weights", extra_paths=("/tmp/inception-2015-12-05.pt",),
          when=(("protocol", ("clean",)),),
          source="nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"),
    Asset("inception-legacy-pytorch", "Inception-v3 2015-12-05 weights of pytorch-fid (clean-fid 'legacy_pytorch')",
          "fid/pt_inception-2015-12-05-6726825d.pth", sha256="6726825d",
          used_by=("suite:coco", "suite:coco2014-30k", "scorer:fid-features"), config_key="suite.fid.weights",
          when=(("protocol", ("legacy_pytorch",)),),
          extra_paths=("$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth",
                       "~/.cache/torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth"),
          source="github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"),
    Asset("clip-vit-l-14", "OpenAI CLIP ViT-L/14 (transformers folder)", "models/clip-vit-large-patch14", "folder",
          required_files=("config.json", "preprocessor_config.json"),
          used_by=("suite:coco", "suite:coco2014-30k", "suite:geneval", "scorer:clip-score", "scorer:geneval-detector"),
          config_key="suite.clip.path (coco) / suite.detector.clip_path (geneval)",
          hf_repo="openai/clip-vit-large-patch14",
          source="huggingface.co/openai/clip-vit-large-patch14", license="MIT"),
    Asset("blip-vqa", "BLIP VQA ViT-B capfilt-large (transformers BlipForQuestionAnswering folder)",
          "models/blip-vqa-capfilt-large", "folder", required_files=("config.json",),
          used_by=("suite:compbench", "scorer:blip-vqa"), config_key="suite.vqa.path",
          hf_repo="Salesforce/blip-vqa-capfilt-large", source="huggingface.co/Salesforce/blip-vqa-capfilt-large",
          license="BSD-3-Clause"),
    Asset("coco2017-captions", "COCO 2017 val captions (annotations/captions_val2017.json)",
          "data/coco/annotations/captions_val2017.json", used_by=("suite:coco",), config_key="suite.captions",
          source="images.cocodataset.org/annotations/annotations_trainval2017.zip", license="CC BY 4.0"),
    Asset("coco2017-val-images", "COCO 2017 val images (5,000 JPEGs)", "data/coco/val2017", "folder",
          required_files=("000000000139.jpg",), used_by=("suite:coco",), config_key="suite.images",
          source="images.cocodataset.org/zips/val2017.zip", license="CC BY 4.0 (annotations); Flickr terms (images)"),
    Asset("coco2014-captions", "COCO 2014 val captions (annotations/captions_val2014.json)",
          "data/coco/annotations/captions_val2014.json", used_by=("suite:coco2014-30k",), config_key="suite.captions",
          source="images.cocodataset.org/annotations/annotations_trainval2014.zip"),
    Asset("coco2014-val-images", "COCO 2014 val images (40,504 JPEGs)", "data/coco/val2014", "folder",
          required_files=("COCO_val2014_000000000042.jpg",), used_by=("suite:coco2014-30k",),
          config_key="suite.images", source="images.cocodataset.org/zips/val2014.zip"),
    Asset("t2i-compbench-color", "T2I-CompBench color_val.txt (300 prompts; after the 2025-09-03 de-duplication)",
          "data/t2i-compbench/color_val.txt",
          sha256="1634259756dbc77d13093d907d414480080ec9790a8c97ad09efaea7b2534f2d", used_by=("suite:compbench",),
          config_key="suite.prompts_dir", source="github.com/Karine-Huang/T2I-CompBench examples/dataset/",
          license="MIT"),
    Asset("t2i-compbench-shape", "T2I-CompBench shape_val.txt (300 prompts)", "data/t2i-compbench/shape_val.txt",
          sha256="37e1a276906c7ea9516cbd7ac8501be896006c0c17ca7344f260562834455bae", used_by=("suite:compbench",),
          config_key="suite.prompts_dir", source="github.com/Karine-Huang/T2I-CompBench examples/dataset/",
          license="MIT"),
    Asset("t2i-compbench-texture", "T2I-CompBench texture_val.txt (300 prompts)", "data/t2i-compbench/texture_val.txt",
          sha256="fbb5363515b4a28009e360afaaaf389d2dd2289e50dbb0c6ef4ea0c7fe4f3d4f", used_by=("suite:compbench",),
          config_key="suite.prompts_dir", source="github.com/Karine-Huang/T2I-CompBench examples/dataset/",
          license="MIT"),
    Asset("geneval-metadata", "GenEval prompts/evaluation_metadata.jsonl (553 prompts)",
          "data/geneval/evaluation_metadata.jsonl",
          sha256="5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13", used_by=("suite:geneval",),
          config_key="suite.metadata", source="github.com/djghosh13/geneval prompts/", license="MIT"),
    Asset("mask2former-hf", "Mask2Former Swin-S COCO instance (transformers port of GenEval's detector)",
          "models/mask2former-swin-small-coco-instance", "folder", required_files=("config.json",),
          used_by=("suite:geneval", "scorer:geneval-detector"), config_key="suite.detector.detector_path",
          hf_repo="facebook/mask2former-swin-small-coco-instance",
          source="huggingface.co/facebook/mask2former-swin-small-coco-instance"),
    Asset("mask2former-mmdet", "Mask2Former Swin-S mmdetection 2.x checkpoint (the official GenEval evaluator's; "
          "used outside mubench, whose results.jsonl mubench imports)",
          "models/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth", sha256="743b7d99",
          used_by=("geneval-official-evaluator",), config_key="",
          source="download.openmmlab.com/mmdetection/v2.0/mask2former/ (..._20220504_001756-743b7d99.pth)"),
    Asset("hpsv2.1", "HPSv2.1 checkpoint (open_clip ViT-H-14 state dict)", "models/HPS_v2.1_compressed.pt",
          used_by=("scorer:hpsv2", "method:maskunet-free"), config_key="scorer.hpsv2.checkpoint",
          hf_repo="xswu/HPSv2", hf_filename="HPS_v2.1_compressed.pt", source="huggingface.co/xswu/HPSv2"),
    Asset("imagereward", "ImageReward v1.0 checkpoint (BLIP + MLP)", "models/ImageReward.pt",
          used_by=("scorer:imagereward", "method:maskunet-free"), config_key="scorer.imagereward.checkpoint",
          hf_repo="THUDM/ImageReward", hf_filename="ImageReward.pt", source="huggingface.co/THUDM/ImageReward"),
    Asset("imagereward-med-config", "ImageReward BLIP text-encoder config (med_config.json)",
          "models/ImageReward-med_config.json", used_by=("scorer:imagereward", "method:maskunet-free"),
          config_key="scorer.imagereward.med_config", hf_repo="THUDM/ImageReward", hf_filename="med_config.json"),
    Asset("bert-base-uncased", "BERT base uncased WordPiece vocabulary (ImageReward's BLIP tokenizer)",
          "models/bert-base-uncased", "folder", required_files=("vocab.txt",),
          used_by=("scorer:imagereward", "method:maskunet-free"), config_key="scorer.imagereward.tokenizer",
          hf_repo=("google-bert/bert-base-uncased", "bert-base-uncased"),
          source="huggingface.co/google-bert/bert-base-uncased", license="Apache-2.0"),
    Asset("dit-xl-2-256", "DiT-XL/2 256 (diffusers folder)", "models/DiT-XL-2-256", "folder",
          required_files=("model_index.json", "transformer/config.json"), used_by=("model:dit",),
          config_key="model.path", hf_repo="facebook/DiT-XL-2-256", source="huggingface.co/facebook/DiT-XL-2-256"),
    Asset("sd-vae-ft-ema", "SD VAE ft-EMA (the VAE of DiT's FID protocol)", "models/sd-vae-ft-ema", "folder",
          required_files=("config.json",), used_by=("model:dit",), config_key="model.vae_path",
          hf_repo="stabilityai/sd-vae-ft-ema"),
    Asset("pixart-alpha-512", "PixArt-α XL-2 512 (diffusers folder)", "models/PixArt-XL-2-512x512", "folder",
          required_files=("model_index.json", "transformer/config.json"), used_by=("model:pixart",),
          config_key="model.path", hf_repo="PixArt-alpha/PixArt-XL-2-512x512",
          source="huggingface.co/PixArt-alpha/PixArt-XL-2-512x512"),
    Asset("adm-ref-imagenet256", "ADM reference batch VIRTUAL_imagenet256_labeled.npz (mu/sigma + 10k images)",
          "data/imagenet/VIRTUAL_imagenet256_labeled.npz", used_by=("suite:imagenet",), config_key="suite.reference",
          source="openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"),
)


def manifest() -> dict[str, Asset]:
    return {a.name: a for a in MANIFEST}


def get_asset(name: str) -> Asset:
    table = manifest()
    if name not in table:
        raise unknown("asset", name, table)
    return table[name]


def select(suite: Optional[str] = None, model: Optional[str] = None, scorer: Optional[str] = None,
           method: Optional[str] = None) -> list[Asset]:
    """Assets used by the given suite / model / scorer / method kind (all when none is given)."""
    wanted = [f"{k}:{v}" for k, v in (("suite", suite), ("model", model), ("scorer", scorer), ("method", method))
              if v]
    if not wanted:
        return list(MANIFEST)
    return [a for a in MANIFEST if any(w in a.used_by for w in wanted)]


# ------------------------------------------------------------------------------------------------
# lookup


def assets_root() -> Path:
    return mubench_home() / "assets"


def _expand(p: str) -> Optional[Path]:
    if "$TORCH_HOME" in p and not os.environ.get("TORCH_HOME"):
        return None
    return Path(os.path.expandvars(os.path.expanduser(p)))


def hf_repos(asset: Asset) -> tuple[str, ...]:
    """The Hugging Face repositories whose local cache may hold ``asset`` (none, one or several)."""
    if not asset.hf_repo:
        return ()
    return (asset.hf_repo,) if isinstance(asset.hf_repo, str) else tuple(asset.hf_repo)


def _hf_cache_lookup(repo: str, filename: Optional[str]) -> tuple[Optional[Path], str]:
    """(path or None, description of the place looked) — the local cache only, never the network."""
    import huggingface_hub as hub
    from huggingface_hub import constants

    where = f"Hugging Face cache {constants.HF_HUB_CACHE} (repo {repo}" + (
        f", file {filename})" if filename else ", snapshot)")
    if filename:
        hit = hub.try_to_load_from_cache(repo, filename)
        return (Path(hit), where) if isinstance(hit, str) else (None, where)
    return _hf_cached_snapshot(Path(constants.HF_HUB_CACHE), repo), where


def _hf_cached_snapshot(cache: Path, repo: str, revision: str = "main") -> Optional[Path]:
    """The snapshot folder of ``repo`` in a Hugging Face cache, read from its layout
    (``models--ORG--NAME/refs/REVISION`` names ``snapshots/COMMIT``); None when it is not there."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    ref = repo_dir / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = repo_dir / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def candidates(asset: Asset, override_path: Union[str, Path, None] = None) -> list[tuple[str, Optional[Path]]]:
    """The places looked, in order, as (description, path or None when the place cannot be resolved yet)."""
    out: list[tuple[str, Optional[Path]]] = []
    if override_path:
        out.append((f"configured path ({asset.config_key or 'override'})", Path(override_path).expanduser()))
    out.append(("$MUBENCH_HOME/assets", assets_root() / asset.relpath))
    for p in asset.extra_paths:
        path = _expand(p)
        if path is not None:
            out.append(("reference tool's cache", path))
    return out


def _hash_cache_path() -> Path:
    return mubench_home() / "asset-hashes.json"


def file_sha256(path: Path, use_cache: bool = True) -> str:
    """sha256 of a file; cached by (absolute path, size, mtime) in $MUBENCH_HOME so big files hash once."""
    path = Path(path)
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache: dict[str, str] = {}
    cpath = _hash_cache_path()
    if use_cache and cpath.is_file():
        try:
            cache = json.loads(cpath.read_text())
        except (OSError, ValueError):
            cache = {}
        if ident in cache:
            return cache[ident]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if use_cache:
        cache[ident] = digest
        try:
            atomic_write_text(cpath, json.dumps(cache, indent=0, sort_keys=True))
        except OSError:
            pass  # a read-only home only costs re-hashing
    return digest


def weights_files_hash(*folders: Path) -> str:
    """The weights ``from_pretrained`` loads from transformers folders, as one text: the first 16 hex digits of each
    weight file's sha256 in name order, folder by folder: its ``*.safetensors`` files, or where it has none its
    ``*.bin`` files. It stands for the folders in protocols and score keys (their paths do not), so a folder with
    neither is refused rather than hashed to nothing."""
    parts = []
    for folder in map(Path, folders):
        files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if not files:
            raise AssetError(f"{folder} holds no *.safetensors or *.bin weights")
        parts += [file_sha256(f)[:16] for f in files]
    return ",".join(parts)


def _problem(asset: Asset, path: Path, verify: bool) -> Optional[str]:
    """Why ``path`` is not a usable copy of ``asset`` (None when it is)."""
    if asset.kind == "folder":
        if not path.is_dir():
            return "not there" if not path.exists() else "not a folder"
        missing = [f for f in asset.required_files if not (path / f).is_file()]
        return f"folder lacks {', '.join(missing)}" if missing else None
    if not path.is_file():
        return "not there" if not path.exists() else "not a file"
    if verify and asset.sha256:
        digest = file_sha256(path)
        if not digest.startswith(asset.sha256.lower()):
            return f"sha256 {digest} does not match the expected {asset.sha256}"
    return None


def require(name: str, override_path: Union[str, Path, None] = None, *, verify: bool = True) -> Path:
    """Path of asset ``name``; raises AssetError naming the file, each place looked and the checksum.

    An explicit ``override_path`` that is wrong is an error even if a copy exists elsewhere: the user
    asked for that file.
    """
    asset = get_asset(name)
    looked: list[str] = []
    for where, path in candidates(asset, override_path):
        problem = _problem(asset, path, verify)
        if problem is None:
            return path
        looked.append(f"{where}: {path} ({problem})")
        if override_path and where.startswith("configured"):
            raise AssetError(_message(asset, looked))
    for repo in hf_repos(asset):
        hit, where = _hf_cache_lookup(repo, asset.hf_filename)
        if hit is None:
            looked.append(f"{where}: not cached")
            continue
        problem = _problem(asset, hit, verify)
        if problem is None:
            return hit
        looked.append(f"{where}: {hit} ({problem})")
    raise AssetError(_message(asset, looked))


def _message(asset: Asset, looked: list[str]) -> str:
    lines = [f"asset {asset.name!r} ({asset.description}) was not found or does not match; nothing is downloaded.",
             "  looked in:"]
    lines += [f"    - {entry}" for entry in looked]
    if asset.kind == "folder" and asset.required_files:
        lines.append(f"  a usable folder contains: {', '.join(asset.required_files)}")
    lines.append(f"  expected sha256: {asset.sha256 or '(not fixed)'}")
    hint = f"  put it at {assets_root() / asset.relpath}"
    if asset.config_key.startswith("scorer."):  # a scorer's parameter: where a method uses it, its reward entry
        _, scorer, param = asset.config_key.split(".", 2)
        hint += (f", or give it as the {scorer} scorer's {param} (a method's reward, in its spec: rewards: "
                 f"[{{scorer: {scorer}, params: {{{param}: PATH}}}}])")
    elif asset.config_key:
        hint += f", or point {asset.config_key}=PATH at it"
    lines.append(hint)
    if asset.source:
        lines.append(f"  it is published at {asset.source}")
    return "\n".join(lines)


@dataclass
class AssetStatus:
    asset: Asset
    path: Optional[Path]
    ok: bool
    message: str = ""
    sha256: Optional[str] = None  # computed digest (verify of a file)
    looked: list[str] = field(default_factory=list)


def status(asset: Asset, override_path: Union[str, Path, None] = None, verify: bool = False) -> AssetStatus:
    """Non-raising lookup for ``mubench assets``; ``verify`` hashes found files."""
    try:
        path = require(asset.name, override_path, verify=verify)
    except AssetError as err:
        return AssetStatus(asset, None, False, str(err))
    digest = file_sha256(path) if verify and asset.kind == "file" else None
    return AssetStatus(asset, path, True, "ok", digest)


def parse_asset_overrides(pairs: Iterable[tuple[str, object]]) -> dict[str, str]:
    """``assets.NAME=PATH`` overrides → {NAME: PATH}; unknown names raise UsageError."""
    out: dict[str, str] = {}
    table = manifest()
    for key, value in pairs:
        name = key[len("assets."):]
        if name not in table:
            raise unknown("asset", name, table)
        if not value:
            raise UsageError(f"{key} needs a path")
        out[name] = str(value)
    return out


__all__ = ["Asset", "MANIFEST", "manifest", "get_asset", "select", "require", "status", "candidates", "hf_repos",
           "mubench_home", "assets_root", "file_sha256", "parse_asset_overrides", "AssetStatus"]
