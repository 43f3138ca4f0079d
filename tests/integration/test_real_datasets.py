"""The real datasets in ../shared/data load with the paper's counts (Table 1)."""
from __future__ import annotations

import pytest

from components.data.prepare import dataset_stats

pytestmark = pytest.mark.realdata

EXPECTED = {
    "ml-100k": ({"users": 943, "items": 1682, "interactions": 100_000}, {"users": 943, "items": 1349, "interactions": 99_287}),
    "amazon-beauty": ({"users": 22_363, "items": 12_101, "interactions": 198_502},) * 2,
    "amazon-sports": ({"users": 35_598, "items": 18_357, "interactions": 296_337},) * 2,
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_match_the_paper(shared_data, name):
    stats = dataset_stats(shared_data / name)
    loaded, filtered = EXPECTED[name]
    assert {k: stats["loaded"][k] for k in loaded} == loaded
    assert {k: stats["filtered"][k] for k in filtered} == filtered
    assert stats["repeats_dropped"] == 0
