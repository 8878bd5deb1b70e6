"""semphase.data."""
