"""Soft voting with members chosen on validation alone."""

import numpy as np
import pytest

from fmnist.reporting.ensemble import Member, accuracy, choose, probabilities


def member(name, right_val, right_test, n=100):
    """Logits that are right on the images whose index is in right_*, wrong (class 1 instead of 0) elsewhere."""
    def logits(right):
        out = np.zeros((n, 2), np.float32)
        out[:, 1] = 1.0
        out[list(right), 0] = 3.0
        return out
    return Member(name, name, logits(right_val), logits(right_test))


def test_probabilities_are_a_softmax_per_row():
    p = probabilities(np.array([[0.0, 0.0], [10.0, 0.0]]))
    assert np.allclose(p.sum(1), 1) and p[0, 0] == pytest.approx(0.5) and p[1, 0] > 0.99


def test_the_best_single_model_starts_and_a_model_joins_only_if_validation_gains():
    y = np.zeros(100, int)
    a = member("a", range(0, 80), range(0, 70))
    b = member("b", range(20, 100), range(30, 100))  # wrong where a is right, right where a is wrong
    c = member("c", range(0, 70), range(0, 100))  # the best on test, but never better on validation
    chosen = choose([c, b, a], y, y, max_members=3)
    # b first (0.80, tied with a, listed first); a lifts validation to 1.0; c would drop it to 0.80: left out
    assert [m.run_id for m in chosen.members] == ["b", "a"] and chosen.val_acc == 1.0 and chosen.test_acc == 1.0
    assert chosen.val_acc == pytest.approx(accuracy(np.mean([probabilities(m.val_logits) for m in chosen.members],
                                                            axis=0), y))


def test_a_test_set_favourite_is_never_chosen_for_its_test_score():
    y = np.zeros(100, int)
    good_val = member("val", range(0, 90), range(0, 60))
    good_test = member("test", range(0, 50), range(0, 100))
    chosen = choose([good_test, good_val], y, y, max_members=1)
    assert [m.run_id for m in chosen.members] == ["val"] and chosen.test_acc == pytest.approx(0.60)
