"""Small training data sets for tests: an image–caption folder and a parquet file (random pixels, fixed seed)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

CAPTIONS = ["a red circle", "a blue square", "two green triangles", "a striped square", "a yellow circle",
            "an orange triangle"]


def _image(rng: np.random.Generator, h: int = 40, w: int = 48) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def caption_folder(folder: Path, n: int = 6, txt_for_last: bool = True) -> Path:
    """``n`` PNGs; captions in captions.jsonl except the last image's, which sits in a same-stem .txt."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        _image(rng).save(folder / f"img{i}.png")
        if txt_for_last and i == n - 1:
            (folder / f"img{i}.txt").write_text(CAPTIONS[i % len(CAPTIONS)] + "\n")
        else:
            rows.append(json.dumps({"file": f"img{i}.png", "caption": CAPTIONS[i % len(CAPTIONS)]}))
    (folder / "captions.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def parquet_file(path: Path, n: int = 5) -> Path:
    """A parquet file with a Hugging Face style image struct column ``image`` and a ``text`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    images = []
    for _ in range(n):
        buf = io.BytesIO()
        _image(rng).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    table = pa.table({"image": images, "text": [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]})
    pq.write_table(table, path)
    return path
