"""Keras layers: head decoding per version and the blocks the models use."""
from keras_yolo.layers.anchor_grid_decode import AnchorGridDecode
from keras_yolo.layers.yolo_v1_decode import YoloV1Decode
from keras_yolo.layers.activations import Mish, activation_function
from keras_yolo.layers.anchor_split import AnchorSplit
from keras_yolo.layers.channel_group import ChannelGroup
from keras_yolo.layers.cmbn import CmBatchNormalization
from keras_yolo.layers.conv_bn import ConvBNAct
from keras_yolo.layers.csp import (apply_bottleneck, apply_c3, apply_csp_stage, apply_darknet_stage,
                                   apply_tiny_csp_block)
from keras_yolo.layers.dropblock import DropBlock
from keras_yolo.layers.reorg import Reorg
from keras_yolo.layers.sam import SpatialAttention
from keras_yolo.layers.spp import SequentialMaxPool, SpatialPyramidPooling, apply_sppf
from keras_yolo.layers.weighted_residual import WeightedResidual
from keras_yolo.layers.yolo_v2_decode import YoloV2Decode
from keras_yolo.layers.yolo_v5_decode import YoloV5Decode
from keras_yolo.layers.non_max_suppression import NonMaxSuppression
from keras_yolo.layers.yolo_v3_decode import YoloV3Decode
from keras_yolo.layers.yolo_v4_decode import YoloV4Decode
from keras_yolo.layers.pan import apply_pan
from keras_yolo.layers.yolo_v8_decode import YoloV8Decode
