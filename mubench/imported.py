"""The images of ``mubench score images=DIR``, checked: which prompts and image indices a folder made by another tool
holds, refused where two files claim one image or an index the suite does not make, and what the folder lacks or
holds besides (warnings), so the recorded n and protocol say what was really scored."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Union

from .errors import UsageError
from .suites.base import ImportedImage, PromptItem


def checked_images(suite: Any, folder: Path, items: list[PromptItem], limited: list[PromptItem]) -> list[ImportedImage]:
    """The suite's images in ``folder`` of the ``limited`` prompts (``limit=``: the first N of ``items``), each
    (prompt, image index) once and inside ``0..images_per_prompt-1``; the importer sees every prompt of the suite, so a
    full folder imports under ``limit=``."""
    wanted = {it.id for it in limited}
    every = suite.import_images(folder, items)
    found = [img for img in every if img.item.id in wanted]
    ipp = int(getattr(suite.params, "images_per_prompt", 1))
    seen: dict[tuple[str, int], Path] = {}
    for img in found:
        if not 0 <= img.image_index < ipp:
            raise UsageError(f"{img.path}: image index {img.image_index} of prompt {img.item.id} is outside "
                             f"0..{ipp - 1} (the suite makes {ipp} per prompt; suite.images_per_prompt=N if the "
                             "folder holds more)")
        key = (img.item.id, img.image_index)
        if key in seen:
            raise UsageError(f"{seen[key]} and {img.path} are both image {img.image_index} of prompt "
                             f"{img.item.id}: keep one")
        seen[key] = img.path
    check_one_size(folder, found)
    with_images = {prompt for prompt, _ in seen}
    missing = [it.id for it in limited if it.id not in with_images]
    if found and missing:
        warnings.warn(f"{len(missing)} of {len(limited)} prompts have no image in {folder} (e.g. "
                      f"{', '.join(missing[:3])}): they are left out, n counts the images found", stacklevel=2)
    stray = stray_images(folder, every, suite)
    if stray:
        warnings.warn(f"{len(stray)} PNG file(s) in {folder} match no prompt and image of this suite (e.g. "
                      f"{', '.join(str(p.relative_to(folder)) for p in stray[:3])}): not scored", stacklevel=2)
    return found


def check_one_size(folder: Path, found: list[ImportedImage]) -> None:
    """Refuse a folder whose images differ in size before anything is scored (the scorers take a chunk of images as
    one tensor; each suite resizes by its own protocol, so mubench does not pick a size for the folder)."""
    from PIL import Image

    sizes: dict[tuple[int, int], Path] = {}
    for img in found:
        with Image.open(img.path) as im:  # reads the header only
            sizes.setdefault(im.size, img.path)
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h} (e.g. {p.relative_to(folder)})" for (w, h), p in sorted(sizes.items()))
        raise UsageError(f"the images in {folder} have {len(sizes)} sizes: {listed}; the scorers take a folder of "
                         "one size: resize them to one first")


def stray_images(folder: Path, found: list[ImportedImage], suite: Any) -> list[Path]:
    """PNGs under ``folder`` that no prompt claimed (a misspelt prompt folder), for suites with the default naming
    (``DIR/<prompt id>/<image index>.png``); reference layouts check their own names."""
    from .suites.base import Suite

    if type(suite).import_images is not Suite.import_images:
        return []
    used = {img.path.resolve() for img in found}
    return sorted(p for p in folder.rglob("*.png") if p.resolve() not in used)


def images_per_prompt(found: list[ImportedImage]) -> Union[int, str]:
    """The images per prompt a folder held: one number, or ``"min-max"`` where prompts differ."""
    counts: dict[str, int] = {}
    for img in found:
        counts[img.item.id] = counts.get(img.item.id, 0) + 1
    lo, hi = min(counts.values()), max(counts.values())
    return lo if lo == hi else f"{lo}-{hi}"


__all__ = ["check_one_size", "checked_images", "images_per_prompt", "stray_images"]
