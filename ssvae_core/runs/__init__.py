"""Runs and reports: the run directory and its files, training, resuming and retraining a
run, reports, plots, exploring, out-of-distribution scores, calibration, metrics and
tracking.
"""
