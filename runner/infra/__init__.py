"""Shared infrastructure: atomic writes, errors, secrets, devices and precision, models, metrics, the
stage cache and its code keys, trackers. It imports no stage, no data type and no orchestration."""
