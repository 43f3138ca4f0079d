"""`reland experiments recommend-budget` on a sweep table: printed, plotted (offline HTML) and tracked in MLflow."""
from __future__ import annotations

import mlflow
import pandas as pd
from click.testing import CliRunner

from components.tracking import tracking_uri
from components.workspace import Workspace
from pipelines.cli import cli
from pipelines.roi import Curve
from unit.test_budget_recommendation import BUDGETS, synthetic_sweep


def test_recommend_budget_prints_plots_and_logs_the_recommendation(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.studies.mkdir(parents=True, exist_ok=True)
    synthetic_sweep(Curve("saturating", 5.0, 20.0)(BUDGETS)).to_csv(ws.studies / "seed-sweep-synthetic.csv", index=False)
    result = CliRunner().invoke(cli, ["-w", str(ws.root), "experiments", "recommend-budget", "--backbone", "sasrec",
                                      "--value-per-point", "1000", "--users", "1000000"])
    assert result.exit_code == 0, result.output
    assert "recommended budget 11.5" in result.output and "asking every user would cost $10,000.00" in result.output
    assert "extrapolated" not in result.output
    page = (ws.studies / "roi-synthetic-sasrec-recommended.html").read_text()
    assert "<svg" in page and "<script src" not in page and "recommended 11.5" in page
    assert (ws.studies / "roi-synthetic-sasrec-recommended.png").stat().st_size > 10_000
    mlflow.set_tracking_uri(tracking_uri(ws))
    runs = mlflow.search_runs(experiment_names=["seed-sweep-synthetic"])
    assert runs["params.value_per_point"].tolist() == ["1000.0"]
    assert abs(runs["metrics.budget"].iloc[0] - 0.115) < 0.003 and runs["params.extrapolated"].tolist() == ["False"]

    synthetic_sweep(BUDGETS * 0 + 0.3).to_csv(ws.studies / "seed-sweep-synthetic.csv", index=False)
    flat = CliRunner().invoke(cli, ["-w", str(ws.root), "experiments", "recommend-budget", "--value-per-point", "1000"])
    assert "lies outside the budgets the sweep measured (1.00%-100.00%); the curve is extrapolated" in flat.output

    missing = CliRunner().invoke(cli, ["-w", str(tmp_path / "empty"), "experiments", "recommend-budget",
                                       "--value-per-point", "10"])
    assert isinstance(missing.exception, FileNotFoundError)  # main() prints it as one line, exit 2
    assert "no sweep table; run 'reland experiments sweep' first" in str(missing.exception)
