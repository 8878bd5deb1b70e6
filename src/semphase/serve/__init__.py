"""`semphase serve`: segmentation as a lab network service (FastAPI on uvicorn, the ``serve`` extra).

- :mod:`semphase.serve.service`: what the HTTP layer calls, with no web framework in it: the model
  loaded once, a bounded queue in front of a few inference threads (full: refused, never unbounded
  memory), uploads in a private temporary folder deleted after each answer, counters for ``/metrics``;
- :mod:`semphase.serve.app`: the FastAPI app (``/segment``, ``/model``, ``/health``, ``/metrics``, the page
  at ``/``), token checks in constant time;
- ``page.html``: the drag-and-drop page, plain HTML and a little JavaScript, no build step.

See docs/serve.md.
"""
