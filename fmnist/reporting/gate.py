"""Champion gating: a retrained model replaces the champion only when it is better on the same data.

The rule (`decide`, a pure function): the challenger becomes `@champion` if there is none yet, or if
it was trained and validated on the same data version (the SHA-256 of the train, validation and test
files its training run recorded), its validation accuracy beats the champion's by at least `margin`,
and its test accuracy is not worse by more than `test_tolerance`. Otherwise it is registered with the
alias `challenger` and the reason says which condition failed. The report stage applies it
(workflows/report.py) and records the decision, both run ids and the figures as tags on the
challenger's model version.
"""

from __future__ import annotations

from dataclasses import dataclass

CHAMPION, CHALLENGER = "champion", "challenger"
DATA_TAG_PREFIX = "data_sha256."  # the training run's tags, one per data file (train, val, test)
# A run imported without its weights (`fmnist runs import`) says so in this tag ("left behind: <why>"); such a
# run never becomes a model version. The name is fmnist/offline/records.py's WEIGHTS_TAG, written out here
# so that the report stage does not depend on the offline package.
WEIGHTS_TAG, LEFT_BEHIND = "fmnist.weights", "left behind"


@dataclass(frozen=True)
class Contender:
    """A model as the gate sees it: its training run, figures and data version."""

    run_id: str
    arch: str
    val_acc: float
    test_acc: float | None
    data: dict[str, str]  # data file name -> SHA-256, from the training run's tags

    @classmethod
    def from_run(cls, run_id: str, arch: str, metrics: dict[str, float], tags: dict[str, str]) -> Contender:
        """From a training run's MLflow metrics and tags (best_val_acc, final_test_acc, data_sha256.*)."""
        data = {k.removeprefix(DATA_TAG_PREFIX): v for k, v in tags.items() if k.startswith(DATA_TAG_PREFIX)}
        return cls(run_id, arch, metrics["best_val_acc"], metrics.get("final_test_acc"), data)


@dataclass(frozen=True)
class GateRule:
    margin: float = 0.002  # validation accuracy the challenger must gain over the champion
    test_tolerance: float = 0.005  # test accuracy it may lose


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str

    @property
    def alias(self) -> str:
        return CHAMPION if self.promote else CHALLENGER

    def tags(self, challenger: Contender, champion: Contender | None, rule: GateRule) -> dict[str, str]:
        """What the model version records about the decision."""
        tags = {"gate.decision": "promoted" if self.promote else "kept the champion", "gate.reason": self.reason,
                "gate.margin": str(rule.margin), "gate.test_tolerance": str(rule.test_tolerance),
                "gate.challenger_run_id": challenger.run_id, "gate.challenger_val_acc": str(challenger.val_acc),
                "gate.challenger_test_acc": str(challenger.test_acc)}
        if champion is not None:
            tags.update({"gate.champion_run_id": champion.run_id, "gate.champion_val_acc": str(champion.val_acc),
                         "gate.champion_test_acc": str(champion.test_acc)})
        return tags


def _short(data: dict[str, str]) -> str:
    return ", ".join(f"{name} {digest[:8]}" for name, digest in sorted(data.items())) or "none recorded"


def decide(challenger: Contender, champion: Contender | None, rule: GateRule = GateRule()) -> Decision:
    if champion is None:
        return Decision(True, "no champion yet")
    if challenger.run_id == champion.run_id:
        return Decision(True, "it is the champion already")
    if not challenger.data or challenger.data != champion.data:
        return Decision(False, f"trained on other data ({_short(challenger.data)}) than the champion "
                               f"({_short(champion.data)}): models are compared on one data version only")
    gain = challenger.val_acc - champion.val_acc
    if gain < rule.margin:
        return Decision(False, f"validation accuracy {challenger.val_acc:.4f} against the champion's "
                               f"{champion.val_acc:.4f}: a gain of {gain:+.4f}, below the margin {rule.margin:g}")
    if challenger.test_acc is not None and champion.test_acc is not None \
            and champion.test_acc - challenger.test_acc > rule.test_tolerance:
        lost = champion.test_acc - challenger.test_acc
        return Decision(False, f"test accuracy {challenger.test_acc:.4f} is {lost:.4f} "
                               f"below the champion's {champion.test_acc:.4f}, more than the tolerance "
                               f"{rule.test_tolerance:g}")
    return Decision(True, f"validation accuracy {challenger.val_acc:.4f} beats the champion's {champion.val_acc:.4f} "
                          f"by {gain:+.4f} (margin {rule.margin:g}) on the same data, test accuracy within "
                          f"{rule.test_tolerance:g}")
