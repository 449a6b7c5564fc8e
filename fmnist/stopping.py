"""Early stopping as a pure rule over a sequence of metric values (no torch, no MLflow).

The training loop uses it live; the report recomputes it from logged histories, so both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    patience: int
    min_delta: float = 0.0
    mode: str = "max"  # "max" for accuracy, "min" for loss
    best: float | None = None
    best_epoch: int | None = None
    stop_epoch: int | None = None
    _waited: int = field(default=0, repr=False)

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, epoch: int, value: float) -> bool:
        """Record `value` for `epoch`; return True if it is a new best. Sets `stop_epoch` once."""
        if self.improved(value):
            self.best, self.best_epoch, self._waited = value, epoch, 0
            return True
        self._waited += 1
        if self._waited >= self.patience and self.stop_epoch is None:
            self.stop_epoch = epoch
        return False

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
