"""The one training loop of the platform: epochs, early stopping on a validation score, the best
state kept, progress shown (the behaviour encoder and every ranker train through it, as RecBole's
``Trainer`` serves all its models)."""
from __future__ import annotations

from typing import Callable

from tqdm import tqdm


def fit(run_epoch: Callable[[int], dict], epochs: int, patience: int, score: str,
        keep_best: Callable[[dict], None], on_epoch: Callable[[dict, int], None] | None = None,
        progress: bool = False, label: str = "epochs", start: dict | None = None) -> tuple[list[dict], dict]:
    """Run up to ``epochs`` epochs; stop after ``patience`` epochs without a higher ``score``.

    ``start``, a row already scored (the untrained residual fusion: the backbone itself), is the
    best to beat; when no epoch beats it, it is returned as the best row and keep_best never runs.

    ``run_epoch(epoch)`` trains one epoch and validates, returning the epoch's row (loss,
    metrics); ``keep_best(row)`` is called whenever the row is the best so far (write a
    checkpoint, copy the weights); ``on_epoch(row, epoch)`` sees every row (an MLflow curve).
    Returns the curve and its best row.
    """
    curve, best, stale = [], start, 0
    bar = tqdm(range(epochs), desc=label, disable=not progress)
    for epoch in bar:
        row = {"epoch": epoch, **run_epoch(epoch)}
        curve.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", **{score.replace("@", ""): f"{row[score]:.4f}"})
        if on_epoch:
            on_epoch(row, epoch)
        if best is None or row[score] > best[score]:
            best, stale = row, 0
            keep_best(row)
        else:
            stale += 1
            if stale >= patience:
                break
    return curve, best
