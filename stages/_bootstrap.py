"""Imported first by every stage script: run under the project's environment even when the `python`
on PATH is another one (`.venv/bin/dvc exp run` without an activated environment runs the stages'
`python` from PATH), by re-running the script with `.venv/bin/python`; or stop with one line saying
what to do. Only the standard library here: this runs before we know which Python we are in."""

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's fmnist, whatever else is installed


def ensure_environment() -> None:
    venv_python = ROOT / ".venv" / "bin" / "python"
    in_venv = Path(sys.prefix).resolve() == (ROOT / ".venv").resolve()
    missing = next((name for name in ("pydantic", "yaml", "mlflow", "filelock")
                    if importlib.util.find_spec(name) is None),
                   None)  # found, not imported: a stage that needs no torch does not pay for it
    if in_venv or (missing is None and not venv_python.is_file()):
        return  # the project's environment, or (no .venv here, e.g. conda for `mlflow run`) a complete one
    if venv_python.is_file() and not os.environ.get("FMNIST_STAGE_REEXEC"):
        os.environ["FMNIST_STAGE_REEXEC"] = "1"  # once: never loop
        os.execv(str(venv_python), [str(venv_python), *sys.argv])
    if missing is None:
        return  # re-exec already tried: carry on in this complete environment
    sys.exit(f"error: {Path(sys.argv[0]).name}: this Python ({sys.executable}) has no '{missing}'; run "
             "`make setup`, then `source .venv/bin/activate` (or run DVC as .venv/bin/dvc from the project root)")


ensure_environment()
