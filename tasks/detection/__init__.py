"""Object detection: torchvision Faster R-CNN / RetinaNet with FPN on COCO-format data (``shapes`` embedded)."""
