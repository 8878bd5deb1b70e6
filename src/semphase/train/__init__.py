"""semphase.train."""
