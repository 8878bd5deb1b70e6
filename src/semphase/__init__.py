"""semphase: phase segmentation of SEM micrographs.

Train a ResNet34 U-Net on labelled micrographs (``semphase.train``), export it to self-describing ONNX
files in FP32, FP16 and INT8 (``semphase.export``), and segment micrographs of any size on a microscope PC
with onnxruntime alone (``semphase.runtime``). The base install never imports torch.
"""

import os as _os

__version__ = "0.1.0"

# semphase checks every image's declared size against its own limit before decoding (see
# semphase.imageio.max_megapixels); OpenCV's fixed 1-gigapixel limit, read once when cv2 loads, must not
# overrule a limit the user raised.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 40))
