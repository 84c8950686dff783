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
        rel = f"{self.subdir}/{name}{src.suffix.lower() or '.png'}"
        dst = self.root / rel
        if not dst.is_file():
            try:
                with Image.open(src) as im:
                    if max(im.size) > self.thumb_size:
                        im = im.convert("RGB")
                        im.thumbnail((self.thumb_size, self.thumb_size))
                        rel = f"{self.subdir}/{name}.jpg"
                        im.save(self.root / rel, quality=88)
                    else:
                        shutil.copyfile(src, dst)
            except OSError:
                self._done[path] = None
                return None
        self._done[path] = rel
        return rel

    def add_file(self, src: Path, name: str) -> str:
        """A file (a mask plot) copied under its own name."""
        rel = f"{self.subdir}/{name}"
        shutil.copyfile(src, self.root / rel)
        return rel
