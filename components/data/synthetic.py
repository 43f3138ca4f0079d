"""The embedded default dataset: a generated shop with structure worth learning and reading.

Users belong to latent taste clusters (each anchored on one top category and its own
brands), activity follows a power law (at least 5 interactions), interactions come in
sessions of neighbouring catalogue items, timestamps advance, and behaviour types are
click / cart / purchase.  Items carry brand, a category path and a readable title, a few
of them with promotional noise for the LLM prompt's Step 0 to clean.

Output is a *staged* dataset written block by block (``USERS_PER_BLOCK`` users each), so
memory stays bounded from 10^3 to 10^8 users; the same seed gives the same bytes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from components.config import SyntheticConfig
from components.data.filtering import drop_repeats
from components.data.tables import INTERACTION_SCHEMA, StagedMeta, behaviour_array, items_schema
from components.workspace import atomic_path

USERS_PER_BLOCK = 50_000
BEHAVIOURS = ["click", "cart", "purchase"]
BEHAVIOUR_WEIGHTS = [0.75, 0.17, 0.08]
START, YEAR = 1_672_531_200, 365 * 86_400  # 2023-01-01 UTC

CATALOGUE: dict[str, dict[str, list[str]]] = {
    "Beauty": {"Skin Care": ["Moisturizer", "Cleanser", "Serum", "Face Mask"],
               "Makeup": ["Lipstick", "Mascara", "Foundation", "Eyeliner"],
               "Hair Care": ["Shampoo", "Conditioner", "Hair Oil"]},
    "Sports & Outdoors": {"Camping": ["Tent", "Sleeping Bag", "Lantern"],
                          "Fitness": ["Yoga Mat", "Dumbbell Set", "Resistance Bands"],
                          "Cycling": ["Bike Helmet", "Cycling Gloves", "Bike Light"]},
    "Electronics": {"Audio": ["Wireless Earbuds", "Bluetooth Speaker", "Headphones"],
                    "Accessories": ["USB-C Cable", "Power Bank", "Phone Case"]},
    "Home & Kitchen": {"Cookware": ["Frying Pan", "Dutch Oven", "Saucepan"],
                       "Coffee & Tea": ["French Press", "Tea Kettle", "Coffee Grinder"],
                       "Storage": ["Food Containers", "Spice Rack", "Drawer Organizer"]},
    "Books": {"Fiction": ["Mystery Novel", "Fantasy Novel", "Thriller"],
              "Non-fiction": ["Cookbook", "Biography", "Travel Guide"]},
    "Toys & Games": {"Puzzles": ["Jigsaw Puzzle", "Brain Teaser"], "Board Games": ["Strategy Game", "Party Game"]},
    "Pet Supplies": {"Dogs": ["Dog Leash", "Chew Toy", "Dog Bed"], "Cats": ["Cat Tree", "Cat Litter", "Scratching Post"]},
    "Grocery": {"Snacks": ["Trail Mix", "Granola Bars", "Dark Chocolate"], "Beverages": ["Green Tea", "Cold Brew Coffee"]},
    "Garden": {"Plants": ["Seed Kit", "Herb Planter"], "Tools": ["Pruning Shears", "Garden Hose", "Watering Can"]},
    "Office Products": {"Writing": ["Gel Pens", "Fountain Pen", "Notebook"], "Desk": ["Desk Lamp", "Monitor Stand"]},
    "Baby": {"Feeding": ["Baby Bottle", "High Chair"], "Care": ["Baby Wipes", "Diaper Cream"]},
    "Automotive": {"Car Care": ["Car Wax", "Microfiber Towels"], "Accessories": ["Dash Cam", "Phone Mount"]},
}
ADJECTIVES = ["Hydrating", "Lightweight", "Organic", "Classic", "Premium", "Compact", "Eco-Friendly", "Professional",
              "Gentle", "Durable", "Travel", "Deluxe", "Natural", "Ultra-Soft", "Heavy-Duty", "Vintage"]
VARIANTS = ["", "", ", Pack of 2", ", Large", ", Travel Size", ", Set of 3", ", Black", ", 500 ml"]
PROMOS = ["[HOT SALE] ", "BEST SELLER!!! ", "Limited Offer - ", "FREE SHIPPING "]
SYLLABLES = ["lu", "ma", "ra", "ve", "no", "ki", "sa", "to", "bel", "dor", "fi", "qua", "zen", "mi", "ro", "ta"]
BRANDS_PER_CLUSTER = 6
AGE_GROUPS = ["18-24", "25-34", "35-44", "45-54", "55+"]
REGIONS = ["north", "south", "east", "west", "central"]


def brand_name(index: int) -> str:
    """A pronounceable, deterministic brand name for a brand number."""
    mixed = (index * 2_654_435_761) % 2**32  # Knuth's multiplicative hash spreads neighbours apart
    a, b, c = mixed % 16, (mixed >> 4) % 16, (mixed >> 8) % 16
    return (SYLLABLES[a] + SYLLABLES[b] + SYLLABLES[c]).capitalize()


def item_cluster_bounds(n_items: int, clusters: int) -> np.ndarray:
    """Start of each cluster's contiguous item range (plus the end), items split evenly."""
    return np.linspace(0, n_items, clusters + 1).astype(np.int64)


def generate_items(cfg: SyntheticConfig) -> pd.DataFrame:
    rng = np.random.default_rng([cfg.seed, 0xCA7])
    tops = list(CATALOGUE)
    bounds = item_cluster_bounds(cfg.n_items, cfg.clusters)
    rows = []
    for cluster in range(cfg.clusters):
        top = tops[cluster % len(tops)]
        subs = sorted(CATALOGUE[top])
        size = bounds[cluster + 1] - bounds[cluster]
        # Sort items by subcategory inside a cluster so catalogue neighbours are related (sessions).
        sub_choice = np.sort(rng.integers(0, len(subs), size))
        brands = rng.integers(0, BRANDS_PER_CLUSTER, size) + cluster * BRANDS_PER_CLUSTER
        for sub_index, brand, adj, var, noun_pick, promo in zip(
                sub_choice, brands, rng.integers(0, len(ADJECTIVES), size), rng.integers(0, len(VARIANTS), size),
                rng.random(size), rng.random(size)):
            sub = subs[sub_index]
            noun = CATALOGUE[top][sub][int(noun_pick * len(CATALOGUE[top][sub]))]
            name = brand_name(int(brand))
            title = f"{PROMOS[int(promo * 100) % len(PROMOS)] if promo < 0.05 else ''}{name} {ADJECTIVES[adj]} {noun}{VARIANTS[var]}"
            rows.append((f"i{len(rows):08d}", title, name, [top, sub, noun]))
    items = pd.DataFrame(rows, columns=["item_id", "title", "brand", "categories"])
    items.insert(0, "item", np.arange(len(items), dtype=np.int64))
    return items.assign(year=pd.array([pd.NA] * len(items), "Int32"), description=None)


def _activity(rng: np.random.Generator, n: int, cfg: SyntheticConfig) -> np.ndarray:
    """Interactions per user: 5 plus a Lomax(2) tail, scaled to the configured mean."""
    tail = rng.pareto(2.0, n) * (cfg.mean_interactions - 5)
    return np.minimum(5 + np.rint(tail).astype(np.int64), cfg.max_interactions)


def generate_block(cfg: SyntheticConfig, block: int, first_user: int, n_users: int, popularity: np.ndarray,
                   bounds: np.ndarray) -> tuple[pa.Table, pd.DataFrame]:
    """Interactions and profiles of users ``first_user … first_user + n_users - 1``."""
    rng = np.random.default_rng([cfg.seed, block])
    counts = _activity(rng, n_users, cfg)
    user = np.repeat(np.arange(first_user, first_user + n_users, dtype=np.int64), counts)
    n = len(user)
    first = np.cumsum(counts) - counts  # index of each user's first row
    position = np.arange(n) - np.repeat(first, counts)
    # Taste: a Zipf-skewed primary cluster, a secondary one, and some exploration.
    weights = 1.0 / np.arange(1, cfg.clusters + 1) ** 0.7
    primary = rng.choice(cfg.clusters, n_users, p=weights / weights.sum())
    secondary = rng.integers(0, cfg.clusters, n_users)
    mode = rng.random(n)
    cluster = np.where(mode < 0.75, np.repeat(primary, counts),
                       np.where(mode < 0.9, np.repeat(secondary, counts), rng.integers(0, cfg.clusters, n)))
    size = bounds[cluster + 1] - bounds[cluster]
    rank = np.minimum(np.searchsorted(popularity, rng.random(n) * popularity[-1]), size - 1)
    anchor_item = bounds[cluster] + rank
    # Sessions: after a session start, items are catalogue neighbours of the session's anchor.
    session_start = (position == 0) | (rng.random(n) < 0.35)
    last_start = np.maximum.accumulate(np.where(session_start, np.arange(n), 0))
    offset = np.where(session_start, 0, rng.integers(1, 6, n))
    base = anchor_item[last_start]
    lo, hi = bounds[cluster[last_start]], bounds[cluster[last_start] + 1]
    item = lo + (base - lo + offset) % (hi - lo)
    gaps = rng.exponential(86_400.0, n).astype(np.int64) + 1
    elapsed = np.cumsum(gaps)
    ts = np.repeat(START + rng.integers(0, YEAR, n_users) - (elapsed[first] - gaps[first]), counts) + elapsed
    behaviour = rng.choice(len(BEHAVIOURS), n, p=BEHAVIOUR_WEIGHTS)
    keep = drop_repeats(user, item)
    table = pa.Table.from_arrays([pa.array(user[keep]), pa.array(item[keep]), pa.array(ts[keep]),
                                  behaviour_array(behaviour[keep], BEHAVIOURS)], schema=INTERACTION_SCHEMA)
    ids = np.arange(first_user, first_user + n_users)
    profiles = pd.DataFrame({
        "user": ids, "user_id": np.char.add("u", np.char.zfill(ids.astype(str), 9)),
        "age_group": np.array(AGE_GROUPS)[rng.integers(0, len(AGE_GROUPS), n_users)],
        "region": np.array(REGIONS)[rng.integers(0, len(REGIONS), n_users)]})
    return table, profiles


def generate(cfg: SyntheticConfig, folder: Path, progress: bool = True) -> StagedMeta:
    """Write a staged synthetic dataset of ``cfg.users`` users into ``folder`` (atomically)."""
    bounds = item_cluster_bounds(cfg.n_items, cfg.clusters)
    max_size = int(np.diff(bounds).max())
    popularity = np.cumsum(1.0 / np.arange(1, max_size + 1) ** 1.05)
    rows = 0
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        pq.write_table(pa.Table.from_pandas(generate_items(cfg), schema=items_schema("item"), preserve_index=False),
                       tmp / "items.parquet")
        blocks = range(0, cfg.users, USERS_PER_BLOCK)
        with pq.ParquetWriter(tmp / "interactions.parquet", INTERACTION_SCHEMA) as inter_out, \
                tqdm(total=cfg.users, unit="user", desc="generate", disable=not progress) as bar:
            users_out = None
            for block, first in enumerate(blocks):
                n = min(USERS_PER_BLOCK, cfg.users - first)
                table, profiles = generate_block(cfg, block, first, n, popularity, bounds)
                inter_out.write_table(table)
                profile_table = pa.Table.from_pandas(profiles, preserve_index=False)
                users_out = users_out or pq.ParquetWriter(tmp / "users.parquet", profile_table.schema)
                users_out.write_table(profile_table)
                rows += table.num_rows
                bar.update(n)
            users_out.close()
        meta = StagedMeta(format="synthetic", source=f"synthetic(users={cfg.users}, seed={cfg.seed})",
                          n_users=cfg.users, n_items=cfg.n_items, rows=rows, behaviours=BEHAVIOURS,
                          category_style="path", extra={"clusters": cfg.clusters})
        meta.save(tmp)
    return meta
