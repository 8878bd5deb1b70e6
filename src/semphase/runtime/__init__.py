"""semphase.runtime."""
