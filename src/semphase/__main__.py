"""``python -m semphase`` is the same as the ``semphase`` command."""

from semphase.cli.main import main

if __name__ == "__main__":
    main()
