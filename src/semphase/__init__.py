"""semphase: phase segmentation of SEM micrographs.

Train a ResNet34 U-Net on labelled micrographs (``semphase.train``), export it to self-describing ONNX
files in FP32, FP16 and INT8 (``semphase.export``), and segment micrographs of any size on a microscope PC
with onnxruntime alone (``semphase.runtime``). The base install never imports torch.
"""

__version__ = "0.1.0"
