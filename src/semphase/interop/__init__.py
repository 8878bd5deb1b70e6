"""Models that other tools run: bioimage.io model packages and ZEISS CZANN files (``semphase package``).

- :mod:`semphase.interop.source`: the FP32 model to package, its held-out test tile, cover and documentation;
- :mod:`semphase.interop.bioimageio`: a bioimage.io model package (spec 0.5), validated with
  ``bioimageio.spec`` and, where installed, its test tensors reproduced with ``bioimageio.core``;
- :mod:`semphase.interop.czann`: a CZANN file for ZEN / arivis through ``czmodel``, read back to verify.

The optional ``interop`` extra (``pip install semphase[interop]``); nothing here needs torch, and the base
install only reads the packages (:mod:`semphase.model_package`). See docs/interop.md.
"""
