"""Images of a report folder: each stored PNG copied (small ones) or thumbnailed (large ones) once, by content."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Optional

from PIL import Image

#: Longest side of a gallery thumbnail; smaller images are copied as they are.
THUMB_SIZE = 256


class ImageFolder:
    """``images/`` of a report: ``add(path)`` → the relative path the page uses, or None if the file is gone."""

    def __init__(self, root: Path, subdir: str = "images", thumb_size: int = THUMB_SIZE) -> None:
        self.root, self.subdir, self.thumb_size = root, subdir, thumb_size
        (root / subdir).mkdir(parents=True, exist_ok=True)
        self._done: dict[str, Optional[str]] = {}

    def add(self, path: Optional[str], sha256: Optional[str] = None) -> Optional[str]:
        if not path:
            return None
        if path in self._done:
            return self._done[path]
        src = Path(path).expanduser()
        if not src.is_file():
            self._done[path] = None
            return None
        name = (sha256 or hashlib.sha256(src.read_bytes()).hexdigest())[:20]
        copy, thumb = f"{self.subdir}/{name}{src.suffix.lower() or '.png'}", f"{self.subdir}/{name}.jpg"
        rel = next((r for r in (copy, thumb) if (self.root / r).is_file()), None)  # made before: by content
        if rel is None:
            rel = self._write(src, copy, thumb)
        self._done[path] = rel
        return rel

    def _write(self, src: Path, copy: str, thumb: str) -> Optional[str]:
        """``src`` copied as ``copy``, or if larger than the thumbnail size shrunk into ``thumb`` (JPEG)."""
        try:
            with Image.open(src) as im:
                if max(im.size) <= self.thumb_size:
                    shutil.copyfile(src, self.root / copy)
                    return copy
                im = im.convert("RGB")
                im.thumbnail((self.thumb_size, self.thumb_size))
                im.save(self.root / thumb, format="JPEG", quality=88)
                return thumb
        except OSError:
            return None

    def add_file(self, src: Path, name: str) -> str:
        """A file (a mask plot) copied under its own name."""
        rel = f"{self.subdir}/{name}"
        shutil.copyfile(src, self.root / rel)
        return rel
