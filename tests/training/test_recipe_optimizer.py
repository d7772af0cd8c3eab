"""The yolov5 recipe's optimizer against ultralytics' own code: per-group
learning rates and momentum (train.py's warmup + LambdaLR), the SGD step
(torch.optim.SGD nesterov with coupled L2, accumulation, clip_grad_norm_)
and the EMA (yolov5.utils.torch_utils.ModelEMA)."""

import os
import sys

import keras
import numpy as np
import pytest

from training.ema import ema_decay
from training.optimizer import (YoloSGD, make_recipe_optimizer, param_group,
                                scaled_weight_decay)
from training.schedules import YoloV5Schedule

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conftest import require_peer  # noqa: E402

NBS = 64


def _ref():
    return require_peer("yolov5_reference",
                        "(bash .ci/install_parity)").load()


class _TorchNet:
    """A conv + BN module: yolov5 smart_optimizer sees its three groups."""

    @staticmethod
    def build(torch):
        net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1, bias=True),
                                  torch.nn.BatchNorm2d(3))
        return net


def _reference_schedule(ref, epochs, nb, batch_size, cos_lr, hyp, steps):
    """train.py lines 172-182 and 266-318, driven for `steps` batches:
    (lr per group, momentum per group, accumulate) at each batch."""
    torch = ref.torch
    from torch.optim import lr_scheduler
    from yolov5.utils.torch_utils import smart_optimizer

    hyp = dict(hyp)
    model = _TorchNet.build(torch)
    accumulate = max(round(NBS / batch_size), 1)
    hyp["weight_decay"] *= batch_size * accumulate / NBS
    optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"],
                                hyp["weight_decay"])
    if cos_lr:
        lf = ref.general.one_cycle(1, hyp["lrf"], epochs)
    else:
        lf = lambda x: (1 - x / epochs) * (1.0 - hyp["lrf"]) + hyp["lrf"]  # noqa: E731
    scheduler = lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    nw = max(round(hyp["warmup_epochs"] * nb), 100)
    scheduler.last_epoch = -1
    out = []
    for epoch in range(epochs):
        for i in range(nb):
            ni = i + nb * epoch
            if ni <= nw:
                xi = [0, nw]
                accumulate = max(1, np.interp(ni, xi,
                                              [1, NBS / batch_size]).round())
                for j, x in enumerate(optimizer.param_groups):
                    x["lr"] = np.interp(ni, xi, [
                        hyp["warmup_bias_lr"] if j == 0 else 0.0,
                        x["initial_lr"] * lf(epoch)])
                    if "momentum" in x:
                        x["momentum"] = np.interp(
                            ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])
            out.append(([g["lr"] for g in optimizer.param_groups],
                        [g["momentum"] for g in optimizer.param_groups],
                        accumulate,
                        [g["weight_decay"] for g in optimizer.param_groups]))
            if len(out) == steps:
                return out
        scheduler.step()
    return out


HYP = dict(lr0=0.01, lrf=0.01, momentum=0.937, weight_decay=0.0005,
           warmup_epochs=3.0, warmup_momentum=0.8, warmup_bias_lr=0.1)


@pytest.mark.parametrize("cos_lr,batch_size,nb", [(False, 16, 30),
                                                  (True, 24, 50),
                                                  (False, 128, 20)])
def test_schedule_equals_train_py_for_every_group_and_batch(cos_lr,
                                                             batch_size, nb):
    ref = _ref()
    epochs = 6
    steps = epochs * nb
    expected = _reference_schedule(ref, epochs, nb, batch_size, cos_lr, HYP,
                                   steps)
    ours = YoloV5Schedule(0.01, epochs, nb,
                          decay="cosine" if cos_lr else "linear",
                          batch_size=batch_size)
    ni = np.arange(steps)
    lr_bias = np.asarray(ours.bias_learning_rate(ni))
    lr = np.asarray(ours(ni))
    momentum = np.asarray(ours.momentum(ni))
    accumulate = np.asarray(ours.accumulate(ni))
    # smart_optimizer's order: group 0 biases, 1 decayed weights, 2 BN
    # weights; both weight groups share the lr.
    ref_lr = np.array([e[0] for e in expected])
    np.testing.assert_allclose(lr_bias, ref_lr[:, 0], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(lr, ref_lr[:, 1], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(lr, ref_lr[:, 2], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(momentum, [e[1][0] for e in expected],
                               rtol=1e-6)
    np.testing.assert_array_equal(accumulate, [e[2] for e in expected])
    assert ours.warmup_steps == max(round(3 * nb), 100)
    # Coupled L2 only on group 1, scaled as train.py does.
    wd = expected[0][3]
    assert wd[0] == wd[2] == 0.0
    assert scaled_weight_decay(5e-4, batch_size) == pytest.approx(wd[1])


def test_param_groups_follow_smart_optimizer():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(5, 1)(x)
    model = keras.Model(inputs, x)
    groups = [param_group(v) for v in model.trainable_variables]
    assert groups == ["decay", "no_decay", "bias", "decay", "bias"]


def _torch_module(torch, values):
    """Parameters named as torch's (weight/bias) plus a BN-like buffer."""
    module = torch.nn.Module()
    module.w = torch.nn.Parameter(torch.tensor(values["kernel"]))
    module.g = torch.nn.Parameter(torch.tensor(values["gamma"]))
    module.b = torch.nn.Parameter(torch.tensor(values["bias"]))
    module.register_buffer("stat", torch.tensor(values["stat"]))
    return module


def test_sgd_step_accumulation_clipping_and_ema_equal_torch_and_modelema():
    """Same gradients for 40 batches of 16 images (4 accumulated a step
    after warmup): torch SGD(nesterov, coupled L2 on the kernel group) with
    train.py's warmup, accumulation and clip_grad_norm_(10), ModelEMA over
    the parameters and a buffer; our YoloSGD on the mean-loss gradients."""
    ref = _ref()
    torch = ref.torch
    from yolov5.utils.torch_utils import ModelEMA

    rng = np.random.default_rng(0)
    batch, nb, epochs = 16, 10, 4
    shapes = {"kernel": (3, 4), "gamma": (4,), "bias": (4,), "stat": (4,)}
    init = {k: rng.normal(size=s).astype(np.float32)
            for k, s in shapes.items()}
    # Mean-loss gradients; a few large ones so that clipping engages.
    grads = [{k: (rng.normal(size=shapes[k]) * (0.5 if n % 7 else 5.0))
              .astype(np.float32) for k in ("kernel", "gamma", "bias")}
             for n in range(nb * epochs)]
    stats = [rng.normal(size=4).astype(np.float32) for _ in grads]

    # Reference: the loop of train.py with a tiny warmup (min 100 steps
    # there; 12 here so that accumulation after warmup is exercised too).
    nw = 12
    hyp = dict(HYP)
    accumulate = max(round(NBS / batch), 1)
    wd = hyp["weight_decay"] * batch * accumulate / NBS
    module = _torch_module(torch, init)
    optimizer = torch.optim.SGD([module.b], lr=hyp["lr0"],
                                momentum=hyp["momentum"], nesterov=True)
    optimizer.add_param_group({"params": [module.w], "weight_decay": wd})
    optimizer.add_param_group({"params": [module.g], "weight_decay": 0.0})
    lf = lambda x: (1 - x / epochs) * (1.0 - hyp["lrf"]) + hyp["lrf"]  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    scheduler.last_epoch = -1   # train.py: "do not move"
    ema = ModelEMA(module)
    last_opt_step = -1
    ref_weights, ref_ema, stepped = [], [], []
    optimizer.zero_grad()
    for epoch in range(epochs):
        for i in range(nb):
            ni = i + nb * epoch
            if ni <= nw:
                xi = [0, nw]
                accumulate = max(1, np.interp(ni, xi, [1, NBS / batch])
                                 .round())
                for j, x in enumerate(optimizer.param_groups):
                    x["lr"] = np.interp(ni, xi, [
                        hyp["warmup_bias_lr"] if j == 0 else 0.0,
                        x["initial_lr"] * lf(epoch)])
                    x["momentum"] = np.interp(
                        ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])
            g = grads[ni]
            for p, key in ((module.w, "kernel"), (module.g, "gamma"),
                           (module.b, "bias")):
                # ComputeLoss' loss is mean * batch: so are its gradients.
                add = torch.tensor(g[key] * batch)
                p.grad = add if p.grad is None else p.grad + add
            module.stat.copy_(torch.tensor(stats[ni]))
            did = ni - last_opt_step >= accumulate
            if did:
                torch.nn.utils.clip_grad_norm_(module.parameters(),
                                               max_norm=10.0)
                optimizer.step()
                optimizer.zero_grad()
                ema.update(module)
                last_opt_step = ni
            stepped.append(did)
            ref_weights.append({k: getattr(module, a).detach().numpy().copy()
                                for k, a in (("kernel", "w"), ("gamma", "g"),
                                             ("bias", "b"))})
            ref_ema.append({k: v.numpy().copy() for k, v in
                            ema.ema.state_dict().items()})
        scheduler.step()
    assert 8 < sum(stepped) < len(stepped)   # accumulation happened

    variables = {k: keras.Variable(init[k], name=k) for k in
                 ("kernel", "gamma", "bias")}
    stat = keras.Variable(init["stat"], name="moving_mean", trainable=False)
    schedule = YoloV5Schedule(0.01, epochs, nb, decay="linear",
                              batch_size=batch, min_warmup_steps=nw,
                              warmup_epochs=0.0)
    opt = YoloSGD(schedule, weight_decay=scaled_weight_decay(5e-4, batch),
                  gradient_scale=batch)
    opt.average_also([stat])
    order = ["kernel", "gamma", "bias"]
    opt.build([variables[k] for k in order])
    for ni, g in enumerate(grads):
        stat.assign(stats[ni])
        opt.apply([g[k] for k in order], [variables[k] for k in order])
        for k in order:
            np.testing.assert_allclose(variables[k].numpy(),
                                       ref_weights[ni][k], rtol=2e-5,
                                       atol=2e-6, err_msg=f"{k} at {ni}")
        averages = dict(zip(order, opt._model_variables_moving_average))
        for k, a in (("kernel", "w"), ("gamma", "g"), ("bias", "b")):
            np.testing.assert_allclose(averages[k].numpy(), ref_ema[ni][a],
                                       rtol=2e-5, atol=2e-6,
                                       err_msg=f"EMA {k} at {ni}")
        np.testing.assert_allclose(opt._extra_averages[0].numpy(),
                                   ref_ema[ni]["stat"], rtol=2e-5, atol=2e-6)
    assert int(opt.ema_updates.numpy()) == sum(stepped) == ema.updates


def test_accumulated_small_batches_equal_one_large_batch_step():
    """4 batches of 16 accumulated = 1 batch of 64 (constant lr and
    momentum, no warmup): the step sums the 4 scaled mean gradients, which
    is 64 times the mean over the 64 images."""
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(5, 3)).astype(np.float32)
    per_image = rng.normal(size=(64, 5, 3)).astype(np.float32)
    results = []
    for batch in (16, 64):
        var = keras.Variable(w0, name="kernel")
        schedule = YoloV5Schedule(0.01, 10, 100, decay="constant",
                                  batch_size=batch, warmup_epochs=0,
                                  min_warmup_steps=0)
        opt = YoloSGD(schedule, weight_decay=scaled_weight_decay(5e-4, batch),
                      gradient_scale=batch, clip_norm=None, use_ema=False)
        for _ in range(3):   # three optimizer steps
            for chunk in np.split(per_image, 64 // batch):
                opt.apply([chunk.mean(0)], [var])
        results.append(var.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(results[0], w0)


def test_ema_ramp_and_recipe_optimizer_config_round_trip():
    assert ema_decay(0) == 0.0
    assert ema_decay(2000) == pytest.approx(0.9999 * (1 - np.exp(-1)))
    opt = make_recipe_optimizer(epochs=5, steps_per_epoch=10, batch_size=8,
                                decay="cosine")
    assert opt.gradient_scale == 8
    assert opt.l2 == pytest.approx(5e-4 * 8 * 8 / 64)
    again = YoloSGD.from_config(opt.get_config())
    assert again.schedule.decay == "cosine" and again.l2 == opt.l2
    assert float(again.schedule.bias_learning_rate(7)) == pytest.approx(
        float(opt.schedule.bias_learning_rate(7)))
    with pytest.raises(ValueError, match="decay"):
        YoloV5Schedule(decay="step")


def test_coupled_l2_shrinks_16_times_more_than_keras_decoupled_decay():
    """Zero data gradient, lr 0.01, wd 5e-4, Nesterov momentum 0.937: the
    coupled L2 (through the momentum) settles at a per-step shrink of
    lr·wd/(1 − μ) ≈ 15.9 lr·wd; Keras' decoupled `weight_decay` shrinks by
    lr·wd per step. Both against their closed recursions."""
    lr, wd, mu, steps = 0.01, 5e-4, 0.937, 150
    coupled = keras.Variable(np.ones(4, np.float32), name="kernel")
    schedule = YoloV5Schedule(lr, 10, 100, decay="constant", batch_size=64,
                              warmup_epochs=0, min_warmup_steps=0,
                              momentum=mu)
    ours = YoloSGD(schedule, weight_decay=wd, clip_norm=None, use_ema=False)
    decoupled = keras.Variable(np.ones(4, np.float32), name="kernel")
    keras_sgd = keras.optimizers.SGD(lr, momentum=mu, nesterov=True,
                                     weight_decay=wd)
    zero = np.zeros(4, np.float32)
    history = []
    for _ in range(steps):
        ours.apply([zero], [coupled])
        keras_sgd.apply([zero], [decoupled])
        history.append(float(coupled.numpy()[0]))
    w, b = 1.0, 0.0
    for _ in range(steps):   # torch SGD, nesterov, weight_decay=wd
        g = wd * w
        b = mu * b + g
        w -= lr * (g + mu * b)
    assert history[-1] == pytest.approx(w, rel=1e-5)
    assert float(decoupled.numpy()[0]) == pytest.approx(
        (1 - lr * wd) ** steps, rel=1e-5)
    shrink = 1 - history[-1] / history[-2]
    assert shrink == pytest.approx(lr * wd / (1 - mu), rel=0.01)
