"""The YOLO v1 to v5 objectives as `keras.losses.Loss` subclasses."""
