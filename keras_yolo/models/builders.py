"""`build(name, num_classes, input_shape)`: every published YOLO network by its name.

| name        | builder                            | default input | outputs (strides)            |
|-------------|------------------------------------|---------------|------------------------------|
| yolov1      | `yolov1()` paper: 24 conv + 2 FC   | 448           | (B, 7, 7, 2*5 + C)           |
| yolov1-tiny | `yolov1(tiny=True)`                | 448           | (B, 7, 7, 2*5 + C)           |
| yolov2      | `yolov2()` Darknet-19 + reorg      | 416           | (B, H, W, 5, 5 + C) (32)     |
| yolov2-tiny | `yolov2_tiny()`                    | 416           | (B, H, W, 5, 5 + C) (32)     |
| yolov3      | `yolov3()` Darknet-53 + FPN        | 416           | 3 levels (8, 16, 32), A = 3  |
| yolov3-spp  | `yolov3(spp=True)`                 | 608           | 3 levels (8, 16, 32)         |
| yolov3-tiny | `yolov3_tiny()`                    | 416           | 2 levels (16, 32)            |
| yolov4      | `yolov4()` CSPDarknet53 + SPP + PAN| 608           | 3 levels (8, 16, 32)         |
| yolov4-tiny | `yolov4_tiny()`                    | 416           | 2 levels (16, 32)            |
| yolov5n/s/m/l/x | `yolov5(depth, width)` v6.0+   | 640           | 3 levels (8, 16, 32)         |

Extra keyword arguments go to the builder (`boxes_per_cell` for v1,
`darknet_reorg` for v2, `sam` / `dropblock_rate` for v4).
"""

# darknet cfg/yolov3-tiny.cfg and AlexeyAB cfg/yolov4-tiny.cfg anchors at 416 (pixels), per level.
_TINY_ANCHORS = [(10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)]
YOLOV3_TINY_ANCHORS = [_TINY_ANCHORS[0:3], _TINY_ANCHORS[3:6]]   # masks 0,1,2 and 3,4,5
YOLOV4_TINY_ANCHORS = [_TINY_ANCHORS[1:4], _TINY_ANCHORS[3:6]]   # masks 1,2,3 and 3,4,5 (sic, the cfg's)


def _registry():
    # The networks are the versions' (`keras_yolo.versions`), which import this module.
    from keras_yolo import versions

    return versions


def available_models():
    """The names `build` accepts, e.g. `["yolov1", ..., "yolov5x"]`."""
    return _registry().model_names()


def model_spec(name):
    """`{"input_shape", "strides", "anchors"}` defaults of a named model (anchors in input pixels, or None)."""
    _, spec = _registry().of_model(name)
    return {"input_shape": spec.input_shape, "strides": spec.strides, "anchors": spec.anchors}


def build(name, num_classes=80, input_shape=None, **kwargs):
    """Builds a named YOLO network as a `keras_yolo.models.YoloModel`.

    Args:
        name: one of `available_models()`, e.g. `"yolov5s"`, `"yolov3-tiny"`.
        num_classes: C.
        input_shape: `(H, W, 3)`, H and W multiples of 32 (64 for v1, whose dense
            layers fix it); `(None, None, 3)` for any size (v2 - v5). Default: the
            model's published size.
        kwargs: builder options (see the module docstring).

    Returns: a `YoloModel` whose outputs follow DESIGN.md: v1 `(B, S, S, Bx*5 + C)`,
    v2 `(B, H/32, W/32, 5, 5 + C)`, v3 - v5 a list of `(B, H/s, W/s, 3, 5 + C)` in ascending s.

    Example:
        >>> model = build("yolov5s", num_classes=80, input_shape=(640, 640, 3))
        >>> [o.shape for o in model.outputs]
        [(None, 80, 80, 3, 85), (None, 40, 40, 3, 85), (None, 20, 20, 3, 85)]
    """
    _, spec = _registry().of_model(name)
    kwargs.setdefault("name", name.replace("-", "_"))
    return spec.builder(num_classes=num_classes, input_shape=tuple(input_shape or spec.input_shape), **kwargs)
