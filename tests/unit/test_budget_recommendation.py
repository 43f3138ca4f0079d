"""Which seed budget: the lift curve fit, the net-value optimum (known in closed form), the cost at scale."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.roi import Curve, best_budget, fit_curve, recommend_budget

BUDGETS = np.array([0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0])


def synthetic_sweep(lift_points: np.ndarray, users: int = 10_000, usd_per_seed: float = 0.01,
                    half_width: float = 0.2) -> pd.DataFrame:
    """A sweep table as ``experiments sweep`` writes it: lifts as fractions, one row per budget."""
    seeds = np.round(BUDGETS * users)
    lift = lift_points / 100
    return pd.DataFrame({
        "backbone": "sasrec", "label": [f"{b:g}" for b in BUDGETS], "budget": BUDGETS, "seeds": seeds,
        "llm_calls": seeds * 1.5, "llm_prompt_tokens": seeds * 500, "llm_completion_tokens": seeds * 40,
        "accelerator_hours": seeds / 3600, "llm_usd": seeds * usd_per_seed, "test_ndcg@10": 0.04 * (1 + lift),
        "lift_ndcg@10_vs_item_text": lift, "lift_ndcg@10_vs_item_text_low": lift - half_width / 100,
        "lift_ndcg@10_vs_item_text_high": lift + half_width / 100})


def test_the_fit_recovers_a_saturating_curve():
    curve = fit_curve(BUDGETS, Curve("saturating", 5.0, 20.0)(BUDGETS))
    assert curve.form == "saturating" and curve.a == pytest.approx(5.0, rel=1e-3) and curve.b == pytest.approx(20.0, rel=1e-3)
    power = fit_curve(BUDGETS, Curve("power", 3.0, 0.4)(BUDGETS))
    assert power.form == "power" and power.b == pytest.approx(0.4, rel=1e-3)


def test_the_recommended_budget_is_the_known_optimum():
    # lift = 5 (1 - e^(-20 x)) points; value $1,000 a point; $0.01 a seed for 10^6 users: $10^4 per unit of budget.
    # d/dx [1000 * 5 (1 - e^(-20x)) - 10^4 x] = 0  =>  x* = ln(1000 * 5 * 20 / 10^4) / 20 = ln(10) / 20
    optimum = math.log(10) / 20
    sweep = synthetic_sweep(Curve("saturating", 5.0, 20.0)(BUDGETS))
    r = recommend_budget(sweep, "sasrec", value_per_point=1_000, users=1_000_000)
    assert r["budget"] == pytest.approx(optimum, rel=0.02) and not r["extrapolated"]
    assert r["budget_low"] <= optimum <= r["budget_high"] and r["budget_high"] - r["budget_low"] < 0.1
    assert r["seeds"] == round(r["budget"] * 1_000_000)
    assert r["pool_usd"] == pytest.approx(0.01 * r["seeds"]) and r["pool_calls"] == pytest.approx(1.5 * r["seeds"])
    assert r["per_user_inference_usd"] == pytest.approx(10_000) and r["per_user_inference_calls"] == pytest.approx(1.5e6)
    assert r["net_value_usd"] == pytest.approx(1_000 * 5 * (1 - 0.1) - 10_000 * optimum, rel=1e-3)


def test_no_budget_is_recommended_when_nothing_pays():
    assert best_budget(Curve("saturating", -1.0, 20.0), 1_000, 10_000) == 0.0
    sweep = synthetic_sweep(Curve("saturating", 0.5, 20.0)(BUDGETS))
    assert recommend_budget(sweep, "sasrec", value_per_point=1, users=10**8)["budget"] == 0.0
    with pytest.raises(ValueError, match="no budget rows for backbone 'gru4rec'"):
        recommend_budget(sweep, "gru4rec", 1_000)


def test_a_flat_lift_recommends_below_the_sweep_and_says_it_extrapolates():
    # The same lift at every budget: the cheapest budget the search reaches wins, a tenth of the smallest swept.
    r = recommend_budget(synthetic_sweep(np.full(len(BUDGETS), 0.3)), "sasrec", value_per_point=1_000, users=10**6)
    assert r["budget"] < BUDGETS.min() and r["extrapolated"]
    assert (r["measured_budget_min"], r["measured_budget_max"]) == (BUDGETS.min(), BUDGETS.max())
