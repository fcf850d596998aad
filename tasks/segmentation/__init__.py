"""Semantic segmentation: DeepLabV3 / PSPNet students and teachers on Cityscapes, ADE20K and shapes."""
