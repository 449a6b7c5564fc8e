import numpy as np
import pytest
import torch

from fmnist.core.errors import OutputError
from fmnist.models import create_model
from fmnist.training.checkpoint import classifier_from_checkpoint, load_checkpoint, save_checkpoint
from fmnist.training.scoring import score_predictions

NAMES = ["a", "b", "c"]


def test_report_metrics_match_a_hand_count():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = torch.tensor([[5, 0, 0], [5, 0, 0], [0, 5, 0], [5, 0, 0], [0, 0, 5], [0, 5, 0]], dtype=torch.float)
    report = score_predictions(logits, labels, NAMES)
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.confusion.tolist() == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
    a = report.per_class[0]
    assert a["precision"] == pytest.approx(2 / 3) and a["recall"] == 1.0 and a["support"] == 2
    assert sorted(report.misclassified(labels, 10).tolist()) == [3, 5]


def test_checkpoint_round_trip_gives_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    net = create_model("mlp", num_classes=3, hidden=[8]).eval()
    path = save_checkpoint(tmp_path / "m.pt", arch="mlp", network="mlp", model_kwargs={"hidden": [8]}, num_classes=3,
                           state_dict=net.state_dict(), mean=0.3, std=0.4, class_names=NAMES)
    model = classifier_from_checkpoint(load_checkpoint(path))
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(model(x), net((x - 0.3) / 0.4))


def test_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(OutputError, match="model.pt: not a readable checkpoint"):
        load_checkpoint(bad)


def test_a_checkpoint_names_its_network_and_older_ones_are_still_understood():
    from fmnist.training.trainers import checkpoint_network

    assert checkpoint_network({"arch": "fast92", "network": "fastcnn"}).name == "fastcnn"
    assert checkpoint_network({"arch": "mlp"}).name == "mlp"  # before recipes named networks: arch was the network
    assert checkpoint_network({"arch": "fast94"}).name == "fastcnn"  # then a registered alias of fastcnn
