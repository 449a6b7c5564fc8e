"""Early stopping as a pure rule over a sequence of metric values (no torch, no MLflow).

The training loop uses it live; the report recomputes it from logged histories, so both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs.

    The best epoch is the best value seen at all (what the checkpoint keeps); patience counts
    from the last improvement larger than `min_delta` (what counts as progress).
    """

    patience: int
    min_delta: float = 0.0
    mode: str = "max"  # "max" for accuracy, "min" for loss
    best: float | None = None
    best_epoch: int | None = None
    stop_epoch: int | None = None
    _reference: float | None = field(default=None, repr=False)
    _waited: int = field(default=0, repr=False)

    def _better(self, value: float, than: float | None, margin: float) -> bool:
        if than is None:
            return True
        return value > than + margin if self.mode == "max" else value < than - margin

    def update(self, epoch: int, value: float) -> bool:
        """Record `value` for `epoch`; return True if it is a new best. Sets `stop_epoch` once."""
        is_best = self._better(value, self.best, 0.0)
        if is_best:
            self.best, self.best_epoch = value, epoch
        if self._better(value, self._reference, self.min_delta):
            self._reference, self._waited = value, 0
        else:
            self._waited += 1
            if self._waited >= self.patience and self.stop_epoch is None:
                self.stop_epoch = epoch
        return is_best

    @property
    def should_stop(self) -> bool:
        return self.stop_epoch is not None


def mode_for(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


def early_stopping_point(values: list[float], patience: int, min_delta: float, mode: str
                         ) -> tuple[int | None, int | None]:
    """(best epoch, epoch where training would stop) for values indexed by epoch 1..N."""
    rule = EarlyStopping(patience=patience, min_delta=min_delta, mode=mode)
    for epoch, value in enumerate(values, start=1):
        rule.update(epoch, value)
    return rule.best_epoch, rule.stop_epoch
