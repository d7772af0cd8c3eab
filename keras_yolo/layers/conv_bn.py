"""`ConvBNAct`: convolution, batch normalisation and activation, the unit of every YOLO.

Padding is symmetric, `kernel_size // 2` pixels on every side, as darknet
(`pad=1`) and ultralytics (`autopad`) do; Keras' `"same"` pads strided
convolutions asymmetrically, which would shift every feature map by a pixel
against the reference implementations.

Cross mini-batch normalisation (CmBN, YOLOv4 paper, darknet `batch_normalize=2`)
is not implemented: it collects statistics across the `subdivisions` of one
darknet batch, i.e. across gradient-accumulation steps, and darknet's own
`yolov4.cfg` trains with plain BN (`batch_normalize=1`). A Keras step sees the
whole batch at once, so plain BN over the batch is CmBN's limit; across
devices `synchronized=True` (`keras.layers.BatchNormalization(synchronized=True)`)
normalises over the global batch of all replicas.

Training on the TensorFlow backend takes a faster path with the same
results (`ConvBNAct.fused_training_applies`): batch normalisation is one
`FusedBatchNormV3` op (and one gradient op) instead of Keras' moments and
~10 elementwise ops over the feature map and their gradients, and SiLU's
gradient is dy (s + y (1 - s)) from the saved s = sigmoid(x) and y = x s
(tf.nn.silu's gradient recomputes the sigmoid and also sums a gradient for
its constant beta). On 2 CPU cores this makes the yolov5n train step about
1.2-1.3x faster (benchmarks/bench_train_step.py). The weights, the moving
statistics' update (Keras' momentum formula with the biased batch variance)
and the inference path are unchanged. Under XLA (`jit_compile=True`) the
layer keeps Keras' ops: XLA fuses them itself, and TF 2.21's XLA CPU
compilation of FusedBatchNormV3's gradient inside a deep network (yolov2-tiny:
BN, leaky, stride-2 max pools) gives gradients off by up to 40%.
"""

import keras

from keras_yolo.layers.activations import activation_function


def darknet_kernel_initializer():
    """darknet's convolution init: N(0, 2 / (k² C_in / groups)), untruncated (He normal)."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_in", distribution="untruncated_normal")


def _tracing_for_xla():
    """Whether the function being traced will be XLA-compiled (`tf.function(jit_compile=True)`,
    Keras `jit_compile=True`); True when that cannot be told."""
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - TensorFlow moved its internals
        return True
    return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))


def _silu_with_saved_sigmoid(x):
    """y = x sigmoid(x), whose gradient reads the saved s and y, not x:
    dy/dx = s (1 + x (1 - s)) = s + y (1 - s)."""
    import tensorflow as tf

    @tf.custom_gradient
    def silu(x):
        s = tf.sigmoid(x)
        y = x * s

        def grad(dy):
            return dy * (s + y * (1.0 - s))

        return y, grad

    return silu(x)


def _fused_batch_norm_training(bn, x):
    """Keras' training-mode `BatchNormalization` in one `FusedBatchNormV3`:
    y = γ (x - μ_B) / sqrt(σ²_B + ε) + β over axes (B, H, W), and the moving
    statistics follow Keras' update with the biased batch variance."""
    import tensorflow as tf

    empty = tf.constant([], x.dtype)
    y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=bn.gamma.value, offset=bn.beta.value, mean=empty, variance=empty,
        epsilon=bn.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
    # The op returns the unbiased (Bessel-corrected) variance; Keras tracks the biased one.
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
    variance = variance * tf.maximum(count - 1.0, 1.0) / count
    mean, variance = tf.stop_gradient(mean), tf.stop_gradient(variance)
    bn.moving_mean.assign(bn.moving_mean * bn.momentum + mean * (1.0 - bn.momentum))
    bn.moving_variance.assign(bn.moving_variance * bn.momentum + variance * (1.0 - bn.momentum))
    return y


@keras.saving.register_keras_serializable(package="keras_yolo")
class ConvBNAct(keras.layers.Layer):
    """y = act(BN(W * pad(x)))  (or act(W * pad(x) + b) without BN).

    Args:
        filters: output channels.
        kernel_size: square kernel size k.
        strides: stride s.
        padding: pixels padded on every side; `None` means `k // 2`.
        groups: grouped convolution (channels / groups per group).
        activation: `"leaky"` (slope 0.1, darknet), `"mish"`, `"silu"`,
            `"logistic"`, `"relu"` or `"linear"`.
        use_batch_norm: BN after the convolution (darknet `batch_normalize=1`).
        use_bias: convolution bias; default: only without BN.
        batch_norm_momentum: running-average momentum (darknet 0.99,
            ultralytics torch momentum 0.03 = Keras 0.97).
        batch_norm_epsilon: BN epsilon (darknet 1e-5, ultralytics 1e-3).
        synchronized: cross-replica BN (the CmBN substitute, see module doc).
        kernel_initializer: default darknet's He normal (`darknet_kernel_initializer`).
        kernel_regularizer: optional regulariser of the kernel (weight decay).

    Shapes: `(B, H, W, C)` -> `(B, (H + 2p - k) // s + 1, (W + 2p - k) // s + 1, filters)`.

    Example:
        >>> ConvBNAct(64, 3, strides=2, activation="mish")(keras.ops.ones((1, 32, 32, 3))).shape
        (1, 16, 16, 64)
    """

    def __init__(self, filters, kernel_size=1, strides=1, padding=None, groups=1,
                 activation="leaky", use_batch_norm=True, use_bias=None,
                 batch_norm_momentum=0.99, batch_norm_epsilon=1e-5, synchronized=False,
                 kernel_initializer=None, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"filters must be >= 1, got {filters!r}")
        if int(kernel_size) < 1 or int(strides) < 1:
            raise ValueError(f"kernel_size and strides must be >= 1, got kernel_size={kernel_size!r}, "
                             f"strides={strides!r}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = self.kernel_size // 2 if padding is None else int(padding)
        self.groups = int(groups)
        self.activation = activation
        self._activation_fn = activation_function(activation)
        self.use_batch_norm = bool(use_batch_norm)
        self.use_bias = (not self.use_batch_norm) if use_bias is None else bool(use_bias)
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon
        self.synchronized = bool(synchronized)
        self.kernel_initializer = (darknet_kernel_initializer() if kernel_initializer is None
                                   else keras.initializers.get(kernel_initializer))
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        # "same" is symmetric only for odd kernels at stride 1; pad explicitly otherwise.
        self._same = self.strides == 1 and self.kernel_size % 2 == 1 and self.padding == self.kernel_size // 2
        policy = self.dtype_policy
        self.pad = None if self._same or self.padding == 0 else keras.layers.ZeroPadding2D(
            self.padding, dtype=policy, name="pad")
        self.conv = keras.layers.Conv2D(
            self.filters, self.kernel_size, strides=self.strides,
            padding="same" if self._same else "valid", groups=self.groups, use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer, kernel_regularizer=self.kernel_regularizer,
            dtype=policy, name="conv")
        self.bn = keras.layers.BatchNormalization(
            momentum=batch_norm_momentum, epsilon=batch_norm_epsilon, synchronized=self.synchronized,
            dtype=policy, name="bn") if self.use_batch_norm else None

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.pad is not None:
            self.pad.build(shape)
            shape = self.pad.compute_output_shape(shape)
        self.conv.build(shape)
        if self.bn is not None:
            self.bn.build(self.conv.compute_output_shape(shape))
        self.built = True

    def fused_training_applies(self, training):
        """Whether this call takes the fused TensorFlow training path (module doc):
        TensorFlow backend, training outside XLA, a trainable float32 per-replica
        `BatchNormalization` on the channel axis."""
        bn = self.bn
        return bool(training) and bn is not None and keras.backend.backend() == "tensorflow" \
            and type(bn) is keras.layers.BatchNormalization and bn.trainable \
            and not bn.synchronized and bn.axis in (-1, 3) and bn.scale and bn.center \
            and bn.compute_dtype == "float32" and bn.variable_dtype == "float32" \
            and not _tracing_for_xla()

    def _fused_training_call(self, inputs):
        x = self.conv(inputs if self.pad is None else self.pad(inputs))
        x = _fused_batch_norm_training(self.bn, x)
        if self.activation == "silu":
            return _silu_with_saved_sigmoid(x)
        return self._activation_fn(x)

    def call(self, inputs, training=None):
        if self.fused_training_applies(training):
            return self._fused_training_call(inputs)
        x = inputs if self.pad is None else self.pad(inputs)
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return self._activation_fn(x)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.pad is not None:
            shape = self.pad.compute_output_shape(shape)
        return self.conv.compute_output_shape(shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
            "padding": self.padding, "groups": self.groups, "activation": self.activation,
            "use_batch_norm": self.use_batch_norm, "use_bias": self.use_bias,
            "batch_norm_momentum": self.batch_norm_momentum,
            "batch_norm_epsilon": self.batch_norm_epsilon, "synchronized": self.synchronized,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
