"""The SME workflow: the queue, what the labelling page shows and stores, users, the simulated SME. Imports calib.stats and calib.data."""
