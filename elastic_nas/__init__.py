"""elastic-nas: one-shot NAS (SPOS, Cream) on elastic, preemptible Ray clusters."""

__version__ = "0.1.0"
