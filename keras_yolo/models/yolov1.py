"""YOLOv1 (Redmon et al. 2016): 24 convolutions and 2 fully connected layers, S x S grid, B boxes a cell.

The convolutions are darknet's cfg/yolov1.cfg (batch-normalised, leaky 0.1);
the head is the paper's: a 4096-unit fully connected layer, dropout 0.5 and a
fully connected layer to S*S*(B*5 + C), reshaped to `(B, S, S, Bx*5 + C)`.
darknet's later cfg replaces the 4096 layer by a locally connected layer and
predicts 3 boxes; the paper's form is built here. yolov1-tiny is
cfg/yolov1-tiny.cfg: 9 convolutions and one fully connected layer.
S = input size / 64, so the dense layers fix the input size.
"""

import keras

from keras_yolo.layers.activations import LEAKY_SLOPE
from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.models.common import DARKNET_CONV, check_num_classes, image_input
from keras_yolo.models.yolo_model import YoloModel

YOLOV1_STRIDE = 64
# The paper's first fully connected layer and its dropout.
YOLOV1_HIDDEN_UNITS = 4096
YOLOV1_DROPOUT = 0.5


def _dense_initializer():
    """darknet's connected-layer init: U(-sqrt(2 / N_in), sqrt(2 / N_in))."""
    return keras.initializers.VarianceScaling(2.0 / 3.0, mode="fan_in", distribution="uniform")

# (filters, kernel, stride) of the 24 convolutions, "M" a 2x2 max pool (cfg/yolov1.cfg).
_YOLOV1_CONVS = ([(64, 7, 2), "M", (192, 3, 1), "M", (128, 1, 1), (256, 3, 1), (256, 1, 1), (512, 3, 1), "M"]
                 + [(256, 1, 1), (512, 3, 1)] * 4 + [(512, 1, 1), (1024, 3, 1), "M"]
                 + [(512, 1, 1), (1024, 3, 1)] * 2 + [(1024, 3, 1), (1024, 3, 2), (1024, 3, 1), (1024, 3, 1)])
_YOLOV1_TINY_CONVS = ([(16, 3, 1), "M", (32, 3, 1), "M", (64, 3, 1), "M", (128, 3, 1), "M", (256, 3, 1), "M",
                       (512, 3, 1), "M", (1024, 3, 1), (256, 3, 1)])


def yolov1(num_classes=20, input_shape=(448, 448, 3), boxes_per_cell=2, tiny=False, name=None):
    """YOLOv1 or YOLOv1-tiny; output `(B, S, S, boxes_per_cell*5 + num_classes)`, S = size / 64.

    Example:
        >>> yolov1(num_classes=20).output_shape
        (None, 7, 7, 30)
    """
    check_num_classes(num_classes)
    inputs = image_input(input_shape, multiple=YOLOV1_STRIDE, allow_dynamic=False)
    grid_h, grid_w = input_shape[0] // YOLOV1_STRIDE, input_shape[1] // YOLOV1_STRIDE
    x, pools, convs = inputs, 0, 0
    for spec in _YOLOV1_TINY_CONVS if tiny else _YOLOV1_CONVS:
        if spec == "M":
            pools += 1
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"pool{pools}")(x)
            continue
        convs += 1
        filters, kernel, stride = spec
        x = ConvBNAct(filters, kernel, strides=stride, name=f"conv{convs}", **DARKNET_CONV)(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if not tiny:
        x = keras.layers.Dense(YOLOV1_HIDDEN_UNITS, kernel_initializer=_dense_initializer(), name="fc1")(x)
        x = keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name="fc1_leaky")(x)
        x = keras.layers.Dropout(YOLOV1_DROPOUT, name="dropout")(x)
    depth = boxes_per_cell * 5 + num_classes
    x = keras.layers.Dense(grid_h * grid_w * depth, kernel_initializer=_dense_initializer(),
                           name="fc1" if tiny else "fc2")(x)
    x = keras.layers.Reshape((grid_h, grid_w, depth), dtype="float32", name="output")(x)
    return YoloModel(inputs, x, name=name or ("yolov1_tiny" if tiny else "yolov1"))
