"""Property-based: random corruptions of a valid RecBole dataset either load, or stop with one line
that names the file; never a traceback, never a partly written workspace."""
from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.config import load_config
from components.data.prepare import prepare_data
from components.errors import InputError
from components.workspace import Workspace
from conftest import random_log, write_recbole


def _valid_files() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_recbole(Path(scratch), random_log(n_users=12, n_items=14))
        return {path.suffix: path.read_bytes() for path in folder.iterdir()}


VALID = _valid_files()


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


@st.composite
def corruption(draw) -> tuple[str, bytes, str]:
    suffix = draw(st.sampled_from([".inter", ".item"]))
    data = VALID[suffix]
    lines = _lines(data)
    row = draw(st.integers(0, len(lines) - 2))
    kind = draw(st.sampled_from(["truncate", "latin-1", "shuffled header", "extra field", "empty field",
                                 "huge value", "missing line", "nul bytes", "words in a number"]))
    fields = lines[row].split(b"\t")
    column = draw(st.integers(0, len(fields) - 1))
    if kind == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif kind == "latin-1":
        lines[row] = lines[row] + "é".encode("latin-1")
    elif kind == "shuffled header":
        header = lines[0].split(b"\t")
        lines[0] = b"\t".join(draw(st.permutations(header)))
    elif kind == "extra field":
        lines[row] = lines[row] + b"\textra"
    elif kind == "empty field":
        fields[column] = b""
        lines[row] = b"\t".join(fields)
    elif kind == "huge value":
        fields[column] = b"9" * draw(st.integers(20, 400))
        lines[row] = b"\t".join(fields)
    elif kind == "missing line":
        del lines[row]
    elif kind == "nul bytes":
        lines[row] = lines[row].replace(b"\t", b"\x00\t", 1)
    else:
        fields[column] = b"lots"
        lines[row] = b"\t".join(fields)
    return suffix, data if kind == "truncate" else b"\n".join(lines), kind


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corruption())
def test_a_corrupted_file_loads_or_stops_with_one_line_naming_it(case):
    suffix, data, _ = case
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "dataset"
        folder.mkdir()
        for name, content in VALID.items():
            (folder / f"toy{name}").write_bytes(data if name == suffix else content)
        workspace = Workspace(Path(scratch) / "ws")
        try:
            prepare_data(load_config(overrides={"data": {"source": str(folder)}}), workspace, progress=False)
        except (InputError, ValueError) as error:  # what the CLI turns into one line and exit code 2
            message = str(error)
            assert "\n" not in message and str(folder) in message, message
            left = [p for p in workspace.root.rglob("*") if p.is_file()] if workspace.root.exists() else []
            assert not left, left
