"""Import of darknet .cfg/.weights and ultralytics yolov5 checkpoints."""
