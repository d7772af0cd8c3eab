"""keras-yolo serving: export, predict, conversion of pretrained weights."""
