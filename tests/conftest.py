"""Test-session settings shared by every test module.

- ``SEMPHASE_BACKEND=onnxruntime``: the CLI's ``--backend`` defaults to ``auto``, which times onnxruntime
  against OpenVINO on this machine and takes the faster; tests of other things must not depend on that
  measurement (tests/test_backends.py exercises ``auto`` and ``openvino`` with explicit flags).
- ``SEMPHASE_CACHE_DIR``: measured backend choices go to a folder of this session, never to the
  developer's own cache.
"""

from __future__ import annotations

import os
import tempfile

os.environ["SEMPHASE_BACKEND"] = "onnxruntime"
os.environ.setdefault("SEMPHASE_CACHE_DIR", tempfile.mkdtemp(prefix="semphase-test-cache-"))
