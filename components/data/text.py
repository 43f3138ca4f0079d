"""Cleaning of item text on load: HTML entities decoded, tags dropped, whitespace normalised."""
from __future__ import annotations

import html
import re

_TAG = re.compile(r"<[^>]{1,200}>")
_SPACE = re.compile(r"\s+")


def clean_text(value: object) -> str:
    """Readable single-line text; entities like ``&amp;amp;`` are decoded until stable."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value)
    for _ in range(3):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    return _SPACE.sub(" ", _TAG.sub(" ", text)).strip()


def describe_item(title: object, brand: object, categories: object, separator: str = " > ") -> str:
    """One line that names an item for a text encoder or a prompt: title, brand, categories.

    ``separator`` joins category levels (" > " for a path, ", " for genres or tags).
    """
    parts = [clean_text(title)]
    if clean_text(brand):
        parts.append(f"brand: {clean_text(brand)}")
    cats = [clean_text(c) for c in (categories if categories is not None else [])]
    if any(cats):
        parts.append(f"category: {separator.join(c for c in cats if c)}")
    return "; ".join(p for p in parts if p)
