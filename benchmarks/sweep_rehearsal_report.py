"""What `sweep_rehearsal.py` samples, reads back and prints: the load while a phase runs, the workers' logs, a
study's trials and runs tallied, and the Markdown for docs/scale.md."""

from __future__ import annotations

import json
import os
import statistics
import threading
from pathlib import Path

from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class LoadSampler:
    """The 1-minute load average every `every` seconds while a phase runs (2 cores: anything beside counts)."""

    def __init__(self, every: float = 5.0):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def shown(self) -> str:
        s = self.samples
        return f"{min(s):.1f}-{max(s):.1f} (mean {statistics.fmean(s):.1f}, {len(s)} samples)"


def outage_lines(logs: Path) -> list[str]:
    """What the workers said about the study's database while PostgreSQL was away, one line each."""
    said = [line for log in sorted(logs.glob("faults-*.log")) for line in log.read_text().splitlines()
            if "heartbeat of trial" in line or "study's database failed" in line]
    return said


def tracebacks(logs: Path, phase: str) -> dict[str, str]:
    found = {}
    for log in sorted(logs.glob(f"{phase}-*.log")):
        lines = log.read_text().splitlines()
        if any("Traceback" in line for line in lines):
            found[log.name] = next((ln for ln in reversed(lines) if ln and not ln.startswith(" ")), "?")[:300]
    return found


def tally(trials: list, runs: list) -> dict:
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    retries = {t.number: t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs}
    by_trial = {int(r.data.tags["fmnist.sweep.trial"]): r for r in runs}
    dead = {t.number: {"run": by_trial[t.number].info.status if t.number in by_trial else "no run",
                       "end_reason": by_trial[t.number].data.tags.get("fmnist.end_reason", "")
                       if t.number in by_trial else ""}
            for t in trials if t.state == TrialState.FAIL}
    statuses = {s: sum(r.info.status == s for r in runs) for s in {r.info.status for r in runs}}
    return {"trials": len(trials), "states": {k: v for k, v in states.items() if v}, "retries": retries,
            "dead": dead, "mlflow_runs": statuses,
            "mlflow_pruned_tag": sum(r.data.tags.get("fmnist.sweep.state") == "PRUNED" for r in runs)}


def scaling_markdown(scaling: list[dict]) -> list[str]:
    lines = ["| workers | wall | trials run | complete | pruned | failed | mean trial (s) | mean complete trial (s) "
             "| trial-seconds | trial-seconds per wall second | 1-minute load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in scaling:
        st = s["states"]
        lines.append(f"| {s['workers']} | {s['wall_s']:.0f} s | {s['trials']} | {st.get('COMPLETE', 0)} | "
                     f"{st.get('PRUNED', 0)} | {st.get('FAIL', 0)} | {s['trial_s_mean']} | "
                     f"{s['complete_trial_s_mean']} | {s['trial_s_sum']:.0f} | {s['trial_s_sum'] / s['wall_s']:.2f} | "
                     f"{s['load']} |")
    return lines


def faults_markdown(result: dict) -> list[str]:
    f = result["faults"]
    return [f"**Faults** (4 workers, heartbeat {result['heartbeat_s']} s, grace {3 * result['heartbeat_s']} s): "
             f"wall {f['wall_s']:.0f} s, 1-minute load {f['load']}.", "", "```", *f["events"], "```", "",
             f"- trial states: {f['states']}; MLflow runs: {f['mlflow_runs']} ({f['mlflow_pruned_tag']} tagged PRUNED)",
             f"- retries (retry: failed trial): {f['retries']}",
             f"- dead trials and their runs: {json.dumps(f['dead'])}",
             f"- finished before the restart {f['finished_before_restart']}, just after "
             f"{f['finished_just_after_restart']}, lost {f['lost_after_restart']}; RUNNING at the restart "
             f"{f['running_at_restart']}",
             f"- worker exits: {f['exits']}; tracebacks: {f['tracebacks'] or 'none'}",
             "- what the workers said about the database:", "", "```", *f["outage_lines"], "```", ""]


def markdown(result: dict) -> str:
    lines = [f"Commit {result['commit']}, {result['date']}; {result['recipe']}.", ""]
    if result["faults"]:
        lines += faults_markdown(result)
    if result["scaling"]:
        lines += scaling_markdown(result["scaling"])
    return "\n".join(lines)
