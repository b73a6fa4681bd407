"""Gyoza: run containerised ops on a cluster of GPU/CPU workers.

This module deliberately imports nothing, so that ``gyoza.op`` stays standard-library only.
"""

__version__ = "0.1.0"
