"""Infrastructure every layer may use: devices and processes, checkpoints,
logs, XLA settings, optimisers, train states, errors. Imports nothing else of imgen."""
