"""Each kind of bad input gives one error naming file, line and column, and leaves nothing half-written."""
from __future__ import annotations

import pandas as pd
import pytest

from components.config import load_config
from components.data.prepare import prepare_data
from components.errors import InputError
from components.workspace import Workspace
from conftest import random_log, write_recbole


def _prepare(folder, tmp_path):
    workspace = Workspace(tmp_path / "ws")
    config = load_config(overrides={"data": {"source": str(folder)}})
    return prepare_data(config, workspace, progress=False)


def _edit_inter(folder, edit):
    path = next(folder.glob("*.inter"))
    path.write_text(edit(path.read_text()))
    return path


def _assert_nothing_written(tmp_path):
    ws = tmp_path / "ws"
    leftovers = [p for p in ws.rglob("*") if p.is_file()] if ws.exists() else []
    assert leftovers == []


CASES = {
    "missing column": (lambda t: t.replace("item_id:token", "itm:token", 1), r"missing required column.*item_id"),
    "wrong type": (lambda t: t.replace("\n", "\nU0\tI1\t4\tyesterday\n", 1), r"line 2, column 'timestamp'.*not a number"),
    "duplicate row": (lambda t: t + t.splitlines()[1] + "\n", r"line \d+: duplicate row"),
    "item without metadata": (lambda t: t + "U0\tNOPE\t4\t1600000000\n", r"column 'item_id'.*'NOPE' has no metadata"),
    "empty file": (lambda t: "", r"file is empty"),
    "header only": (lambda t: t.splitlines()[0] + "\n", r"header but no rows"),
    "negative timestamp": (lambda t: t.replace("\n", "\nU0\tI1\t4\t-5\n", 1),
                           r"line 2, column 'timestamp'.*-5 .* outside the plausible range"),
    "far-future timestamp": (lambda t: t + "U0\tI1\t4\t99999999999\n", r"column 'timestamp'.*99999999999.*outside"),
    "words in a float column": (lambda t: t.replace("\n", "\nU0\tI1\tgreat\t1600000000\n", 1),
                                r"line 2, column 'rating'.*'great' is not a number \(the header types it 'float'\)"),
    "extra field in the first row": (lambda t: t.replace("\n", "\nU0\tI1\t4\t1600000000\tx\n", 1),
                                     r"line 2: 5 fields where the header has 4"),
    "short row later": (lambda t: t + "U0\tI1\n" + t.splitlines()[1] + "\n", r"line \d+: 2 fields where the header has 4"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_interactions(tmp_path, recbole_folder, case):
    edit, message = CASES[case]
    path = _edit_inter(recbole_folder, edit)
    with pytest.raises(InputError, match=message) as info:
        _prepare(recbole_folder, tmp_path)
    assert str(path) in str(info.value)
    _assert_nothing_written(tmp_path)


def test_unreadable_encoding_names_the_line(tmp_path, recbole_folder):
    path = next(recbole_folder.glob("*.inter"))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"\t4\t", b"\t\xff\t")
    path.write_bytes(b"".join(lines))
    with pytest.raises(InputError, match=r"line 4: not valid UTF-8"):
        _prepare(recbole_folder, tmp_path)
    _assert_nothing_written(tmp_path)


def test_catalogue_items_nobody_interacted_with_are_dropped_and_said(tmp_path, recbole_folder):
    path = next(recbole_folder.glob("*.item"))
    path.write_text(path.read_text() + "GHOST\tNobody\t2000\tDrama\n")
    prepared = _prepare(recbole_folder, tmp_path)
    assert "GHOST" not in set(prepared.items()["item_id"])
    assert prepared.stats["notes"] == [f"1 of 26 items in {path.name} appear in no interaction (first 'GHOST'): dropped"]


def test_a_recbole_dataset_without_an_item_file_runs_id_only(tmp_path, recbole_folder):
    from components.data.prepare import dataset_stats

    next(recbole_folder.glob("*.item")).unlink()
    prepared = _prepare(recbole_folder, tmp_path)
    assert prepared.items()["title"].isna().all() and prepared.n_items > 0
    assert dataset_stats(recbole_folder)["notes"] == [f"no .item file in {recbole_folder}: ID-only, item text unavailable"]
    from components.rationales import generate_rationales

    workspace = Workspace(tmp_path / "ws")
    workspace.seeds.parent.mkdir(parents=True, exist_ok=True)
    prepared.users()[["user_idx", "user_id"]].head(3).to_parquet(workspace.seeds)
    with pytest.raises(ValueError, match=r"items.parquet: no item has a title \(the dataset was loaded ID-only\)"):
        generate_rationales(load_config(overrides={"data": {"source": str(recbole_folder)}}), workspace, progress=False)


@pytest.mark.parametrize("text, style, expected", [
    ("Beauty > Skin Care > Face", "path", ["Beauty", "Skin Care", "Face"]),
    ("Beauty, Skin Care, Face", "path", ["Beauty", "Skin Care", "Face"]),
    ("Comedy Drama", "tags", ["Comedy", "Drama"]),
    ("Science Fiction, Film-Noir", "tags", ["Science Fiction", "Film-Noir"]),
    ("Action|Adventure", "tags", ["Action", "Adventure"]),
])
def test_categories_in_the_shapes_real_files_use(text, style, expected):
    from components.data.loaders import split_categories

    assert split_categories(text, style) == expected


def test_item_described_twice(tmp_path, recbole_folder):
    path = next(recbole_folder.glob("*.item"))
    path.write_text(path.read_text() + path.read_text().splitlines()[1] + "\n")
    with pytest.raises(InputError, match="described twice"):
        _prepare(recbole_folder, tmp_path)


def test_unsorted_staged_input_is_rejected(tmp_path):
    from components.config import SyntheticConfig
    from components.data.synthetic import generate

    staged = tmp_path / "staged"
    generate(SyntheticConfig(users=50, seed=1), staged, progress=False)
    table = pd.read_parquet(staged / "interactions.parquet")
    table.iloc[::-1].to_parquet(staged / "interactions.parquet", index=False)
    with pytest.raises(InputError, match="not sorted by user"):
        _prepare(staged, tmp_path)
    assert not (tmp_path / "ws" / "data").exists()


def test_failed_rerun_keeps_previous_good_tables(tmp_path):
    good = write_recbole(tmp_path / "good", random_log())
    prepared = _prepare(good, tmp_path)
    before = prepared.interactions()
    bad = write_recbole(tmp_path / "bad", random_log(seed=3))
    _edit_inter(bad, lambda t: t + "U0\tNOPE\t4\t1600000000\n")
    with pytest.raises(InputError):
        _prepare(bad, tmp_path)
    pd.testing.assert_frame_equal(prepared.interactions(), before)
    assert not [p for p in (tmp_path / "ws").rglob(".*") if p.name.startswith(".")]


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rejected_input_leaves_the_prepared_workspace_byte_identical(tmp_path):
    """Rejected after staging (nothing survives the k-core filter): raw/ and data/ stay exactly as they were."""
    _prepare(write_recbole(tmp_path / "good", random_log()), tmp_path)
    before = _tree(tmp_path / "ws")
    sparse = pd.DataFrame({"user_id": [f"U{i}" for i in range(20)], "item_id": [f"I{i}" for i in range(20)],
                           "timestamp": 1_600_000_000 + pd.RangeIndex(20)})
    sparse.attrs["items"] = list(sparse["item_id"])
    with pytest.raises(ValueError, match=r"sparse.*: no interactions survive the 5-core filter"):
        _prepare(write_recbole(tmp_path / "sparse", sparse), tmp_path)
    assert _tree(tmp_path / "ws") == before


def test_the_first_ragged_row_is_the_one_named(tmp_path):
    from components.data.loaders import read_delimited

    path = tmp_path / "log.tsv"
    path.write_text("user\titem\ttime\nU0\tI0\t1\nU1\tI1\t2\nU2\tI2\nU3\tI3\t4\t5\n")
    with pytest.raises(InputError, match=rf"^{path}, line 4: 2 fields where the header has 3$"):
        read_delimited(path, "\t")
