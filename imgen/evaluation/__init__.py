"""The experiment (a config made into family, data and keys) and what scores a
trained run: held-out metrics, sample quality, feature networks."""
