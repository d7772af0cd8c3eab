"""The functions an export serves: images of any size in, detections on the
original images out, with every input checked inside the graph.

    serving_default(images: tf.string (B,))        encoded JPEG/PNG/GIF/BMP,
                                                    each of its own size
    serving_tensor(images: float32 (B, H, W, 3))   in [0, 1], any H, W
    -> {"boxes": (B, K, 4) float32 xyxy in each image's original pixels,
        clipped to it; "scores": (B, K) float32; "classes": (B, K) int32;
        "num_detections": (B,) int32; "class_names": (B, K) string}
        rows past num_detections: boxes/scores/classes -1, class_names ""

Each image is decoded (3 channels, first frame), letterboxed to the
network's input size (`serving.letterbox`), run through the detector
(network, decoding, NMS) and its boxes mapped back; all in core TF ops, so
the SavedModel needs neither keras-yolo nor keras-cv where it is served.

Input policy (issue #13.7): a malformed request is refused with an
`InvalidArgumentError` that says what is wrong, never a crash and never a
silent answer. `serving_tensor` takes a tensor of unknown rank so that the
checks run in the graph whatever the caller feeds (TF Serving does not check
shapes against the signature): rank 4, 3 channels, batch >= 1, H, W >= 1,
every value finite and within [0, 1] (no clipping: a 0-255 image is a
caller's mistake that clipping would turn into a white image and wrong
detections). `serving_default`: batch >= 1, and each string must start
like a JPEG, PNG, GIF, BMP or WebP file; the error names the batch index.
The TFLite function (`tflite_fn`) has a fixed `(1, S_h, S_w, 3)` input that
the interpreter checks; TFLite has no assert op, so values are sanitized
instead: NaN -> 0, then clipped to [0, 1] (documented, finite output).
"""

import tensorflow as tf

from serving.letterbox import letterbox, unletterbox_boxes

OUTPUT_KEYS = ("boxes", "scores", "classes", "num_detections",
               "class_names")
DETECTION_KEYS = ("boxes", "scores", "classes", "num_detections")
_PAD = -1.0


def check_float_images(images):
    """In-graph checks of a `serving_tensor` input of unknown rank; returns
    `images` with the static shape `(None, None, None, 3)`."""
    shape = tf.shape(images)
    rank = tf.rank(images)
    # Shape checked before anything indexes it: pad to 4 entries.
    dims = tf.concat([shape, tf.zeros([4], tf.int32)], 0)[:4]
    ok_rank = tf.logical_and(tf.equal(rank, 4), tf.equal(dims[3], 3))
    check_rank = tf.debugging.Assert(ok_rank, [
        "`images` must be a float32 batch (B, H, W, 3); got shape", shape],
        name="check_images_rank")
    with tf.control_dependencies([check_rank]):
        ok_size = tf.reduce_all(dims[:3] > 0)
        check_size = tf.debugging.Assert(ok_size, [
            "`images` must hold at least one image of at least 1x1 pixel "
            "(B, H, W >= 1); got shape", shape], name="check_images_size")
    with tf.control_dependencies([check_size]):
        finite = tf.reduce_all(tf.math.is_finite(images))
        check_finite = tf.debugging.Assert(finite, [
            "`images` must be finite; got NaN or Inf values"],
            name="check_images_finite")
    with tf.control_dependencies([check_finite]):
        low, high = tf.reduce_min(images), tf.reduce_max(images)
        check_range = tf.debugging.Assert(
            tf.logical_and(low >= 0.0, high <= 1.0), [
                "`images` must be in [0, 1] (divide 8-bit images by 255); "
                "got min", low, "max", high], name="check_images_range")
    with tf.control_dependencies([check_range]):
        images = tf.identity(images)
    return tf.ensure_shape(images, [None, None, None, 3])


def _is_supported_image(data):
    # Padded so that Substr never reads past a short (or empty) string.
    data = tf.strings.join([data, b"\0" * 12])
    return tf.reduce_any(tf.stack([
        tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"),  # JPEG
        tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n"),
        tf.equal(tf.strings.substr(data, 0, 3), b"GIF"),
        tf.equal(tf.strings.substr(data, 0, 2), b"BM"),
        tf.logical_and(tf.equal(tf.strings.substr(data, 0, 4), b"RIFF"),
                       tf.equal(tf.strings.substr(data, 8, 4), b"WEBP")),
    ]))


class DetectorModule(tf.Module):
    """The SavedModel's root object: a detector and its serving functions.

    Args:
        detector: a Keras model `(B, S_h, S_w, 3) -> {"boxes", "scores",
            "classes", "num_detections"}` (network + decode + NMS, e.g.
            `serving.build_detector`), boxes in `bounding_box_format` of
            its input image.
        class_names: list of C strings.
        bounding_box_format: format of the detector's boxes.
        assets: files copied into the SavedModel's `assets/`.

    Example:
        >>> module = DetectorModule(detector, ["circle", "square"])
        >>> tf.saved_model.save(module, "out/saved_model", signatures={
        ...     "serving_default": module.serving_default,
        ...     "serving_tensor": module.serving_tensor})
    """

    def __init__(self, detector, class_names, bounding_box_format="xyxy",
                 assets=()):
        super().__init__(name="keras_yolo_detector")
        # Only the detector's own variables are saved: tracking the Keras
        # model would also save a compiled model's optimizer slots (3x the
        # size after training).
        self._get_detector = lambda: detector
        self.model_variables = list(detector.variables)
        self.input_size = tuple(int(s) for s in detector.input_shape[1:3])
        self.bounding_box_format = bounding_box_format
        self.class_names = tf.constant([str(n) for n in class_names])
        self.assets = [tf.saved_model.Asset(path) for path in assets]
        self.serving_default = tf.function(
            self._serve_encoded,
            input_signature=[tf.TensorSpec([None], tf.string,
                                           name="images")])
        self.serving_tensor = tf.function(
            self._serve_tensor,
            input_signature=[tf.TensorSpec(None, tf.float32,
                                           name="images")])
        self.tflite_fn = tf.function(
            self._serve_tflite,
            input_signature=[tf.TensorSpec([1, *self.input_size, 3],
                                           tf.float32, name="images")])

    @property
    def detector(self):
        return self._get_detector()

    def _xyxy_pixels(self, boxes):
        if self.bounding_box_format == "xyxy":
            return boxes
        from keras_yolo import boxes as box_ops  # export time only

        return box_ops.convert(boxes, self.bounding_box_format, "xyxy",
                               image_shape=self.input_size)

    def _detect(self, canvas, image_hw, scale, pad):
        """Letterboxed batch -> detections on the original images."""
        out = self.detector(canvas, training=False)
        valid = out["classes"] >= 0
        boxes = self._xyxy_pixels(tf.cast(out["boxes"], tf.float32))
        boxes = unletterbox_boxes(boxes, scale[:, None], pad[:, None, :],
                                  image_hw[:, None, :])
        classes = tf.cast(out["classes"], tf.int32)
        names = tf.gather(self.class_names, tf.maximum(classes, 0))
        return {
            "boxes": tf.where(valid[..., None], boxes, _PAD),
            "scores": tf.where(valid, tf.cast(out["scores"], tf.float32),
                               _PAD),
            "classes": classes,
            "num_detections": tf.cast(out["num_detections"], tf.int32),
            "class_names": tf.where(valid, names, ""),
        }

    def _serve_encoded(self, images):
        batch = tf.size(images)
        check = tf.debugging.Assert(batch > 0, [
            "`images` must hold at least one encoded image; got 0"],
            name="check_batch")
        with tf.control_dependencies([check]):
            index = tf.range(batch)

        def one(args):
            data, i = args
            ok = tf.debugging.Assert(_is_supported_image(data), [
                tf.strings.format(
                    "images[{}] is not a JPEG, PNG, GIF, BMP or WebP image "
                    "({} bytes)", (i, tf.strings.length(data)))],
                name="check_encoding")
            with tf.control_dependencies([ok]):
                image = tf.io.decode_image(data, channels=3,
                                           expand_animations=False,
                                           dtype=tf.uint8)
            image = tf.ensure_shape(image, [None, None, 3])
            hw = tf.shape(image)[:2]
            ok = tf.debugging.Assert(tf.reduce_all(hw > 0), [
                tf.strings.format("images[{}] decodes to an empty image of "
                                  "shape {}", (i, hw))],
                name="check_decoded_size")
            with tf.control_dependencies([ok]):
                image = tf.cast(image, tf.float32) / 255.0
            canvas, scale, pad = letterbox(image, self.input_size)
            return canvas, tf.cast(hw, tf.float32), scale, pad

        canvas, image_hw, scale, pad = tf.map_fn(
            one, (images, index), fn_output_signature=(
                tf.TensorSpec([*self.input_size, 3], tf.float32),
                tf.TensorSpec([2], tf.float32),
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([2], tf.float32)))
        return self._detect(canvas, image_hw, scale, pad)

    def _serve_tensor(self, images):
        images = check_float_images(images)
        batch = tf.shape(images)[0]
        canvas, scale, pad = letterbox(images, self.input_size)
        hw = tf.cast(tf.shape(images)[1:3], tf.float32)
        return self._detect(canvas, tf.tile(hw[None], [batch, 1]),
                            tf.fill([batch], scale),
                            tf.tile(pad[None], [batch, 1]))

    def _serve_tflite(self, images):
        # No assert op in TFLite: NaN -> 0 (x != x only for NaN), clip.
        images = tf.where(tf.equal(images, images), images, 0.0)
        images = tf.clip_by_value(images, 0.0, 1.0)
        out = self.detector(images, training=False)
        valid = out["classes"] >= 0
        size = tf.constant([self.input_size[1], self.input_size[0]] * 2,
                           tf.float32)
        boxes = tf.minimum(tf.maximum(
            self._xyxy_pixels(tf.cast(out["boxes"], tf.float32)), 0.0), size)
        return {
            "boxes": tf.where(valid[..., None], boxes, _PAD),
            "scores": tf.where(valid, tf.cast(out["scores"], tf.float32),
                               _PAD),
            "classes": tf.cast(out["classes"], tf.int32),
            "num_detections": tf.cast(out["num_detections"], tf.int32),
        }
