"""A COCO-2017-shaped folder for end-to-end tests: random JPEGs named by image id and a captions file, one caption
per image."""
from __future__ import annotations

import json
from pathlib import Path


def coco_folder(root: Path, n: int, first_id: int) -> tuple[Path, Path]:
    """``root/val2017/`` with ``n`` random 48×40 JPEGs (ids ``first_id`` …) and ``root/captions_val2017.json``
    ("a photo of thing k"); returns (captions file, image folder)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img_dir = root / "val2017"
    img_dir.mkdir()
    images, anns = [], []
    for k in range(n):
        name = f"{first_id + k:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(img_dir / name)
        images.append({"id": first_id + k, "file_name": name})
        anns.append({"id": k, "image_id": first_id + k, "caption": f"a photo of thing {k}"})
    cap = root / "captions_val2017.json"
    cap.write_text(json.dumps({"images": images, "annotations": anns}))
    return cap, img_dir
