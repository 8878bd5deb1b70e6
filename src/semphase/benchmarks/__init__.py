"""semphase.benchmarks."""
