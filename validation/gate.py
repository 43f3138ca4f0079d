"""Run a GX suite over a table in chunks; stop the pipeline on failure with a readable summary."""
from __future__ import annotations

import logging
from typing import Iterable, TypedDict

import pandas as pd

from components.workspace import VALIDATION, Workspace, write_json

logging.getLogger("great_expectations").setLevel(logging.ERROR)


class GateReport(TypedDict):
    """A passed gate (``validation/<suite>.json``): rows checked, failed expectations, data docs."""
    suite: str
    rows: int
    success: bool
    failures: dict[str, dict]  # expectation -> unexpected count and examples (empty when it passed)
    data_docs: str  # workspace-relative
    chunks: list[dict]  # GX's description of each chunk's run


class ValidationFailed(RuntimeError):
    """A gate's suite failed: the message lists each failed expectation with counts and examples."""


def _context(workspace: Workspace):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(workspace.dir(VALIDATION)))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_gate(name: str, expectations: list, chunks: Iterable[pd.DataFrame], workspace: Workspace) -> GateReport:
    """Validate every chunk against ``expectations``; write ``validation/<name>.json`` and data docs."""
    import great_expectations as gx

    context = _context(workspace)
    source = context.data_sources.add_or_update_pandas(name="reland")
    asset = next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)
    batch = next((b for b in asset.batch_definitions if b.name == "chunk"), None) or \
        asset.add_batch_definition_whole_dataframe("chunk")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add_or_update(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    failures: dict[str, dict] = {}
    rows, chunk_results = 0, []
    for chunk in chunks:
        result = definition.run(batch_parameters={"dataframe": chunk})
        rows += len(chunk)
        chunk_results.append(result.describe_dict())
        for outcome in result.results:
            if not outcome.success:
                config = outcome.expectation_config
                key = f"{config.type}({config.kwargs.get('column', '')})"
                seen = failures.setdefault(key, {"unexpected": 0, "examples": []})
                seen["unexpected"] += int(outcome.result.get("unexpected_count") or 0)
                seen["examples"] += list(outcome.result.get("partial_unexpected_list") or
                                         [outcome.result.get("observed_value")])[:3]
    context.build_data_docs()
    summary = {"suite": name, "rows": rows, "success": not failures, "failures": failures,
               "data_docs": "validation/gx/uncommitted/data_docs/local_site/index.html",  # workspace-relative
               "chunks": chunk_results}
    write_json(workspace.validation_report(name), summary)
    if failures:
        lines = [f"  - {key}: {f['unexpected']} unexpected, e.g. {f['examples'][:3]}" for key, f in failures.items()]
        raise ValidationFailed(f"validation suite '{name}' failed on {rows:,} rows; nothing was published:\n"
                               + "\n".join(lines) + f"\n  details: {workspace.validation_report(name)}")
    return summary
