"""`NonMaxSuppression`: the layer form of `keras_yolo.postprocess.non_max_suppression`."""

import keras

from keras_yolo.checks import check_format, check_unit_interval
from keras_yolo.postprocess import DIOU_BETA, non_max_suppression


@keras.saving.register_keras_serializable(package="keras_yolo")
class NonMaxSuppression(keras.layers.Layer):
    """Keras layer wrapping `non_max_suppression` (same arguments).

    Input: a decode layer's `{"boxes", "objectness", "class_probs"}`.
    Output: `{"boxes": (B, K, 4), "scores": (B, K), "classes": (B, K),
    "num_detections": (B,)}` padded with -1, K = `max_det`.

    Example:
        >>> nms = NonMaxSuppression(bounding_box_format="center_xywh",
        ...                         conf_thres=0.25, iou_thres=0.45)
        >>> detections = nms(YoloV5Decode(anchors=YOLOV5_ANCHORS)(raw))
    """

    def __init__(self, conf_thres=0.25, iou_thres=0.45, classes=None,
                 agnostic=False, multi_label=False, max_det=300,
                 max_candidates=None, method="iou", beta=DIOU_BETA,
                 bounding_box_format="center_xywh", class_offset=None,
                 image_shape=None, **kwargs):
        super().__init__(**kwargs)
        check_unit_interval(conf_thres=conf_thres, iou_thres=iou_thres)
        if method not in ("iou", "diou"):
            raise ValueError(
                f"`method` must be 'iou' or 'diou'; got {method!r}.")
        check_format(bounding_box_format)
        self.conf_thres = float(conf_thres)
        self.iou_thres = float(iou_thres)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.agnostic = bool(agnostic)
        self.multi_label = bool(multi_label)
        self.max_det = int(max_det)
        self.max_candidates = (None if max_candidates is None
                               else int(max_candidates))
        self.method = method
        self.beta = float(beta)
        self.bounding_box_format = bounding_box_format
        self.class_offset = class_offset
        self.image_shape = (None if image_shape is None
                            else [float(v) for v in image_shape])

    def call(self, inputs):
        return non_max_suppression(
            inputs, conf_thres=self.conf_thres, iou_thres=self.iou_thres,
            classes=self.classes, agnostic=self.agnostic,
            multi_label=self.multi_label, max_det=self.max_det,
            max_candidates=self.max_candidates, method=self.method,
            beta=self.beta, bounding_box_format=self.bounding_box_format,
            class_offset=self.class_offset, image_shape=self.image_shape,
        )

    def compute_output_spec(self, inputs):
        batch = inputs["boxes"].shape[0]
        k = self.max_det
        return {
            "boxes": keras.KerasTensor((batch, k, 4), "float32"),
            "scores": keras.KerasTensor((batch, k), "float32"),
            "classes": keras.KerasTensor((batch, k), "int32"),
            "num_detections": keras.KerasTensor((batch,), "int32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            conf_thres=self.conf_thres, iou_thres=self.iou_thres,
            classes=self.classes, agnostic=self.agnostic,
            multi_label=self.multi_label, max_det=self.max_det,
            max_candidates=self.max_candidates, method=self.method,
            beta=self.beta, bounding_box_format=self.bounding_box_format,
            class_offset=self.class_offset, image_shape=self.image_shape,
        )
        return config
