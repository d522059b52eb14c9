"""Method math, free of any network or family: Gaussian diffusion, DiffAugment,
texture statistics and mapping, masks and their scores, audio features,
sample-quality metrics. Imports only imgen.core."""
