"""`ChannelGroup`: darknet's `[route] groups=g group_id=i`, one slice of the channels (YOLOv4-tiny)."""

import keras


@keras.saving.register_keras_serializable(package="keras_yolo")
class ChannelGroup(keras.layers.Layer):
    """y = x[..., i*C/g : (i+1)*C/g].

    Args:
        groups: g, the number of equal channel groups.
        group_id: i, the group kept.

    Example:
        >>> ChannelGroup(2, 1)(keras.ops.ones((1, 8, 8, 64))).shape
        (1, 8, 8, 32)
    """

    def __init__(self, groups=2, group_id=1, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= int(group_id) < int(groups):
            raise ValueError(f"group_id must be in [0, groups), got group_id={group_id!r}, groups={groups!r}")
        self.groups = int(groups)
        self.group_id = int(group_id)

    def call(self, inputs):
        size = inputs.shape[-1] // self.groups
        return inputs[..., self.group_id * size:(self.group_id + 1) * size]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] // self.groups,)

    def get_config(self):
        config = super().get_config()
        config.update({"groups": self.groups, "group_id": self.group_id})
        return config
