"""semphase.export."""
