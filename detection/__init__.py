"""tdbnas.detection: the SSDLite detector in PyTorch, anchors, box coder, matcher, loss,
post-processing, datasets, training and COCO evaluation (the detection issue)."""
