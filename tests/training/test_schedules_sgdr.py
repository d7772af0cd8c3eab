"""SGDR warm restarts (Loshchilov & Hutter 2017) and the recipe schedule's
SGDR decay, against Keras' CosineDecayRestarts and a numpy loop."""

import keras
import numpy as np
import pytest

from training.schedules import (WarmRestarts, YoloV5Schedule, decay_factor,
                                restart_position)


def numpy_sgdr(t, first, mult, lr0, lr_min):
    """Walk the periods: T_i = first * mult^i."""
    start, period = 0.0, float(first)
    while t >= start + period:
        start += period
        period *= mult
    return lr_min + (lr0 - lr_min) * (1 + np.cos(np.pi * (t - start)
                                                 / period)) / 2


@pytest.mark.parametrize("mult", [1.0, 2.0, 1.5])
def test_warm_restarts_equal_keras_and_numpy(mult):
    ours = WarmRestarts(0.1, first_period=10, period_mult=mult,
                        final_fraction=0.05)
    keras_sgdr = keras.optimizers.schedules.CosineDecayRestarts(
        0.1, first_decay_steps=10, t_mul=mult, m_mul=1.0, alpha=0.05)
    steps = np.arange(0, 120)
    values = np.asarray(ours(steps))
    np.testing.assert_allclose(
        values, [numpy_sgdr(t, 10, mult, 0.1, 0.005) for t in steps],
        rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        values, [float(keras_sgdr(int(t))) for t in steps], rtol=1e-4,
        atol=1e-6)
    # A restart: back to lr0 at the start of each period.
    assert float(ours(10)) == pytest.approx(0.1)
    again = WarmRestarts.from_config(ours.get_config())
    assert float(again(37)) == pytest.approx(float(ours(37)))


def test_restart_position_at_period_boundaries():
    t_cur, t_i = restart_position(np.array([0.0, 9.99, 10.0, 29.99, 30.0]),
                                  10.0, 2.0)
    np.testing.assert_allclose(np.asarray(t_i), [10, 10, 20, 20, 40])
    np.testing.assert_allclose(np.asarray(t_cur), [0, 9.99, 0, 19.99, 0],
                               atol=1e-4)


def test_recipe_schedule_with_sgdr_decays_per_epoch_and_restarts():
    # 9 epochs: periods of 3 and 6 epochs; warmup max(0 epochs, 0 steps).
    s = YoloV5Schedule(0.01, epochs=9, steps_per_epoch=5, decay="sgdr",
                       final_fraction=0.1, warmup_epochs=0,
                       min_warmup_steps=0, batch_size=64)
    # train.py's one-epoch lag: epoch e >= 1 runs at lf(e - 1).
    for epoch in range(9):
        expected = numpy_sgdr(max(epoch - 1, 0), 3, 2.0, 1.0, 0.1) * 0.01
        assert float(s(epoch * 5 + 2)) == pytest.approx(expected, rel=1e-5)
    assert float(decay_factor(3, 9, "sgdr", 0.1)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="first_period"):
        WarmRestarts(0.1, first_period=0)


def test_recipe_schedule_time_budget_shortens_the_decay():
    s = YoloV5Schedule(0.01, epochs=10, steps_per_epoch=10, decay="linear",
                       warmup_epochs=0, min_warmup_steps=0, batch_size=64,
                       adjustable=True)
    s.set_total_steps(40)
    assert s.epochs == 4
    # linear lf(e) = (1 - e / 4) * 0.99 + 0.01; epoch 3 runs at lf(2)
    assert float(s(35)) == pytest.approx(0.01 * (0.5 * 0.99 + 0.01))
