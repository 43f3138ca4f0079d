"""What leaves the process and what is loaded into it: pseudonyms under a secret that is not in the source."""
from __future__ import annotations

import hashlib
import hmac
import stat

from components.rationales import PSEUDONYM_KEY_ENV, pseudonym, pseudonym_key
from components.workspace import Workspace


def test_pseudonyms_use_a_per_workspace_secret_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(PSEUDONYM_KEY_ENV, raising=False)
    first, second = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    key = pseudonym_key(first)
    assert len(key) == 64 and pseudonym_key(first) == key, "generated once, then reused"
    assert stat.S_IMODE(first.pseudonym_key.stat().st_mode) == 0o600
    assert pseudonym_key(second) != key, "each workspace its own secret"
    old_source_key = hmac.new(b"reland-seed-pseudonym" + b"ml-100k", b"42", hashlib.sha256).hexdigest()[:16]
    assert pseudonym("42", key) != old_source_key and len(pseudonym("42", key)) == 16
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "from-the-secret-store")
    assert pseudonym_key(first) == b"from-the-secret-store"
