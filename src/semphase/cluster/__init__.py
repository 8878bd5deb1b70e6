"""`semphase segment --cluster`: whole archives on Dask distributed, resumable, each file exactly once.

- :mod:`semphase.cluster.spec`: what ``--cluster`` names (``local[:N]`` or a scheduler address);
- :mod:`semphase.cluster.tasks`: what runs on a worker (the model loaded once per worker process, one
  micrograph per task, the access check);
- :mod:`semphase.cluster.run`: the client: journal, submission, verification of every output on disk,
  progress, ``summary.csv`` and the run's JSON.

Dask is the optional ``cluster`` extra (``pip install "semphase[cluster]"``); nothing here is imported
unless ``--cluster`` is given. See docs/cluster.md.
"""
