"""Constants anyone in lgvit may import: the ImageNet normalisation statistics."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_GRAY = ((0.449,), (0.226,))  # the ImageNet mean/std averaged over RGB, for 1-channel image files
