"""Automated judges: the judges file and the litellm/offline runner. Imports calib.review, calib.stats and calib.data at most."""
