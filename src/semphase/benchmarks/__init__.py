"""Accuracy parity and speed of the exported variants on this machine (``semphase benchmark``).

:mod:`~semphase.benchmarks.run` holds the command's library entry point (:func:`run_benchmark`); the
parts are accuracy parity (:mod:`accuracy`), tile latency and end-to-end timing in child processes
(:mod:`speed`, :mod:`child`, :mod:`rss`), the machine description (:mod:`machine`) and the report writers
(:mod:`tables`, :mod:`report_md`, :mod:`report_html`, :mod:`plots`). Torch-free unless a PyTorch
checkpoint is compared (:func:`semphase.train.inference.load_checkpoint_model`, imported only then).
"""
