from fmnist.core.stopping import EarlyStopping, early_stopping_point


def test_stops_after_patience_epochs_without_real_improvement():
    # epoch:     1     2     3      4      5
    values = [0.80, 0.85, 0.8505, 0.851, 0.70]
    best, stop = early_stopping_point(values, patience=2, min_delta=0.001, mode="max")
    assert best == 4  # the best value seen, even if its gain is below min_delta
    assert stop == 4  # epochs 3 and 4 both gained <= 0.001 over epoch 2


def test_never_triggers_while_improving_and_loss_mode():
    assert early_stopping_point([1, 2, 3, 4], 1, 0.0, "max") == (4, None)
    assert early_stopping_point([1.0, 0.5, 0.6, 0.7], 2, 0.0, "min") == (2, 4)


def test_stop_epoch_is_recorded_once():
    rule = EarlyStopping(patience=1)
    for epoch, value in enumerate([1.0, 0.5, 0.4, 0.3], start=1):
        rule.update(epoch, value)
    assert rule.stop_epoch == 2 and rule.should_stop
