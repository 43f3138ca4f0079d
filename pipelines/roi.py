"""Which seed budget pays?  The sweep's lift curve, the budget that maximises net value, its cost at
the user's scale, and the plots users read.

The sweep (``reland experiments sweep``) measures, per backbone and budget, RELAND's relative NDCG@10
lift over +f_item with a 95% interval from the paired per-user differences, and what the pool cost
(calls, tokens, LLM-seconds, $).  Here a saturating curve, lift(x) = a·(1 − e^(−b·x)), or a power law
a·x^c where that fits better, is fitted to lift against the budget x (a fraction of users), and
the recommended budget maximises ``value_per_point`` · lift(x) − cost(x): lift in percentage points,
cost linear in the seeds (the sweep's measured $ per seed, times x · users).  Its range comes from
refitting on lifts redrawn within their intervals (a parametric bootstrap).  Assumptions: the lift
measured on the sweep's data carries over to the user's; cost grows linearly with the seeds; the
value of a lift point is the user's to give.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize

from components.workspace import atomic_path

Z95 = 1.959964
LIFT, LOW, HIGH = "lift_ndcg@10_vs_item_text", "lift_ndcg@10_vs_item_text_low", "lift_ndcg@10_vs_item_text_high"


@dataclass(frozen=True)
class Curve:
    """Lift in percentage points as a function of the budget (a fraction of users)."""

    form: str  # "saturating" or "power"
    a: float
    b: float

    def __call__(self, budget: np.ndarray | float) -> np.ndarray:
        x = np.asarray(budget, float)
        return self.a * (1 - np.exp(-self.b * x)) if self.form == "saturating" else self.a * x ** self.b


def fit_curve(budgets: np.ndarray, lifts: np.ndarray) -> Curve:
    """The saturating or power-law curve with the smaller squared error (at least two budgets)."""
    x, y = np.asarray(budgets, float), np.asarray(lifts, float)
    if len(x) < 2:
        raise ValueError("fitting a lift curve needs at least two budgets")
    candidates = []
    for form, start, bounds in (("saturating", (y[np.argmax(x)], 10.0), ([-1e3, 1e-3], [1e3, 1e4])),
                                ("power", (y[np.argmax(x)], 0.5), ([-1e3, 1e-3], [1e3, 3.0]))):
        curve = Curve(form, 0.0, 1.0)
        try:
            (a, b), _ = optimize.curve_fit(lambda v, a, b, f=form: Curve(f, a, b)(v), x, y, p0=start, bounds=bounds)
            curve = Curve(form, float(a), float(b))
        except RuntimeError:  # no convergence: this form is not a candidate
            continue
        candidates.append((float(np.sum((curve(x) - y) ** 2)), form != "saturating", curve))
    if not candidates:
        raise ValueError("no lift curve fits these points")
    return min(candidates, key=lambda c: c[:2])[2]


def best_budget(curve: Curve, value_per_point: float, usd_per_budget: float, smallest: float = 1e-4) -> float:
    """The budget in [smallest, 1] maximising value_per_point · lift − usd_per_budget · budget; 0 when none is positive."""
    grid = np.geomspace(smallest, 1.0, 20_000)
    net = value_per_point * curve(grid) - usd_per_budget * grid
    return float(grid[np.argmax(net)]) if net.max() > 0 else 0.0


def budget_table(sweep: pd.DataFrame, backbone: str) -> pd.DataFrame:
    """One backbone's budget rows of a sweep table, by budget, with lifts in percentage points."""
    rows = sweep[(sweep["backbone"] == backbone) & (sweep["label"] != "+f_item")].copy()
    if rows.empty:
        raise ValueError(f"the sweep has no budget rows for backbone {backbone!r}; it has {sorted(set(sweep['backbone']))}")
    for column in (LIFT, LOW, HIGH):
        rows[column] = 100 * rows[column]
    return rows.sort_values("budget", ignore_index=True)


def recommend_budget(sweep: pd.DataFrame, backbone: str, value_per_point: float, users: int | None = None,
                     draws: int = 500, seed: int = 0) -> dict:
    """The budget maximising net value for ``users`` users (default: the sweep's), with a 90% range.

    The search reaches a tenth of the smallest budget measured, so a flat curve can recommend a budget
    the sweep never ran: ``extrapolated`` says so, and the CLI prints it."""
    table = budget_table(sweep, backbone)
    seeds = table["seeds"].to_numpy(float)
    sweep_users = float(np.median(seeds / table["budget"]))
    users = int(users or round(sweep_users))
    usd_per_seed = float(table["llm_usd"].sum() / seeds.sum())
    usd_per_budget = usd_per_seed * users  # the price of asking every one of ``users`` users
    curve = fit_curve(table["budget"], table[LIFT])
    chosen = best_budget(curve, value_per_point, usd_per_budget, table["budget"].min() / 10)
    spread = (table[HIGH] - table[LOW]).to_numpy() / (2 * Z95)
    rng = np.random.default_rng(seed)
    redrawn = []
    for _ in range(draws):
        try:
            redrawn.append(best_budget(fit_curve(table["budget"], table[LIFT] + rng.normal(0, spread)),
                                       value_per_point, usd_per_budget, table["budget"].min() / 10))
        except ValueError:
            continue
    low, high = np.percentile(redrawn, [5, 95]) if redrawn else (math.nan, math.nan)
    measured = (float(table["budget"].min()), float(table["budget"].max()))
    return {"backbone": backbone, "value_per_point": value_per_point, "users": users, "curve": curve.form,
            "a": curve.a, "b": curve.b, "budget": chosen, "budget_low": float(low), "budget_high": float(high),
            "measured_budget_min": measured[0], "measured_budget_max": measured[1],
            "extrapolated": bool(chosen) and not measured[0] <= chosen <= measured[1],
            "expected_lift_points": float(curve(chosen)), "lift_at_full_budget_points": float(curve(1.0)),
            "usd_per_seed": usd_per_seed,
            "net_value_usd": float(value_per_point * curve(chosen) - usd_per_budget * chosen),
            **scale_cost(table, chosen, users)}


def scale_cost(table: pd.DataFrame, budget: float, users: int) -> dict:
    """What the pool costs for ``users`` users at ``budget``, and what asking every user would cost
    (the paper's Table 3 comparison), from the sweep's measured cost per seed."""
    per_seed = {k: float(table[column].sum() / table["seeds"].sum()) for k, column in
                (("calls", "llm_calls"), ("prompt_tokens", "llm_prompt_tokens"),
                 ("completion_tokens", "llm_completion_tokens"), ("accelerator_hours", "accelerator_hours"),
                 ("usd", "llm_usd")) if column in table}
    seeds = round(budget * users)
    return {"seeds": seeds, **{f"pool_{k}": v * seeds for k, v in per_seed.items()},
            **{f"per_user_inference_{k}": v * users for k, v in per_seed.items()}}


def per_unit_budget(table: pd.DataFrame, column: str) -> float:
    """A cost column per unit of budget (the sweep's cost, as the plots' x axes, is linear in the budget)."""
    return float(table[column].sum() / table["budget"].sum())


def roi_plot(table: pd.DataFrame, path: Path, recommendation: dict | None = None, log_x: bool = False) -> Path:
    """Lift over +f_item (95% intervals) against $ and against LLM calls, the fitted curve, the recommendation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    per_budget = {column: per_unit_budget(table, column) for column in ("llm_usd", "llm_calls")}
    for axis, column, label in ((axes[0], "llm_usd", "pool cost ($, estimated)"), (axes[1], "llm_calls", "LLM calls")):
        errors = [table[LIFT] - table[LOW], table[HIGH] - table[LIFT]]
        axis.errorbar(table[column], table[LIFT], yerr=errors, fmt="o", capsize=3, label="measured (95% CI)")
        for _, row in table.iterrows():
            axis.annotate(f"{row['budget']:.1%}", (row[column], row[LIFT]), fontsize=7, xytext=(4, 4),
                          textcoords="offset points")
        if recommendation:
            grid = np.geomspace(table["budget"].min(), table["budget"].max(), 200)
            curve = Curve(recommendation["curve"], recommendation["a"], recommendation["b"])
            axis.plot(grid * per_budget[column], curve(grid), "-", alpha=0.6, label=f"fitted ({curve.form})")
            if recommendation["budget"] > 0:
                axis.axvline(recommendation["budget"] * per_budget[column], color="C3", linestyle="--",
                             label=f"recommended {recommendation['budget']:.1%}")
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_xlabel(label + (" (log)" if log_x else ""))
        axis.set_xscale("log" if log_x else "linear")
    axes[0].set_ylabel("NDCG@10 lift over +f_item (%)")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"RELAND seed budget: {table['backbone'].iloc[0]}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=130, format="png")
    plt.close(figure)
    return path


def roi_html(table: pd.DataFrame, path: Path, recommendation: dict | None = None) -> Path:
    """A self-contained page (no script from the network): the plot with a linear/log switch and a
    hover label on every point, and the table behind it."""
    width, height, pad = 640, 360, 48
    lifts = np.r_[table[LOW], table[HIGH], 0.0]
    y_low, y_high = float(lifts.min()), float(lifts.max())
    y_span = (y_high - y_low) or 1.0

    def svg(log_x: bool) -> str:
        x = np.log10(table["llm_usd"].clip(lower=1e-9)) if log_x else table["llm_usd"]
        x_low, x_span = float(x.min()), float(x.max() - x.min()) or 1.0
        sx = lambda v: pad + (v - x_low) / x_span * (width - 2 * pad)  # noqa: E731
        sy = lambda v: height - pad - (v - y_low) / y_span * (height - 2 * pad)  # noqa: E731
        parts = [f'<line x1="{pad}" x2="{width - pad}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" stroke="#999"/>']
        for xi, (_, row) in zip(x, table.iterrows()):
            tip = html.escape(f"budget {row['budget']:.1%}: {int(row['seeds']):,} seeds, {int(row['llm_calls']):,} calls, "
                              f"${row['llm_usd']:.2f}; lift {row[LIFT]:+.2f}% [{row[LOW]:+.2f}, {row[HIGH]:+.2f}]")
            parts.append(f'<g><title>{tip}</title><line x1="{sx(xi):.1f}" x2="{sx(xi):.1f}" y1="{sy(row[LOW]):.1f}" '
                         f'y2="{sy(row[HIGH]):.1f}" stroke="#1f77b4"/><circle cx="{sx(xi):.1f}" cy="{sy(row[LIFT]):.1f}" '
                         f'r="5" fill="#1f77b4"/></g>')
        if recommendation and recommendation["budget"] > 0:
            usd = recommendation["budget"] * per_unit_budget(table, "llm_usd")
            xr = sx(math.log10(usd) if log_x else usd)
            parts.append(f'<line x1="{xr:.1f}" x2="{xr:.1f}" y1="{pad}" y2="{height - pad}" stroke="#d62728" '
                         f'stroke-dasharray="6 4"><title>recommended {recommendation["budget"]:.1%}</title></line>')
        axis = f"pool cost ($){' , log scale' if log_x else ''}"
        parts.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle" font-size="12">{axis}</text>'
                     f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle" '
                     f'font-size="12">NDCG@10 lift over +f_item (%)</text>')
        return f'<svg id="{"log" if log_x else "linear"}" width="{width}" height="{height}">{"".join(parts)}</svg>'

    summary = "" if not recommendation else html.escape(
        f"Recommended budget {recommendation['budget']:.2%} (90% range {recommendation['budget_low']:.2%}–"
        f"{recommendation['budget_high']:.2%}) for {recommendation['users']:,} users at "
        f"${recommendation['value_per_point']:,.0f} per lift point: {recommendation['seeds']:,} seeds, "
        f"${recommendation['pool_usd']:,.2f}.")
    page = f"""<!doctype html><meta charset="utf-8"><title>RELAND seed budget</title>
<style>body{{font-family:sans-serif;margin:2em}} #log{{display:none}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style>
<h2>RELAND seed budget: {html.escape(str(table['backbone'].iloc[0]))}</h2><p>{summary}</p>
<label><input type="checkbox" onchange="document.getElementById('log').style.display=this.checked?'block':'none';
document.getElementById('linear').style.display=this.checked?'none':'block'"> log scale</label>
{svg(False)}{svg(True)}
{table[["budget", "seeds", "llm_calls", "llm_usd", "test_ndcg@10", LIFT, LOW, HIGH]].to_html(index=False, float_format="{:.4g}".format)}
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return path
