"""Training augmentation on tf.data: ultralytics' pipeline plus YOLOv4's freebies.

`training_pipeline` is the entry point (Mosaic, random perspective, MixUp,
CutMix, HSV, flips); `multi_scale` resizes batches to random training shapes;
`adversarial_images` is Self-Adversarial Training's first pass.
"""

from keras_yolo.data.augment.adversarial import adversarial_images
from keras_yolo.data.augment.color import adjust_hsv, random_hsv
from keras_yolo.data.augment.geometry import (apply_perspective,
                                              box_candidates, flip_left_right,
                                              flip_up_down, random_flip,
                                              random_perspective,
                                              resize_long_side)
from keras_yolo.data.augment.mix import cutmix, mixup
from keras_yolo.data.augment.mosaic import mosaic
from keras_yolo.data.augment.multiscale import multi_scale, multi_scale_sizes
from keras_yolo.data.augment.pipeline import (DEFAULT_HYPERPARAMETERS,
                                              CloseMosaic, mosaic_partners,
                                              training_pipeline)
