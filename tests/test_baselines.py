import numpy as np
import pytest
import torch

from fmnist.data.prepare import Arrays
from fmnist.models import create_model, list_models, model_info
from fmnist.models.baselines import learned_numbers
from fmnist.models.wrapper import EstimatorClassifier, pixels_to_input
from fmnist.training.baseline import features, fit_baseline
from fmnist.training.checkpoint import classifier_from_checkpoint, load_checkpoint, save_checkpoint

from conftest import synthetic_images

BASELINES = ["sk_knn", "sk_logreg", "sk_mlp", "sk_random_forest", "sk_svc"]
SMALL = {"sk_random_forest": {"n_estimators": 10}, "sk_mlp": {"max_iter": 300}}


def arrays(n, seed):
    x, y = synthetic_images(n, seed=seed)
    return Arrays(x, y.astype(np.int64))


def test_the_five_baselines_are_registered_as_sklearn():
    assert list_models("sklearn") == BASELINES
    assert all(model_info(name).kind == "sklearn" for name in BASELINES)
    svc = create_model("sk_svc")
    assert svc.C == 10 and svc.kernel == "rbf"
    knn = create_model("sk_knn")
    assert knn.n_neighbors == 5 and knn.weights == "distance"
    assert create_model("sk_mlp").hidden_layer_sizes == (100,)


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_fits_scores_and_counts_what_it_learned(name):
    train, val, test = arrays(200, 1), arrays(60, 2), arrays(80, 3)
    test = Arrays(test.x, np.where(np.arange(80) % 4 == 0, (test.y + 1) % 10, test.y))  # a quarter mislabelled
    estimator = create_model(name, random_state=0, **SMALL.get(name, {}))
    result = fit_baseline(estimator, train, val, test, seed=0)
    (row,) = result.history
    assert row.epoch == 1 and row.val_acc > 0.8
    # each split scored on its own images: the test figure is the estimator's on the test images, which it
    # never saw, and a quarter of whose labels are wrong (so it cannot equal the validation figure by chance)
    assert row.val_acc == pytest.approx(estimator.score(features(val), val.y))
    assert row.test_acc == pytest.approx(estimator.score(features(test), test.y))
    assert row.test_acc < row.val_acc - 0.1
    assert row.cumulative_seconds >= result.fit_seconds > 0
    assert ("val_loss" in row.row()) == (row.val_loss is not None) == hasattr(estimator, "predict_proba")
    assert learned_numbers(estimator) > 0
    classifier = EstimatorClassifier(estimator, [str(i) for i in range(10)])
    scores = classifier(pixels_to_input(val.x))
    assert scores.shape == (60, 10) and scores.dtype == torch.float32
    assert np.array_equal(scores.argmax(1).numpy(), estimator.predict(features(val)))


def test_learned_numbers_by_estimator_type():
    train = arrays(100, 1)
    logreg = create_model("sk_logreg").fit(features(train), train.y)
    assert learned_numbers(logreg) == 784 * 10 + 10
    knn = create_model("sk_knn").fit(features(train), train.y)
    assert learned_numbers(knn) == 100 * 784
    mlp = create_model("sk_mlp", max_iter=5).fit(features(train), train.y)
    assert learned_numbers(mlp) == 784 * 100 + 100 + 100 * 10 + 10


def test_estimator_checkpoint_round_trip(tmp_path):
    train = arrays(100, 1)
    estimator = create_model("sk_logreg").fit(features(train), train.y)
    path = save_checkpoint(tmp_path / "model.pt", arch="sk_logreg", network="sk_logreg", model_kwargs={},
                           num_classes=10,
                           class_names=[str(i) for i in range(10)], estimator=estimator)
    assert (tmp_path / "estimator.pkl").is_file()
    model = classifier_from_checkpoint(load_checkpoint(path))
    assert isinstance(model, EstimatorClassifier)
    x = pixels_to_input(train.x[:10])
    assert torch.equal(model(x), EstimatorClassifier(estimator, model.class_names)(x))


def test_svc_scores_agree_with_its_predictions_even_for_two_classes():
    train = arrays(200, 1)
    two = Arrays(train.x[train.y < 2], train.y[train.y < 2])
    svc = create_model("sk_svc").fit(features(two), two.y)
    scores = EstimatorClassifier(svc, ["0", "1"])(pixels_to_input(two.x))
    assert scores.shape == (len(two), 2)
    assert np.array_equal(scores.argmax(1).numpy(), svc.predict(features(two)))
    assert not EstimatorClassifier(svc, ["0", "1"]).has_probabilities
