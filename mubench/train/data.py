"""Training data for fine-tuning methods from files: a local image–caption folder or a parquet file.

``open_training_data(spec, ...)`` returns a :class:`TrainingData`: a batch source (``source(step)`` is the batch of
optimizer step ``step``, a function of the step so a resumed run sees exactly the batches an uninterrupted one
would), a content ``fingerprint`` (part of the trained artifact's address) and a ``describe()`` record.

A batch is ``(images, captions)``: float images ``[B, 3, R, R]`` in [0, 1] and a list of ``B`` strings.

Named sources (procedurally generated streams and the like) are registered plug-ins (``Registries.datasets``, each
a :class:`NamedDataSource`); the caller resolves a registered name before it falls back to the paths below
(:func:`mubench.methods.train_recipe.open_data`). Sources here (``spec``):

a folder
    images (``.png .jpg .jpeg .webp .bmp``, searched recursively) with captions from ``captions.jsonl`` (one
    object per line: the image's path relative to the folder under ``file``/``file_name``/``image``/``path`` and
    its caption under ``caption``/``text``/``prompt``) or, for images it does not list, a same-stem ``.txt`` file.
    Images without a caption are an error (named).
a ``.parquet`` file
    one row per example: an image column holding encoded bytes, a Hugging Face ``Image`` struct
    (``{"bytes": ..., "path": ...}``) or a path (relative to the file's folder), and a caption column (names from
    ``image_column`` / ``caption_column``, else the first of ``image, img, jpg, png, file`` and
    ``text, caption, prompt``). Needs ``pyarrow`` (the ``train`` extra). Its fingerprint is the file's sha256, plus
    the sha256 of every file its path cells name.

Folder and parquet examples are visited in epochs, each a seeded permutation; each example is resized (bilinear,
shorter side to the resolution), centre- or randomly cropped and randomly flipped (the diffusers text-to-image
recipe the paper's scripts use). Random choices derive from (seed, epoch) and (seed, position), never from
global state.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..config import stable_hash
from ..errors import UsageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FILE_KEYS = ("file", "file_name", "image", "path")
CAPTION_KEYS = ("caption", "text", "prompt")
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "file")
CAPTION_COLUMNS = ("text", "caption", "prompt")


@dataclass
class TrainingData:
    """A batch source plus what identifies its content."""

    kind: str  # a named source's name | folder | parquet
    source: Callable[[int], tuple[torch.Tensor, list[str]]]
    fingerprint: str  # content hash (part of the artifact key)
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "fingerprint": self.fingerprint, **self.info}


@dataclass(frozen=True)
class NamedDataSource:
    """A registered training-data source: ``fingerprint()`` identifies its content without opening it (part of the
    trained artifact's address: it must not change while the content does not), ``open(batch_size, seed,
    resolution)`` returns its :class:`TrainingData`."""

    fingerprint: Callable[[], str]
    open: Callable[[int, int, int], TrainingData]


def accepted_specs(names: Sequence[str] = ()) -> str:
    """The data specs a message lists: the registered ``names``, a folder, a parquet file."""
    named = "".join(f"{n!r}, " for n in names)
    return f"{named}a folder of images with captions, or a .parquet file"


def data_fingerprint(spec: Optional[str], *, image_column: Optional[str] = None,
                     caption_column: Optional[str] = None, names: Sequence[str] = ()) -> str:
    """Content fingerprint of a folder or parquet spec without opening a batch source ("none" when no data is set);
    ``names`` (the registered sources) only go into the message for a spec that is neither."""
    if spec is None or str(spec).strip() == "":
        return "none"
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        return _folder_examples(path)[1]
    if path.is_file() and path.suffix == ".parquet":
        return _parquet_fingerprint(path, image_column, caption_column)
    raise UsageError(f"training data {spec!r}: expected {accepted_specs(names)} (no such folder or file)")


def open_training_data(spec: Optional[str], *, batch_size: int, seed: int, resolution: int,
                       center_crop: bool = True, random_flip: bool = True, image_column: Optional[str] = None,
                       caption_column: Optional[str] = None, names: Sequence[str] = ()) -> TrainingData:
    """The batch source of a folder or parquet ``spec`` (see the module docstring); ``names`` as in
    :func:`data_fingerprint`."""
    if spec is None or str(spec).strip() == "":
        raise UsageError(f"no training data: set train.data ({accepted_specs(names)})")
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        examples, fp = _folder_examples(path)
        loader: Callable[[Any], Any] = _open_image_path
        kind = "folder"
    elif path.is_file() and path.suffix == ".parquet":
        examples, fp = _parquet_examples(path, image_column, caption_column)
        loader = _open_image_cell(path.parent)
        kind = "parquet"
    else:
        raise UsageError(f"training data {spec!r}: expected {accepted_specs(names)} (no such folder or file)")
    source = EpochSource(examples, loader, batch_size, seed, resolution, center_crop, random_flip)
    info = {"path": str(path), "examples": len(examples), "resolution": resolution, "center_crop": center_crop,
            "random_flip": random_flip}
    return TrainingData(kind, source, fp, info)


# --------------------------------------------------------------------------- folder


def _hash_files(paths: list[Path]) -> list[str]:
    """sha256 of each file, cached by (path, size, mtime) in ``$MUBENCH_HOME/data-hashes.json`` (one read, one
    write), so a large dataset is hashed once, not at every run."""
    from ..fsutil import atomic_write_text
    from ..paths import mubench_home

    cpath = mubench_home() / "data-hashes.json"
    try:
        cache = json.loads(cpath.read_text()) if cpath.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    out, changed = [], False
    for path in paths:
        st = path.stat()
        ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        digest = cache.get(ident)
        if digest is None:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            cache[ident] = digest
            changed = True
        out.append(digest)
    if changed:
        try:
            atomic_write_text(cpath, json.dumps(cache, sort_keys=True))
        except OSError:
            pass  # a read-only home only costs re-hashing
    return out


def _folder_examples(folder: Path) -> tuple[list[tuple[Path, str]], str]:
    images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise UsageError(f"training data folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    listed: dict[str, str] = {}
    jsonl = folder / "captions.jsonl"
    if jsonl.is_file():
        for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                name = next(str(row[k]) for k in FILE_KEYS if k in row)
                caption = next(str(row[k]) for k in CAPTION_KEYS if k in row)
            except (json.JSONDecodeError, StopIteration, TypeError):
                raise UsageError(f"{jsonl}:{n}: expected an object with a file ({'/'.join(FILE_KEYS)}) and a "
                                 f"caption ({'/'.join(CAPTION_KEYS)})") from None
            listed[Path(name).as_posix()] = caption
    examples, missing = [], []
    for img in images:
        rel = img.relative_to(folder).as_posix()
        caption = listed.get(rel)
        if caption is None and img.with_suffix(".txt").is_file():
            caption = img.with_suffix(".txt").read_text(encoding="utf-8").strip()
        if caption is None:
            missing.append(rel)
            continue
        examples.append((img, caption))
    if missing:
        raise UsageError(f"training data folder {folder}: {len(missing)} image(s) without a caption, e.g. "
                         f"{missing[0]} (add it to captions.jsonl or write {Path(missing[0]).stem}.txt)")
    digest = hashlib.sha256()
    for (img, caption), sha in zip(examples, _hash_files([img for img, _ in examples])):
        digest.update(json.dumps([img.relative_to(folder).as_posix(), sha, caption]).encode())
    return examples, "folder:" + digest.hexdigest()[:20]


def _open_image_path(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


# --------------------------------------------------------------------------- parquet


def _parquet_columns(path: Path, image_column: Optional[str], caption_column: Optional[str]) -> tuple[str, str]:
    """(image column, caption column) of a parquet file, from its schema alone."""
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise UsageError(f"reading {path} needs pyarrow: pip install 'mubench[train]' (or pyarrow)") from None
    names = pq.read_schema(path).names
    image_col = image_column or next((c for c in IMAGE_COLUMNS if c in names), None)
    caption_col = caption_column or next((c for c in CAPTION_COLUMNS if c in names), None)
    for what, col, options in (("image", image_col, IMAGE_COLUMNS), ("caption", caption_col, CAPTION_COLUMNS)):
        if col is None or col not in names:
            raise UsageError(f"{path}: no {what} column (looked for {col or ', '.join(options)}; the file has "
                             f"{', '.join(names)}); set train.{what}_column")
    return image_col, caption_col  # type: ignore[return-value]


def _read_parquet(path: Path, image_column: Optional[str], caption_column: Optional[str]):
    import pyarrow.parquet as pq

    image_col, caption_col = _parquet_columns(path, image_column, caption_column)
    table = pq.read_table(path, columns=[image_col, caption_col])
    return table.column(image_col).to_pylist(), [str(c) for c in table.column(caption_col).to_pylist()], \
        image_col, caption_col


def _parquet_fingerprint(path: Path, image_column: Optional[str], caption_column: Optional[str]) -> str:
    """The file's sha256 and its columns; where image cells are paths (a string, or a Hugging Face struct without
    bytes), also each referenced file's sha256 (cached like a folder's), as the images are read from there."""
    from ..assets import file_sha256

    image_col, caption_col = _parquet_columns(path, image_column, caption_column)
    content: dict[str, Any] = {"sha256": file_sha256(path), "image": image_col, "caption": caption_col}
    refs = _referenced_files(path, image_col)
    if refs:  # only then: a parquet of embedded bytes keeps its fingerprint (and its artifacts' keys)
        files = [(p if p.is_absolute() else path.parent / p) for p in (Path(r).expanduser() for r in refs)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise UsageError(f"{path}: {len(missing)} image path(s) of column {image_col!r} name no file, e.g. "
                             f"{missing[0]} (relative paths are read from {path.parent})")
        content["files"] = [[r, sha] for r, sha in zip(refs, _hash_files(files))]
    return "parquet:" + stable_hash(content, 20)


def _referenced_files(path: Path, image_col: str) -> list[str]:
    """The paths the image column's cells point to (in row order), [] where every cell holds its bytes. A binary
    column, or a struct whose ``bytes`` statistics show no null in any row group, is not read at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    kind = pf.schema_arrow.field(image_col).type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return []
    if pa.types.is_struct(kind) and _no_null_bytes(pf, f"{image_col}.bytes"):
        return []
    refs = []
    for batch in pf.iter_batches(columns=[image_col], batch_size=4096):
        for cell in batch.column(0).to_pylist():
            if isinstance(cell, dict) and not cell.get("bytes") and cell.get("path"):
                refs.append(str(cell["path"]))
            elif isinstance(cell, str):
                refs.append(cell)
    return refs


def _no_null_bytes(pf, leaf: str) -> bool:
    """True when every row group's statistics say the struct's ``bytes`` leaf has no null (False if unknown)."""
    meta = pf.metadata
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        col = next((group.column(j) for j in range(group.num_columns) if group.column(j).path_in_schema == leaf),
                   None)
        stats = col.statistics if col is not None else None
        if stats is None or not stats.has_null_count or stats.null_count != 0:
            return False
    return True


def _parquet_examples(path: Path, image_column: Optional[str], caption_column: Optional[str]):
    images, captions, _, _ = _read_parquet(path, image_column, caption_column)
    if not images:
        raise UsageError(f"{path} has no rows")
    return list(zip(images, captions)), _parquet_fingerprint(path, image_column, caption_column)


def _open_image_cell(root: Path) -> Callable[[Any], Any]:
    from PIL import Image

    def load(cell: Any):
        if isinstance(cell, dict):
            cell = cell.get("bytes") or cell.get("path")
        if isinstance(cell, (bytes, bytearray)):
            with Image.open(io.BytesIO(cell)) as im:
                return im.convert("RGB")
        if isinstance(cell, str):
            p = Path(cell).expanduser()
            return _open_image_path(p if p.is_absolute() else root / p)
        raise UsageError(f"cannot read an image from a parquet cell of type {type(cell).__name__}")

    return load


# --------------------------------------------------------------------------- epochs over a list of examples


class EpochSource:
    """Batches over a finite list of examples, epoch by epoch, each a seeded permutation (a function of the step)."""

    def __init__(self, examples: list[tuple[Any, str]], loader: Callable[[Any], Any], batch_size: int, seed: int,
                 resolution: int, center_crop: bool, random_flip: bool) -> None:
        self.examples = examples
        self.loader = loader
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.resolution = int(resolution)
        self.center_crop = center_crop
        self.random_flip = random_flip
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
        return self._perms[epoch]

    def __call__(self, step: int) -> tuple[torch.Tensor, list[str]]:
        n = len(self.examples)
        images, captions = [], []
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            item, caption = self.examples[int(self._perm(pos // n)[pos % n])]
            rng = np.random.default_rng([self.seed, 1, pos])
            images.append(self.transform(self.loader(item), rng))
            captions.append(caption)
        return torch.stack(images), captions

    def transform(self, image, rng: np.random.Generator) -> torch.Tensor:
        """Resize (bilinear, shorter side), crop to a square, maybe flip → float [3, R, R] in [0, 1]."""
        from PIL import Image

        r = self.resolution
        w, h = image.size
        scale = r / min(w, h)
        nw, nh = max(r, round(w * scale)), max(r, round(h * scale))
        image = image.resize((nw, nh), Image.BILINEAR)
        if self.center_crop:
            left, top = (nw - r) // 2, (nh - r) // 2
        else:
            left, top = int(rng.integers(0, nw - r + 1)), int(rng.integers(0, nh - r + 1))
        image = image.crop((left, top, left + r, top + r))
        if self.random_flip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
