"""Speech -> image: flow matching on `spoken_mnist` (each embedded MNIST digit paired
with an eSpeak NG clip of its class, imgen/data/spoken_mnist.py), conditioned
on the clip's log-mel spectrogram (computed in JAX inside the step) through
a small convolutional audio encoder trained from scratch and cross-attention
in the U-Net, with classifier-free guidance. Needs the optional extra
`pip install -e ".[speech]"` (eSpeak NG, GPL-3.0) to prepare the clips.

  python main.py --config=configs/speech_to_image.py --workdir=runs/speech_to_image
  python main.py --config=configs/speech_to_image.py --workdir=runs/speech_to_image --mode=sample
  python main.py --config=configs/speech_to_image.py --workdir=runs/speech_to_image --mode=sample \\
    --config.sample.audio="seven.wav|three.wav"                 # your recordings, a row each
  python main.py --config=configs/speech_to_image.py --workdir=runs/speech_to_image --mode=prompts
  python main.py --config=configs/speech_to_image.py:smoke    # seconds, for tests

Default (issue 37): configs/diffusion_conditional.py's recipe (flow matching on the
U-Net of configs/diffusion.py: 16 channels, multipliers (1, 2, 4), attention at 7x7;
DDIM with eta 1 over 40 levels from sigma 20) with 4-head cross-attention to the audio
at 14x14 and 7x7 in place of the label; the audio encoder: 64 log-mel bands (HTK,
0-8 kHz) of 1,024-sample frames every 256 samples (126 frames for the 1.5 s clips),
three stride-2 1-D convolutions (32, 64, 64 channels) to 16 positions. In training the
mel axis of each clip is stretched by a factor drawn in 0.85-1.15 (`condition.mel_stretch`,
in the manner of vocal tract length perturbation) and clips are dropped 10% of the time;
samples are guided with scale 1.5, the smallest of 1, 1.5, 2 and 3 at which 90% of
samples from held-out voices read as the spoken digit (docs/multimodal.md). 2,400 steps
of batch 64, ~20 minutes on 2 CPU cores. The grids show one held-out speaker's clip of
each digit per row; `--mode=prompts` draws one sample per test clip (held-out voices)
and classifies it with the in-domain CNN (runs/cnn).
"""

import ml_collections

from configs import common
from configs import diffusion


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = diffusion.get_config()
  config.family = "speech_to_image"
  config.modes = "train,eval,sample,inpaint,prompts"  # The --mode values it is for.
  config.data = common.data("spoken_mnist")
  config.model.cross_attention_resolutions = (14, 7)
  config.model.heads = 4
  config.condition = ml_collections.ConfigDict(
    dict(
      width=64,
      mel_stretch=0.15,  # Each train clip's mel axis stretched by 1 +- up to this.
      mel=dict(sample_rate=22050, n_fft=1024, hop=256, n_mels=64, f_min=0.0, f_max=8000.0),
    )
  )
  # Held-out voices, 1,000 clips (docs/multimodal.md): scale 1 86.6% read right (FID 18.4 in
  # the CNN's features), 1.5 93.4% (26.5), 2 94.0% (43.0), 3 94.5% (70.0).
  config.sample.guidance_scale = 1.5
  # --mode=sample: '' draws one held-out clip per digit; or WAV files (mono or not, any rate,
  # resampled to 22,050 Hz, quiet ends trimmed) separated by '|', a grid row each.
  config.sample.audio = ""
  config.inpaint.guidance_scale = 1.0
  config.train.num_steps = 2400
  config.train.steps_per_dispatch = 10
  config.eval.update(every_steps=2400, sample_every=1200, metrics="", best_metric="loss")
  config.prompts = ml_collections.ConfigDict(dict(num_prompts=1000))
  if arg == "smoke":
    diffusion.shrink_for_smoke(config)
    config.data.name += "/tiny"
    config.model.cross_attention_resolutions = (14,)
    config.model.heads = 2
    config.model.dropout = 0.0  # The U-Net's dropout masks are tested on configs/diffusion.py.
    config.condition.width = 16
    config.prompts.num_prompts = 16
  elif arg:
    raise common.unknown_variant(arg, "configs/speech_to_image.py")
  return config
