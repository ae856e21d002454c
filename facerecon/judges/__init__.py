"""Independent judges of reconstructions: their scores and calibrated thresholds."""
