"""Every loader reads its format into the same canonical tables, text cleaned."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.data import loaders
from components.data.tables import StagedMeta
from components.data.text import clean_text
from conftest import random_log, write_recbole


def test_clean_text_decodes_entities_and_whitespace():
    assert clean_text("Salt &amp;amp; Pepper\t <b>Grinder</b>  ") == "Salt & Pepper Grinder"
    assert clean_text(None) == "" and clean_text(float("nan")) == ""


def test_recbole(recbole_folder):
    raw = loaders.load_dataset(recbole_folder)
    assert raw.format == "recbole" and len(raw.interactions) > 0
    assert raw.items["title"].iloc[0].startswith("Movie & I")
    assert raw.items["categories"].iloc[0] == ["Comedy", "Drama"] and raw.category_style == "tags"
    assert raw.items["year"].iloc[0] == 1999 and raw.users is not None


def test_movielens_dat_with_latin1_titles(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (tmp_path / "movies.dat").write_bytes("10::Café Society (1995)::Comedy|Romance\n20::Heat (1995)::Action\n"
                                          .encode("latin-1"))
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    raw = loaders.load_dataset(tmp_path)
    assert raw.format == "movielens"
    assert raw.items["title"].tolist() == ["Café Society", "Heat"] and raw.items["year"].tolist() == [1995, 1995]
    assert raw.items["categories"].iloc[0] == ["Comedy", "Romance"]
    assert raw.interactions["timestamp"].dtype == np.int64 and set(raw.users.columns) >= {"user_id", "gender"}


def test_the_integer_sequence_layout_of_public_releases_loads_as_it_comes(tmp_path):
    """``Beauty.txt``-style pairs or rows of integer ids, an item table keyed by ``item_id`` with a ``name``."""
    (tmp_path / "Beauty.txt").write_text("1 10\n1 11\n1 12\n2 11 12\n")
    (tmp_path / "item_map.csv").write_text("item_id,name,categories\n10,Lip Balm,\"Beauty, Lips\"\n11,Soap,Beauty\n"
                                           "12,Cream,Beauty\n")
    raw = loaders.load_dataset(tmp_path)
    assert raw.format == "sequence" and raw.synthetic_timestamps
    assert raw.interactions.groupby("user_id")["item_id"].apply(list).to_dict() == {"1": ["10", "11", "12"],
                                                                                   "2": ["11", "12"]}
    assert raw.items.set_index("item_id").loc["10", "title"] == "Lip Balm"
    (tmp_path / "item_map.csv").unlink()
    bare = loaders.load_dataset(tmp_path)
    assert bare.items["title"].isna().all() and "ID-only" in bare.notes[0]


def test_amazon_synthesises_monotone_timestamps(tmp_path):
    (tmp_path / "user_sequence.txt").write_text("A1 X Y Z\nA2 Z X\n")
    (tmp_path / "items.tsv").write_text("asin\ttitle\tbrand\tcategories\nX\tLip Balm &amp; Gloss\tSibu\tBeauty > Lips\n"
                                        "Y\tSoap\t\tBeauty > Bath\nZ\tCream\tCoverGirl\tBeauty > Skin > Face\n")
    raw = loaders.load_dataset(tmp_path)
    assert raw.synthetic_timestamps and raw.category_style == "path"
    a1 = raw.interactions[raw.interactions.user_id == "A1"]
    assert a1["item_id"].tolist() == ["X", "Y", "Z"] and a1["timestamp"].is_monotonic_increasing
    assert raw.items.set_index("item_id").loc["X", "title"] == "Lip Balm & Gloss"
    assert raw.items.set_index("item_id").loc["Z", "categories"] == ["Beauty", "Skin", "Face"]
    assert raw.items.set_index("item_id").loc["Y", "brand"] is None


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_table_with_column_mapping(tmp_path, suffix):
    from components.config import ColumnMapping

    log = random_log().rename(columns={"user_id": "uid", "item_id": "sku", "timestamp": "ts"})
    log["event"] = np.where(np.arange(len(log)) % 3 == 0, "purchase", "click")
    items = pd.DataFrame({"sku": log.attrs["items"], "title": "Thing", "categories": "Home > Kitchen"})
    for name, frame in (("interactions", log), ("items", items)):
        getattr(frame, f"to_{suffix}")(tmp_path / f"{name}.{suffix}", index=False)
    raw = loaders.load_dataset(tmp_path, columns=ColumnMapping(user_id="uid", item_id="sku", timestamp="ts",
                                                               behaviour="event"))
    assert raw.format == "table" and set(raw.interactions["behaviour"]) == {"purchase", "click"}
    assert raw.items["categories"].iloc[0] == ["Home", "Kitchen"]
    (tmp_path / f"items.{suffix}").unlink()
    bare = loaders.load_dataset(tmp_path, columns=ColumnMapping(user_id="uid", item_id="sku", timestamp="ts"))
    assert bare.items["title"].isna().all() and bare.notes == (f"no items table in {tmp_path}: ID-only, item text "
                                                               "unavailable",)


def test_stage_sorts_by_user_then_time_and_drops_repeats(tmp_path):
    log = random_log()
    repeat = log.iloc[[0]].assign(timestamp=log["timestamp"].iloc[0] + 1)
    combined = pd.concat([log, repeat], ignore_index=True)
    combined.attrs = log.attrs
    folder = write_recbole(tmp_path / "toy", combined)
    meta = loaders.stage(loaders.load_dataset(folder), tmp_path / "staged", source="toy")
    staged = pd.read_parquet(tmp_path / "staged" / "interactions.parquet")
    assert meta.repeats_dropped == 1 and len(staged) == len(log)
    assert (np.diff(staged["user"]) >= 0).all()
    assert staged.groupby("user")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    assert StagedMeta.load(tmp_path / "staged").n_users == log["user_id"].nunique()


def test_detect_format_names_what_it_expected(tmp_path):
    with pytest.raises(loaders.InputError, match="cannot tell the dataset format"):
        loaders.detect_format(tmp_path)
