"""The published reference figures beside ours: the table's content, and when a difference is shown."""

import pytest

from fmnist.models import list_models
from fmnist.reporting.references import NONE, REFERENCES, compare, reference_for
from fmnist.reporting.tables import LEADERBOARD_COLUMNS, LEADERBOARD_HEADERS, leaderboard


def test_every_reference_names_a_registered_architecture():
    assert set(REFERENCES) <= set(list_models())
    # a reference project's file name (never a path), or the dataset authors' benchmark table
    assert all((ref.source.endswith(".txt") and "/" not in ref.source) or ref.source.startswith("Fashion-MNIST bench")
               for ref in REFERENCES.values())


@pytest.mark.parametrize("arch, accuracy, source, classes", [
    ("qstp_cnn5", 0.9461, "000_d44ee8688edfdeab.txt", 10),
    ("resnet50", 0.90663, "001_50b7c9999da5a600.txt", 10),
    ("cnn1", 0.8412, "002_85124d4a55dcd85f.txt", 5),
    ("cnn3", 0.8892, "002_85124d4a55dcd85f.txt", 5),
    ("cnn4", 0.9028, "002_85124d4a55dcd85f.txt", 5),
    ("resnet50_transfer", 0.8342, "002_85124d4a55dcd85f.txt", 5),
    ("mlp", 0.87, "003_5bc2cf1893dea53c.txt", 10),
    ("shakeshake_resnet34", 0.9571, "004_6339e2a759cdee74.txt", 10),
    ("wrn16_4", 0.9533, "004_6339e2a759cdee74.txt", 10),
    ("resnet18", 0.9474, "004_6339e2a759cdee74.txt", 10),
    ("resnet34", 0.9471, "004_6339e2a759cdee74.txt", 10),
    ("mini_vgg", 0.9459, "004_6339e2a759cdee74.txt", 10),
    ("basic_cnn", 0.9421, "004_6339e2a759cdee74.txt", 10),
    ("mobilenet_v2", 0.932, "004_6339e2a759cdee74.txt", 10),
    ("shufflenet_v2", 0.929, "004_6339e2a759cdee74.txt", 10),
    ("sk_svc", 0.897, "Fashion-MNIST benchmark (Zalando)", 10),
    ("sk_random_forest", 0.873, "Fashion-MNIST benchmark (Zalando)", 10),
    ("sk_mlp", 0.871, "Fashion-MNIST benchmark (Zalando)", 10),
    ("sk_knn", 0.854, "Fashion-MNIST benchmark (Zalando)", 10),
    ("sk_logreg", 0.842, "Fashion-MNIST benchmark (Zalando)", 10),
])
def test_published_figures(arch, accuracy, source, classes):
    ref = reference_for(arch)
    assert (ref.accuracy, ref.source, ref.classes) == (accuracy, source, classes)
    assert f"{classes} classes" in ref.setting()


@pytest.mark.parametrize("arch", ["fastcnn", "gpu94", "fast92", "fast93", "fast94"])
def test_architectures_without_a_published_figure_say_none(arch):
    assert reference_for(arch) is None
    assert compare(arch, 0.9, 10) == {"reference": NONE, "source": "", "setting": "", "difference": ""}


def test_difference_is_ours_minus_reference_in_points():
    cols = compare("qstp_cnn5", 0.9512, 10)
    assert cols["reference"] == "94.61%" and cols["source"] == "000_d44ee8688edfdeab.txt"
    assert cols["difference"] == "+0.51"
    assert compare("shufflenet_v2", 0.9205, 10)["difference"] == "-0.85"


def test_a_five_class_reference_gives_no_difference_to_a_ten_class_run():
    assert compare("cnn4", 0.9150, 10)["difference"] == "n/a: 5-class reference, 10-class run"
    assert compare("cnn4", 0.9150, 5)["difference"] == "+1.22"  # the run's classes match the setting
    assert compare("cnn4", 0.9150, None)["difference"].startswith("n/a: 5-class reference, the run's classes unknown")
    assert compare("qstp_cnn5", 0.95, 5)["difference"] == "n/a: 10-class reference, 5-class run"
    assert compare("cnn4", None, 5)["difference"] == ""


def test_leaderboard_rows_carry_the_reference_columns():
    assert len(LEADERBOARD_COLUMNS) == len(LEADERBOARD_HEADERS)
    for col in ("reference", "source", "setting", "difference"):
        assert col in LEADERBOARD_COLUMNS
    rows = {r["arch"]: r for r in leaderboard([
        {"arch": "cnn4", "test_acc": 0.91, "n_classes": 10},
        {"arch": "basic_cnn", "test_acc": 0.95, "n_seeds": 3, "test_acc_mean": 0.9400, "test_acc_std": 0.002,
         "n_classes": 10},
        {"arch": "sk_svc", "test_acc": 0.88, "n_classes": 10},
        {"arch": "fastcnn", "test_acc": 0.90, "n_classes": 10}])}
    assert rows["cnn4"]["setting"].startswith("Model 4 (4 conv); 5 classes; 30 epochs")
    assert rows["cnn4"]["difference"].startswith("n/a")
    assert rows["basic_cnn"]["difference"] == "-0.21"  # the seeds' mean, not the evaluated seed's 0.95
    assert rows["sk_svc"]["reference"] == "0.897" and rows["sk_svc"]["difference"] == "-1.70"
    assert rows["fastcnn"]["reference"] == "none" and rows["fastcnn"]["difference"] == ""
