"""The published figures beside ours: for each architecture, the test accuracy its reference write-up
reports, which write-up (its file name among the reference projects), and the setting it was measured
in. Only numbers stated in the write-ups are here; an architecture without one has no entry ("none").

The write-ups (see the reference projects' README):
  000_d44ee8688edfdeab.txt  QSTP2018 5-conv CNN in PyTorch
  001_50b7c9999da5a600.txt  ResNet-50 from scratch in Keras, test accuracy per 10 epochs up to 200
  002_85124d4a55dcd85f.txt  Keras CNNs with 1, 3, 4 conv layers and ResNet-50 transfer, on 5 classes
  003_5bc2cf1893dea53c.txt  PyTorch MLP with Xavier init and LR reduction
  004_6339e2a759cdee74.txt  eight networks with a cyclic LR, SWA and light augmentation

Not from them: the scikit-learn figures, from the dataset authors' published benchmark table (source
"Fashion-MNIST benchmark (Zalando)"); fastcnn, fast92/93/94, cpu94 and gpu94 are our own recipes (none).
A difference is shown only where the reference's number of classes equals the run's (the classes the run
was evaluated on); anything else is marked instead. The report's leaderboard shows each source by a short
label ([1] to [5] for the write-ups in file order, Zalando) and cites it in full under the table (SOURCES).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    arch: str
    accuracy: float  # test accuracy as a fraction
    published: str  # as the write-up states it
    source: str  # the write-up's file name
    model: str  # the write-up's name for the network
    classes: int
    epochs: str  # as stated ("30", "not stated", ...)
    data: str  # training data, split and test set

    def setting(self) -> str:
        return f"{self.model}; {self.conditions()}"

    def conditions(self) -> str:
        """The setting less the network's name: what several figures of one write-up can share."""
        epochs = (f"{self.epochs} epochs" if self.epochs[0].isdigit()
                  else self.epochs if self.epochs == "one fit" else f"epochs {self.epochs}")
        return f"{self.classes} classes; {epochs}; {self.data}"


_FULL = "60,000 train / 10,000 test"
_KERAS5 = "48,000 / 12,000 train/val split (80/20), held-out test set; which 5 classes is not stated"
_SWA = "cyclic LR, SWA, flip 0.1, zoom 0.05; " + _FULL + " (as it describes the data)"
_000, _001, _002 = "000_d44ee8688edfdeab.txt", "001_50b7c9999da5a600.txt", "002_85124d4a55dcd85f.txt"
_003, _004 = "003_5bc2cf1893dea53c.txt", "004_6339e2a759cdee74.txt"
_ZALANDO = "Fashion-MNIST benchmark (Zalando)"
_ZALANDO_SETTING = "scikit-learn, best of the benchmark's parameter grid; " + _FULL

REFERENCES: dict[str, Reference] = {r.arch: r for r in (
    Reference("qstp_cnn5", 0.9461, "94.61%", _000, "QSTP 5-conv CNN", 10, "not stated (early stopping)",
              "max test accuracy; " + _FULL),
    Reference("resnet50", 0.90663, "90.663%", _001, "ResNet-50 from scratch", 10, "200",
              _FULL + "; 90.368% at 100 epochs"),
    Reference("cnn1", 0.8412, "84.12%", _002, "Model 1 (1 conv)", 5, "50", "batch 512; " + _KERAS5),
    Reference("cnn3", 0.8892, "88.92%", _002, "Model 3 (3 conv)", 5, "50", "batch 256; " + _KERAS5),
    Reference("cnn4", 0.9028, "90.28%", _002, "Model 4 (4 conv)", 5, "30", "batch 256; " + _KERAS5),
    Reference("resnet50_transfer", 0.8342, "83.42%", _002, "ResNet50, ImageNet transfer", 5, "400",
              "batch 256, 32x32x3 input; " + _KERAS5),
    Reference("mlp", 0.87, "~87%", _003, "MLP, Xavier init", 10, "not stated",
              "approximate figure on unseen test data; Fashion-MNIST's 10 classes implied"),
    Reference("shakeshake_resnet34", 0.9571, "95.71%", _004, "ShakeShake34", 10, "not stated", _SWA),
    Reference("wrn16_4", 0.9533, "95.33%", _004, "WideResnet16-4", 10, "not stated", _SWA),
    Reference("resnet18", 0.9474, "94.74%", _004, "Resnet18 (dropout 0.25)", 10, "not stated", _SWA),
    Reference("resnet34", 0.9471, "94.71%", _004, "ResNet34 (dropout 0.25)", 10, "not stated", _SWA),
    Reference("mini_vgg", 0.9459, "94.59%", _004, "MiniVGG", 10, "not stated", _SWA),
    Reference("basic_cnn", 0.9421, "94.21%", _004, "BasicCNN", 10, "not stated", _SWA),
    Reference("mobilenet_v2", 0.932, "93.2%", _004, "MobileNetV2", 10, "not stated", _SWA),
    Reference("shufflenet_v2", 0.929, "92.9%", _004, "ShuffleNet (version not stated)", 10, "not stated", _SWA),
    # The scikit-learn baselines: the dataset authors' published benchmark table, not a reference project.
    *(Reference(arch, acc, f"{acc:.3f}", _ZALANDO, model, 10, "one fit", _ZALANDO_SETTING)
      for arch, acc, model in (("sk_svc", 0.897, "SVC"), ("sk_random_forest", 0.873, "RandomForestClassifier"),
                               ("sk_mlp", 0.871, "MLPClassifier"), ("sk_knn", 0.854, "KNeighborsClassifier"),
                               ("sk_logreg", 0.842, "LogisticRegression"))),
)}



@dataclass(frozen=True)
class Source:
    label: str  # the leaderboard's short cell
    citation: str  # the note under the leaderboard


# Labels [1]-[5] follow the write-ups' file order (000-004), so a label means the same in every report.
SOURCES: dict[str, Source] = {
    _000: Source("[1]", f"`{_000}`, \"QSTP2018: Image Recognition with Deep Learning on Fashion MNIST Dataset\" "
                        "(a 5-conv CNN in PyTorch)"),
    _001: Source("[2]", f"`{_001}`, \"Training Fashion-MNIST dataset with ResNet-50\" (Keras, from scratch)"),
    _002: Source("[3]", f"`{_002}`, \"Q2 - Classification: Convolutional Neural Networks\" (Keras CNNs with 1, "
                        "3, 4 conv layers and ResNet-50 transfer, on 5 classes)"),
    _003: Source("[4]", f"`{_003}`, \"MNIST Fashion dataset Classification\" (a PyTorch MLP)"),
    _004: Source("[5]", f"`{_004}`, \"Experiments on Fashion Mnist\" (eight networks with a cyclic LR and SWA)"),
    _ZALANDO: Source("Zalando", "the Fashion-MNIST benchmark table of the dataset's authors (Zalando Research, "
                                "the zalandoresearch/fashion-mnist README): scikit-learn classifiers"),
}

NONE = "none"
REFERENCE_COLUMNS = ["reference", "source", "setting", "difference"]  # leaderboard.csv, tables.json
REFERENCE_HEADERS = ["reference", "source", "reference setting", "difference (points)"]
REFERENCE_NOTE = (
    "**published**: the test accuracy published for the same architecture, with its source's label: a "
    "reference project's write-up ([1] to [5]) or the dataset authors' benchmark table (Zalando), each cited "
    "under the table with the setting its figures were measured in; `none` for our own recipes. "
    "**difference**: our mean test accuracy over seeds minus the published figure, in percentage points; "
    "shown only where the setting has as many classes as our run was evaluated on (else `n/a` with the "
    "setting's classes). Epochs, splits and test set sizes still differ: compare with the setting, our "
    "epochs run and test images in view.")


def reference_for(arch: str) -> Reference | None:
    return REFERENCES.get(arch)


def compare(arch: str, ours: float | None, run_classes: int | None) -> dict[str, str]:
    """The reference columns of one leaderboard row: `ours` is our test accuracy (a fraction),
    `run_classes` the number of classes the run was evaluated on (None when unknown)."""
    ref = reference_for(arch)
    if ref is None:
        return {"reference": NONE, "source": "", "setting": "", "difference": ""}
    return {"reference": ref.published, "source": ref.source, "setting": ref.setting(),
            "difference": difference(ref, ours, run_classes)}


def difference(ref: Reference, ours: float | None, run_classes: int | None) -> str:
    if ours is None:
        return ""
    if run_classes is None:
        return f"n/a: {ref.classes}-class reference, the run's classes unknown"
    if run_classes != ref.classes:
        return f"n/a: {ref.classes}-class reference, {run_classes}-class run"
    return f"{(ours - ref.accuracy) * 100:+.2f}"


def published_cell(reference: str | None, source: str | None) -> str:
    """The leaderboard's short reference cell: `94.61% [1]`, `0.897 Zalando`, or `none`."""
    if not reference or reference == NONE:
        return NONE
    return f"{reference} {source_label(source or '')}".strip()


def difference_cell(arch: str, difference: str | None) -> str:
    """The leaderboard's short difference cell: the points, or `n/a (5 classes)` for a setting with another
    number of classes (the long reason stays in leaderboard.csv and tables.json)."""
    ref = reference_for(arch)
    if not difference or not difference.startswith("n/a") or ref is None:
        return difference or ""
    return "n/a (run's classes unknown)" if "unknown" in difference else f"n/a ({ref.classes} classes)"


def source_label(source: str) -> str:
    """The short cell for a reference's source: `[1]`, `Zalando`; an unknown source as it is."""
    return SOURCES[source].label if source in SOURCES else source


def source_notes(archs: list[str]) -> list[str]:
    """The full citation of each source the leaderboard's `archs` cite, in label order, with the setting
    each of those architectures' published figure was measured in."""
    cited: dict[str, dict[str, list[Reference]]] = {}  # source -> conditions -> the figures measured so
    for ref in filter(None, map(reference_for, archs)):
        cited.setdefault(ref.source, {}).setdefault(ref.conditions(), []).append(ref)
    order = list(SOURCES)
    notes = []
    for source in sorted(cited, key=lambda s: order.index(s) if s in order else len(order)):
        settings = " ".join(", ".join(f"`{r.arch}` {r.published} ({r.model})" for r in refs) + f": {conditions}."
                            for conditions, refs in cited[source].items())
        citation = SOURCES[source].citation if source in SOURCES else source
        notes.append(f"**{source_label(source)}** {citation}. {settings}")
    return notes
