"""A trainable method's recipe (:class:`MethodTrainConfig`) and the training data it names.

``data`` is a registered source (``mubench list datasets``: ``micro``, ``micro-art``, ...), a folder of images +
captions or a ``.parquet`` file. :func:`data_fingerprint` gives its content fingerprint (part of an artifact's
address), :func:`open_data` opens it for the trainer, :func:`check_source_options` refuses file options given with a
registered source.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..errors import UsageError
from ..train.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from ..train.data import TrainingData


@dataclass
class MethodTrainConfig(TrainConfig):
    """A method's training recipe: the trainer settings plus data and diffusion-loss settings.

    ``data``: a registered training-data name (``micro``, ``micro-class``: ``mubench list datasets``) | a folder of
    images + captions | a ``.parquet`` file (see :func:`open_data`);
    None means none is set (training then stops with a message). ``resolution``: training image side (None: the
    model's). ``p_uncond``: probability of replacing a caption by the null prompt "" (caption dropout).
    ``latents``: ``sample`` draws an image's latents from the VAE posterior with the trainer's generator (the
    released scripts' ``latent_dist.sample()``), ``mean`` takes the posterior mean; no difference (and not in the
    artifact key) for codecs without a posterior (pixels, the micro world's space-to-depth).
    ``prediction_type``: the loss target (None: the model's, from its scheduler config).
    """

    data: Optional[str] = None
    resolution: Optional[int] = None
    center_crop: bool = True
    random_flip: bool = True
    p_uncond: float = 0.0
    prediction_type: Optional[str] = None
    min_snr_gamma: Optional[float] = None
    gradient_checkpointing: bool = False
    latents: str = "sample"  # sample | mean: how a VAE encodes the training images
    image_column: Optional[str] = None  # parquet data: the image column (default: image, img, jpg, png, file)
    caption_column: Optional[str] = None  # parquet data: the caption column (default: text, caption, prompt)

    def __post_init__(self) -> None:
        if str(self.mixed_precision) in ("False", "false"):  # YAML reads a bare `no` (or off) as false, and the
            self.mixed_precision = "no"                        # typed config makes that the string 'False'
        super().__post_init__()
        if not 0.0 <= self.p_uncond < 1.0:
            raise UsageError(f"train.p_uncond must be in [0, 1), got {self.p_uncond}")
        if self.latents not in ("sample", "mean"):
            raise UsageError(f"train.latents must be sample or mean, got {self.latents!r}")
        if self.prediction_type not in (None, "epsilon", "v_prediction", "sample"):
            raise UsageError(f"train.prediction_type must be epsilon, v_prediction or sample, "
                             f"got {self.prediction_type!r}")


def _data_sources():
    from ..registry import load_registries

    return load_registries().datasets


def data_fingerprint(spec: Optional[str], *, image_column: Optional[str] = None,
                     caption_column: Optional[str] = None) -> str:
    """Content fingerprint of a data spec: a registered source's, else a folder's or parquet file's
    (:func:`mubench.train.data.data_fingerprint`); "none" when no data is set."""
    from ..train.data import data_fingerprint as file_fingerprint

    sources = _data_sources()
    if spec is not None and str(spec) in sources:
        return sources.get(str(spec)).fingerprint()
    return file_fingerprint(spec, image_column=image_column, caption_column=caption_column, names=sources.names())


def check_source_options(cfg: "MethodTrainConfig") -> None:
    """A registered source makes its own images (its size, no crop or flip, no columns): the file options given with
    one would be ignored (and still change the artifact key), so they are refused."""
    if cfg.data is None or str(cfg.data) not in _data_sources():
        return
    given = [f"{k}={v}" for k, v, default in (("center_crop", cfg.center_crop, True),
                                              ("random_flip", cfg.random_flip, True),
                                              ("image_column", cfg.image_column, None),
                                              ("caption_column", cfg.caption_column, None)) if v != default]
    if given:
        raise UsageError(f"train.data={cfg.data} is a registered source, which makes its own images: "
                         f"{', '.join(f'train.{g}' for g in given)} would be ignored; these options apply to a "
                         "folder or .parquet file")


def open_data(spec: Optional[str], *, batch_size: int, seed: int, resolution: int, center_crop: bool = True,
              random_flip: bool = True, image_column: Optional[str] = None,
              caption_column: Optional[str] = None) -> "TrainingData":
    """The training data of a spec: a registered source (``Registries.datasets``) opened with (batch size, seed,
    resolution), else a folder or parquet file (:func:`mubench.train.data.open_training_data`)."""
    from ..train.data import open_training_data

    sources = _data_sources()
    if spec is not None and str(spec) in sources:
        return sources.get(str(spec)).open(batch_size, seed, resolution)
    return open_training_data(spec, batch_size=batch_size, seed=seed, resolution=resolution, center_crop=center_crop,
                              random_flip=random_flip, image_column=image_column, caption_column=caption_column,
                              names=sources.names())


__all__ = ["MethodTrainConfig", "data_fingerprint", "check_source_options", "open_data"]
