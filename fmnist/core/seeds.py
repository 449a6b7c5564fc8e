"""Several seeds of one architecture: the spread the train stage writes beside the first seed's summary
(`metrics/train/ARCH.json`) and the tags that group the seeds' MLflow runs. No torch, no MLflow."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from fmnist.core.runs import RunSummary

SEED_GROUP_TAG = "fmnist.seed_group"  # the same on every seed's run of one stage execution
PRIMARY_TAG = "fmnist.primary"  # "true" on the seed whose model is the stage's output (the one evaluated)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class SeedSpread:
    """Mean and sample standard deviation over the seeds (std None for one seed)."""

    n_seeds: int
    best_val_acc_mean: float
    best_val_acc_std: float | None
    test_acc_mean: float | None  # of each seed's kept model, on the test images scored while training
    test_acc_std: float | None
    train_seconds_mean: float

    @classmethod
    def of(cls, summaries: Iterable[RunSummary]) -> SeedSpread:
        summaries = list(summaries)
        val = _mean_std([s.best_val_acc for s in summaries])
        test = _mean_std([s.selected_test_acc for s in summaries if s.selected_test_acc is not None])
        return cls(len(summaries), val[0], val[1], test[0], test[1],
                   statistics.fmean(s.train_seconds for s in summaries))

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """As MLflow metrics on the stage's own run (`seeds_test_acc_std`, ...), so the UI can show the spread
        as a column; a std of one seed is left out."""
        return {f"seeds_{k.removesuffix('_seeds')}": float(v) for k, v in asdict(self).items() if v is not None}


SPREAD_KEYS = tuple(SeedSpread.__dataclass_fields__)


def split_spread(summary: RunSummary) -> tuple[RunSummary, SeedSpread | None]:
    """A summary read from `metrics/train/ARCH.json`: the first seed's own figures, and the seeds' spread."""
    if "n_seeds" not in summary.extra:
        return summary, None
    spread = SeedSpread(**{k: summary.extra.get(k) for k in SPREAD_KEYS})
    own = {k: v for k, v in summary.extra.items() if k not in SPREAD_KEYS}
    return dataclasses.replace(summary, extra=own), spread
