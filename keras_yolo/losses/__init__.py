"""The YOLO objectives: `YoloLoss` (the shared contract) and one subclass per version."""
from keras_yolo.losses.base import YoloLoss
from keras_yolo.losses.yolo_v1 import YoloV1Loss
from keras_yolo.losses.yolo_v2 import YoloV2Loss
from keras_yolo.losses.yolo_v3 import YoloV3Loss
from keras_yolo.losses.yolo_v4 import YoloV4Loss
from keras_yolo.losses.yolo_v5 import YoloV5Loss, scale_hyperparameters
from keras_yolo.losses.yolo_v8 import YoloV8Loss
