"""Bad input, counted: every case goes through a real entry point (a stage script, `fmnist`, `dvc repro`,
`mlflow run`) and must end with a non-zero exit, one clear line naming the problem, no traceback (unless
FMNIST_DEBUG=1), and every output written before it byte-for-byte as it was."""

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fmnist.core.io import save_npz, write_json
from fmnist.data.prepare import CLASS_NAMES, normalisation_stats

from conftest import ROOT, synthetic_images

pytestmark = pytest.mark.bad_inputs

SETUP_TIMEOUT = 300


def params_file(project: Path) -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data.update(profile="quick", train_recipes=["mlp", "sk_logreg"])
    data["train"]["device"] = "cpu"
    data["download"]["mirrors"] = []
    data["recipes"]["mlp"]["budgets"]["quick"] = {"epochs": 1, "train_subset": 200}
    data["recipes"]["sk_logreg"]["budgets"]["quick"] = {"model": {"max_iter": 10}}
    return data


def run(*cmd, cwd, env=None, timeout=120, preexec_fn=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FMNIST_"))}
    full_env.update({"PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", **(env or {})})
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn)


def stage(name, *args, **kw):
    return run(sys.executable, str(ROOT / "stages" / f"{name}.py"), *args, **kw)


def fmnist(*args, **kw):
    return run(sys.executable, "-m", "fmnist.cli", *args, **kw)


def snapshot(project: Path) -> dict[str, str]:
    """Every output file's hash (the MLflow store and the transient .fmnist/ folder excluded)."""
    skip = ("mlflow.db", "mlartifacts", ".fmnist", "scratch")
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(project.rglob("*")) if p.is_file() and not p.relative_to(project).parts[0].startswith(skip)}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with data, a trained and evaluated `mlp` and `sk_logreg` (the outputs that must survive)."""
    project = tmp_path_factory.mktemp("bad_inputs")
    (project / "params.yaml").write_text(yaml.safe_dump(params_file(project), sort_keys=False))
    for name, n, seed in (("split/train", 400, 1), ("split/val", 100, 2), ("prepared/test", 100, 3)):
        x, y = synthetic_images(n, seed)
        save_npz(project / "data" / f"{name}.npz", x=x, y=y)
    write_json(project / "data/prepared/stats.json", {**normalisation_stats(synthetic_images(400, 1)[0]),
                                                      "classes": CLASS_NAMES})
    for arch in ("mlp", "sk_logreg"):
        for name in ("train", "evaluate"):
            done = stage(name, "--arch", arch, cwd=project, timeout=SETUP_TIMEOUT)
            assert done.returncode == 0, done.stderr
    (project / "scratch").mkdir()
    return project


def scratch_copy(project: Path, arch: str, name: str) -> Path:
    """A copy of a trained model folder to tamper with (outside the checked outputs)."""
    target = project / "scratch" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(project / "models" / arch, target)
    return target


def tampered(project, how):
    folder = scratch_copy(project, "sk_logreg" if how in ("pickle", "arch") else "mlp", how)
    if how == "pickle":
        import pickle

        (folder / "estimator.pkl").write_bytes(pickle.dumps({"not": "the estimator"}))
    elif how == "arch":  # sk_logreg's checkpoint where mlp's should be
        mlp = scratch_copy(project, "mlp", "arch-mlp")
        shutil.copy(folder / "model.pt", mlp / "model.pt")
        shutil.copy(folder / "estimator.pkl", mlp / "estimator.pkl")
        return mlp
    elif how == "mixed":  # run.json of another training beside this checkpoint
        other = json.loads((project / "models/sk_logreg/run.json").read_text())
        pointer = json.loads((folder / "run.json").read_text())
        pointer["run_id"] = other["run_id"]
        (folder / "run.json").write_text(json.dumps(pointer))
    elif how == "lost-run":
        pointer = json.loads((folder / "run.json").read_text())
        pointer["run_id"] = "0" * 32
        (folder / "run.json").write_text(json.dumps(pointer))
    elif how == "corrupt-ckpt":
        (folder / "model.pt").write_bytes(b"not a checkpoint")
    elif how == "broken-pointer":
        (folder / "run.json").write_text("{ not json")
    return folder


def bad_npz(project, how):
    folder = project / "scratch" / f"npz-{how}"
    folder.mkdir(exist_ok=True)
    x, y = synthetic_images(200, 5)
    if how == "label99":
        y = y.copy()
        y[7] = 99
    if how == "shape":
        x = x[:, :20, :20]
    for name in ("train", "val"):
        save_npz(folder / f"{name}.npz", x=x, y=y)
    if how == "garbage":
        (folder / "train.npz").write_bytes(b"garbage")
    return folder


def evaluate_folder(project, how):
    return stage("evaluate", "--arch", "mlp", "--model-dir", str(tampered(project, how)), "--metrics",
                 str(project / "scratch/m.json"), cwd=project)


def evaluate_sk(project, how):
    folder = tampered(project, how)
    arch = "mlp" if how == "arch" else "sk_logreg"
    return stage("evaluate", "--arch", arch, "--model-dir", str(folder), "--metrics", str(project / "scratch/m.json"),
                 cwd=project)


def train_set(*overrides, arch="mlp"):
    return lambda project: stage("train", "--arch", arch, *[a for o in overrides for a in ("--set", o)],
                                 cwd=project)


def train_with(*args, env=None, arch="mlp"):
    return lambda project: stage("train", "--arch", arch, *args, cwd=project, env=env)


def with_params(edit, script="train", *args):
    def case(project):
        data = params_file(project)
        edit(data)
        path = project / "scratch" / "params.yaml"
        path.write_text(yaml.safe_dump(data))
        return stage(script, "--params", str(path), *args, cwd=project)
    return case


def raw_case(project):
    raw = project / "scratch" / "raw" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 6)
    return stage("preprocess", "--raw", str(project / "scratch/raw"), "--out", str(project / "scratch/prep"),
                 cwd=project)


def download_case(project):
    src = project / "scratch" / "src"
    src.mkdir(exist_ok=True)
    (src / "train-images-idx3-ubyte").write_bytes(b"wrong")
    data = params_file(project)
    data["download"] = {"mirrors": [], "local_dirs": [str(src)], "timeout_s": 1, "retries": 0}
    (project / "scratch/dl.yaml").write_text(yaml.safe_dump(data))
    return stage("download", "--params", str(project / "scratch/dl.yaml"), "--out", str(project / "scratch/raw2"),
                 cwd=project)


def truncated_store(project):
    broken = project / "scratch" / "truncated.db"
    broken.write_bytes((project / "mlflow.db").read_bytes()[:5000])
    return stage("train", "--arch", "mlp", cwd=project, env={"MLFLOW_TRACKING_URI": f"sqlite:///{broken}"})


def full_disk(project):
    """A file-size limit of 1 MiB: the saved training state after epoch 1 cannot be written."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    store = project / "scratch" / "full-disk.db"  # a new, small store: the first big write is ours
    store.unlink(missing_ok=True)
    return run(sys.executable, str(ROOT / "stages/train.py"), "--arch", "mlp", "--set",
               "recipes.mlp.budgets.quick.epochs=2", cwd=project, preexec_fn=limit,
               env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"})


def locked(project):
    from fmnist.workflows.outputs import exclusive

    with exclusive(project / "models" / "mlp", project):
        return stage("train", "--arch", "mlp", cwd=project)


def tampered_logged_model(project):
    from mlflow import MlflowClient

    run_id = json.loads((project / "models/mlp/run.json").read_text())["run_id"]
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    try:
        model_id = MlflowClient().search_logged_models(
            experiment_ids=[MlflowClient().get_run(run_id).info.experiment_id])[0].model_id
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
    pth = next((project / "mlartifacts").rglob(f"{model_id}/**/data/model.pth"), None) or \
        next(p for p in (project / "mlartifacts").rglob("data/model.pth") if model_id in str(p))
    saved = pth.read_bytes()
    pth.write_bytes(saved[:-8] + b"tampered")
    try:
        return fmnist("predict", str(project / "scratch" / "img.png"), "--model", f"models:/{model_id}", cwd=project)
    finally:
        pth.write_bytes(saved)


def dvc_repro_typo(project):
    repo = project / "scratch" / "repo"
    if not repo.exists():
        repo.mkdir()
        for item in ("dvc.yaml", "stages", "fmnist"):
            (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, repo / item)
        shutil.copytree(project / "data", repo / "data")
        shutil.copytree(project / "models", repo / "models")
        for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
            assert run(*cmd, cwd=repo).returncode == 0
    data = params_file(project)
    data["recipes"]["mlp"]["budgets"]["quick"]["epochs"] = 0
    (repo / "params.yaml").write_text(yaml.safe_dump(data))
    before = snapshot(repo / "models")
    # the recipe files first, as `dvc repro` would (the data stages, copied in, are left out)
    done = run(sys.executable, "-m", "dvc", "repro", "--single-item", "resolve", "train@mlp", cwd=repo, timeout=300)
    assert snapshot(repo / "models") == before, "dvc repro deleted or changed the previous model"
    return done


CASES = {
    # params.yaml and overrides
    "epochs 0": (train_set("recipes.mlp.budgets.quick.epochs=0"),
                 "recipes.mlp.budgets.quick.epochs: got 0, allowed range [1, inf]"),
    "lr NaN": (train_set("recipes.mlp.optimizer.lr=.nan"), "recipes.mlp.optimizer.lr: got nan, expected a finite"),
    "lr inf": (train_set("recipes.mlp.optimizer.lr=.inf"), "recipes.mlp.optimizer.lr: got inf, expected a finite"),
    "lr negative": (train_set("recipes.mlp.optimizer.lr=-1"), "recipes.mlp.optimizer.lr: got -1.0, allowed range"),
    "override not YAML": (train_set("train.seed=[1"), "override 'train.seed=[1': the value is not valid YAML"),
    "override without =": (train_set("train.seed"), "override 'train.seed': expected KEY=VALUE"),
    "unknown key": (train_set("train.devise=cpu"), "train.devise: unknown key in train; allowed keys"),
    "wrong type": (train_set("recipes.mlp.batch_size=big"), "recipes.mlp.batch_size: got 'big', expected an integer"),
    "bool as string": (train_set("train.deterministic=maybe"),
                       "train.deterministic: got 'maybe', expected true or false"),
    "unknown optimiser": (train_set("recipes.mlp.optimizer.name=rmsprop"), "allowed values: adam, adamw, sgd"),
    "unknown device": (train_set("train.device=tpu"), "train.device: got 'tpu', allowed values: auto, cpu, cuda"),
    "unknown profile": (train_set("profile=fast"),
                        "profile: got 'fast', allowed values: full, gpu, cpu, quick (the names under profiles:"),
    "zoom out of range": (train_set("recipes.mlp.augment.zoom=0.9"), "augment.zoom: got 0.9, allowed range [0, 0.5]"),
    "unknown architecture": (train_with(arch="vgg99"), "recipes.vgg99: no recipe 'vgg99'"),
    "unknown model option": (train_set("recipes.mlp.model.hiden=[3]"), "recipes.mlp.model: unknown option 'hiden'"),
    "bad model value": (train_set("recipes.mlp.model.dropout=1.5"), "recipes.mlp.model: options"),
    "momentum with adam": (train_set("recipes.mlp.optimizer={name: adam, momentum: 0.9}"), "only sgd takes momentum"),
    "onecycle without max_lr": (train_set("recipes.mlp.scheduler.name=onecycle"), "onecycle needs max_lr"),
    "swa with early stop": (train_set("recipes.mlp.swa.enabled=true", "recipes.mlp.early_stopping.stop=true"),
                            "SWA averages the weights up to the last epoch"),
    "network key on a baseline": (train_set("recipes.sk_logreg.batch_size=64", arch="sk_logreg"),
                                  "'sk_logreg' is a scikit-learn baseline"),
    "cuda without a GPU": (train_set("train.device=cuda"), "train.device is 'cuda' but no CUDA device is available"),
    "val_fraction 1": (with_params(lambda d: d["split"].update(val_fraction=1.0), "split", "--out", "scratch/s"),
                       "split.val_fraction: got 1.0, allowed range (0, 1)"),
    "bad classes": (with_params(lambda d: d["preprocess"].update(classes=[0, 11]), "preprocess", "--out", "scratch/p"),
                    "preprocess.classes: got [0, 11]"),
    "params file missing": (train_with("--params", "nope.yaml"), "nope.yaml: params file not found"),
    "params not YAML": (lambda p: ((p / "scratch/broken.yaml").write_text("profile: [unclosed\n"),
                                   stage("train", "--arch", "mlp", "--params", "scratch/broken.yaml", cwd=p))[1],
                        "not valid YAML"),
    # data
    "split data missing": (train_with("--split", "scratch/nothing"), "train.npz: not found"),
    "array file garbage": (lambda p: stage("train", "--arch", "mlp", "--split", str(bad_npz(p, "garbage")), cwd=p),
                           "not a readable array file"),
    "label 99": (lambda p: stage("train", "--arch", "mlp", "--split", str(bad_npz(p, "label99")), cwd=p),
                 "labels must be class indices 0-9, found 0..99"),
    "images not 28x28": (lambda p: stage("train", "--arch", "mlp", "--split", str(bad_npz(p, "shape")), cwd=p),
                         "expected uint8 images [N, 28, 28]"),
    "truncated IDX file": (raw_case, "train-images-idx3-ubyte: truncated"),
    "wrong official file": (download_case, "train-images-idx3-ubyte: content hash mismatch"),
    # stage outputs and what we load
    "no model trained": (lambda p: stage("evaluate", "--arch", "mlp", "--model-dir", "scratch/none", cwd=p),
                         "run.json: not found"),
    "corrupt checkpoint": (lambda p: evaluate_folder(p, "corrupt-ckpt"), "not a readable checkpoint"),
    "broken run.json": (lambda p: evaluate_folder(p, "broken-pointer"), "run.json: not valid JSON"),
    "checkpoint of another architecture": (lambda p: evaluate_sk(p, "arch"), "is a checkpoint of 'sk_logreg', not "),
    "tampered pickle beside a checkpoint": (lambda p: evaluate_sk(p, "pickle"),
                                            "is not the one its checkpoint recorded"),
    "outputs of two trainings mixed": (lambda p: evaluate_folder(p, "mixed"), "outputs of two trainings are mixed"),
    "run missing from the store": (lambda p: evaluate_folder(p, "lost-run"), "is not in the tracking store"),
    "tampered logged model": (tampered_logged_model, "were changed or swapped, so they are not unpickled"),
    "unknown model URI": (lambda p: fmnist("predict", "x.png", "--model", "models:/nope@champion", cwd=p),
                          "cannot load model models:/nope@champion"),
    # stores, folders, disk, concurrency
    "truncated mlflow.db": (truncated_store, "is not a readable MLflow store"),
    "unreachable tracking server": (train_with(env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}),
                                    "tracking server http://127.0.0.1:9 did not answer within 5 s"),
    "unreachable server for fmnist runs": (lambda p: fmnist("runs", "--stale", cwd=p,
                                                            env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}),
                                           "did not answer within 5 s"),
    "tables without a store": (lambda p: fmnist("tables", "--tracking-uri", "sqlite:///nowhere/mlflow.db", cwd=p),
                               "no MLflow database at nowhere/mlflow.db"),
    "tables of an unknown experiment": (lambda p: fmnist("tables", "--experiment", "nope", cwd=p),
                                        "no MLflow experiment 'nope'"),
    "output folder under a file": (lambda p: ((p / "scratch/file").write_text("x"),
                                              stage("train", "--arch", "mlp", "--model-dir", "scratch/file/m",
                                                    cwd=p))[1], "scratch/file/m is not writable (Not a directory"),
    "full disk": (full_disk, "cannot be written (File too large)"),
    "second training of one architecture": (locked, "models/mlp is being written by pid"),
    "params typo under dvc repro": (dvc_repro_typo, "recipes.mlp.budgets.quick.epochs: got 0, allowed range [1, inf]"),
    "mlflow run with an unknown architecture": (
        lambda p: run(str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "train", "-P", "arch=vgg99",
                      "--env-manager", "local", cwd=p, timeout=180), "recipes.vgg99: no recipe 'vgg99'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line_and_loses_nothing(project, case):
    attempt, message = CASES[case]
    before = snapshot(project)
    done = attempt(project)
    assert done.returncode != 0, f"{case}: exit 0\n{done.stdout}\n{done.stderr}"
    ours = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert any(message in line for line in ours), f"{case}: no one-line error with {message!r}:\n{done.stderr}"
    assert "Traceback" not in done.stderr, f"{case}:\n{done.stderr}"
    assert snapshot(project) == before, f"{case}: an earlier output changed or a half-written one appeared"


def test_fmnist_debug_shows_the_traceback(project):
    done = stage("train", "--arch", "mlp", "--set", "recipes.mlp.budgets.quick.epochs=0", cwd=project,
                 env={"FMNIST_DEBUG": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr
