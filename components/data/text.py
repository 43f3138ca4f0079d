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
