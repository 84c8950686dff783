"""``<run dir>/contact.png``: the first images of a run in a grid, each with its prompt (one picture to open)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..fsutil import atomic_write

CONTACT_N = 32  # images on the sheet
TILE = 128  # image side on the sheet (micro images are upscaled without smoothing)
COLUMNS = 8
CAPTION_LINES = 3


def contact_sheet(samples: Sequence[dict[str, Any]], path: Path, n: int = CONTACT_N, tile: int = TILE,
                  columns: int = COLUMNS, title: str = "") -> Path:
    """Draw the first ``n`` samples (``path`` and ``prompt`` of each record) into one PNG; returns ``path``."""
    font = ImageFont.load_default()
    shown = list(samples[:n])
    cols = max(1, min(columns, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    line_h, pad = 12, 6
    cap_h = CAPTION_LINES * line_h + pad
    head = line_h + 2 * pad if title else 0
    sheet = Image.new("RGB", (cols * (tile + pad) + pad, head + rows * (tile + cap_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    width_chars = max(8, tile // 6)
    for k, s in enumerate(shown):
        x = pad + (k % cols) * (tile + pad)
        y = head + pad + (k // cols) * (tile + cap_h + pad)
        try:
            with Image.open(s["path"]) as im:
                im = im.convert("RGB")
                small = max(im.size) < tile  # micro's 32 px: blow up without smoothing, keep the pixels
                scale = tile / max(im.size)
                size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                im = im.resize(size, Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)
                sheet.paste(im, (x, y))
        except (OSError, KeyError):
            draw.rectangle((x, y, x + tile - 1, y + tile - 1), outline="gray")
            draw.text((x + 4, y + tile // 2), "image missing", fill="gray", font=font)
        caption = f"#{s.get('image_index', 0)} {s.get('prompt', '')}"
        lines = textwrap.wrap(caption, width_chars)[:CAPTION_LINES]
        for m, line in enumerate(lines):
            draw.text((x, y + tile + 2 + m * line_h), line, fill="black", font=font)
    return atomic_write(path, lambda fh: sheet.save(fh, format="PNG"))
