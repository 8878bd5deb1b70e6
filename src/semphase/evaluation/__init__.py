"""Evaluating a model the way the study did, and scoring any segmentation against truth.

- :mod:`.dataset`: a model (ONNX or checkpoint) on a dataset split: :func:`run_evaluation`,
  :func:`load_predictor`, :func:`select_samples` (``semphase evaluate``);
- :mod:`.folders`: label images in two folders, paired by name (``semphase score``);
- :mod:`.report`: the study's tables, the per-image CSV, overlays; :mod:`.plots`: confusion matrix and
  class frequency vs IoU figures (matplotlib, imported only when drawing).

Torch-free, and it never imports :mod:`semphase.train` (training imports it): a ``.pt`` checkpoint is opened
by the caller's ``open_checkpoint`` (:func:`semphase.train.inference.load_checkpoint_model`), any object
with the attributes of :class:`~.dataset.CheckpointPredictor`.
"""

from semphase.evaluation.dataset import CheckpointPredictor, load_predictor, run_evaluation, select_samples

__all__ = ["CheckpointPredictor", "load_predictor", "run_evaluation", "select_samples"]
