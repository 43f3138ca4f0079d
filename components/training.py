"""The one training loop of the platform: epochs, early stopping on a validation score, the best
state kept, progress shown (the behaviour encoder and every ranker train through it, as RecBole's
``Trainer`` serves all its models)."""
from __future__ import annotations

from typing import Callable

from tqdm import tqdm


def fit(run_epoch: Callable[[int, bool], dict], epochs: int, patience: int, score: str,
        keep_best: Callable[[dict], None], on_epoch: Callable[[dict, int], None] | None = None,
        progress: bool = False, label: str = "epochs", start: dict | None = None,
        eval_step: int = 1) -> tuple[list[dict], dict]:
    """Run up to ``epochs`` epochs; stop after ``patience`` validations without a higher ``score``.

    Validation runs every ``eval_step`` epochs and after the last one (RecBole's ``eval_step``:
    where a full-ranking pass costs more than an epoch, NeuMF's, validating less often is the saving).

    ``start``, a row already scored (the untrained residual fusion: the backbone itself), is the
    best to beat; when no epoch beats it, it is returned as the best row and keep_best never runs.

    ``run_epoch(epoch, validate)`` trains one epoch and, when asked, validates, returning the
    epoch's row (loss, and the metrics when validated); ``keep_best(row)`` is called whenever the
    row is the best so far (write a checkpoint, copy the weights); ``on_epoch(row, epoch)`` sees
    every row (an MLflow curve).
    Returns the curve and its best row.
    """
    curve, best, stale = [], start, 0
    bar = tqdm(range(epochs), desc=label, disable=not progress)
    for epoch in bar:
        validate = (epoch + 1) % eval_step == 0 or epoch == epochs - 1
        row = {"epoch": epoch, **run_epoch(epoch, validate)}
        curve.append(row)
        shown = {score.replace("@", ""): f"{row[score]:.4f}"} if validate else {}
        bar.set_postfix(loss=f"{row['loss']:.4f}", **shown)
        if on_epoch:
            on_epoch(row, epoch)
        if not validate:
            continue
        if best is None or row[score] > best[score]:
            best, stale = row, 0
            keep_best(row)
        else:
            stale += 1
            if stale >= patience:
                break
    return curve, best
