"""yolo."""
