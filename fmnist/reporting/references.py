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
was evaluated on); anything else is marked instead.
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
        epochs = (f"{self.epochs} epochs" if self.epochs[0].isdigit()
                  else self.epochs if self.epochs == "one fit" else f"epochs {self.epochs}")
        return f"{self.model}; {self.classes} classes; {epochs}; {self.data}"


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

NONE = "none"
REFERENCE_COLUMNS = ["reference", "source", "setting", "difference"]
REFERENCE_HEADERS = ["reference", "source", "reference setting", "difference (points)"]
REFERENCE_NOTE = (
    "**reference**: the test accuracy published for the same architecture by the reference project named "
    "in **source** (a file of the reference projects), measured in **reference setting**. **difference**: "
    "our mean test accuracy over seeds minus the reference, in percentage points; shown only where the "
    "reference has as many classes as our run was evaluated on (else `n/a` says why). Epochs, splits and "
    "test set sizes still differ: compare with the setting, our epochs run and test images in view.")


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
