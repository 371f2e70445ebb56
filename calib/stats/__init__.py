"""Statistics: the calibration model, fits over a project, cross-checks, forecasts, sampling. Imports only calib.data."""
