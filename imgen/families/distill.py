"""The distill family: a few-step generator distilled from a trained diffusion run, by
`distill.method`:

- `consistency` (Song et al. 2023, "Consistency Models": consistency distillation,
  Algorithm 2; `imgen.methods.consistency`). The student, read as a consistency function
  f(x, sigma), is moved at each image's adjacent pair of the `distill.levels` levels
  (s_i > s_{i+1}) from f(x_i, s_i) towards the target network's f(x^_{i+1}, s_{i+1}),
  x^_{i+1} being the teacher's Heun step of the probability-flow ODE, under
  `distill.distance`. The target network is an EMA of the student of decay `distill.mu`
  (the paper's mu; 0 makes it the student itself, as Song & Dhariwal 2023 advise); the
  samples are drawn by the student's own EMA (`optim.ema_decay`), as the paper keeps a
  separate one for sampling, with the `consistency` sampler (1, 2, 4 ... evaluations).
- `progressive` (Salimans & Ho 2022; `imgen.methods.progressive`): `distill.rounds` rounds
  of train.num_steps / rounds steps; in each the student learns one DDIM step from two of
  its teacher's over the flow-matching grid of `distill.levels` steps (halved each round),
  and the next round's teacher is the student as it ends the round. It samples with DDIM
  (eta 0) on the `uniform_t` grid of levels / 2^rounds steps; the checkpoint at the end of
  round r samples in levels / 2^(r + 1).

Both start the student from the teacher's (EMA) weights, the teacher's own U-Net.

- `distill.teacher_workdir`: a `diffusion` run (the edm or flow objective). Its config's
  `data`, `model` (but dropout) and `diffusion` groups must be this config's; its weights
  are part of this run's state, so a run resumes without reading them again, but a
  fresh state (any mode's initialisation) reads them.
- Class-conditional teachers give class-conditional students; in consistency distillation
  the teacher's ODE steps are guided with `distill.teacher_guidance` (Ho & Salimans 2022),
  and the student learns the guided model.
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from imgen.core import checkpoints
from imgen.core import files
from imgen.core import parallel
from imgen.core.errors import ConfigError
from imgen.core.train_state import PyTree
from imgen.core.train_state import TrainState
from imgen.data import VALID
from imgen.data.spec import DataSpec
from imgen.families.diffusion import DiffusionFamily
from imgen.methods import consistency
from imgen.methods import progressive

# The teacher's settings a student must share (the rest, such as dropout, it may not).
_SHARED = {
  "data": ("name", "image_key", "resize"),
  "model": None,  # Every field but those below.
  "diffusion": ("objective", "sigma_data", "sigma_min", "sigma_max", "t_mean", "t_std"),
}
_MODEL_FREE = ("dropout", "dtype", "layer_forms")
METHODS = ("consistency", "progressive")


@flax.struct.dataclass
class DistillState:
  """A student that trains (`net`) beside its teacher's parameters (fixed, or the student
  of the last round) and, in consistency distillation, the target network's (`target`, an
  EMA of the student's parameters; {} in progressive distillation). `step` counts train
  steps."""

  step: jax.Array
  net: TrainState
  teacher: PyTree
  target: PyTree


def _differences(teacher: ml_collections.ConfigDict, config: ml_collections.ConfigDict):
  for group, names in _SHARED.items():
    mine, theirs = config[group].to_dict(), teacher.get(group, {})
    names = names or [k for k in mine if k not in _MODEL_FREE]
    for name in names:
      a, b = theirs.get(name), mine.get(name)
      if (list(a) if isinstance(a, (list, tuple)) else a) != (
        list(b) if isinstance(b, (list, tuple)) else b
      ):
        yield f"{group}.{name}={a!r} (this config: {b!r})"


class DistillFamily(DiffusionFamily):
  """A few-step generator distilled from a diffusion run (see the module's docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, spec: DataSpec):
    super().__init__(config, spec)
    d = config.distill
    if self.objective.name == "ddpm":
      raise ConfigError(
        "Distillation needs a teacher of the edm or flow objective (diffusion.objective), "
        "not ddpm: its samplers read the teacher as a denoiser of continuous levels."
      )
    self.teacher_workdir = d.teacher_workdir.strip()
    hint = "train one first: python main.py --config=configs/diffusion.py --workdir=runs/diffusion."
    if not self.teacher_workdir:
      raise ConfigError(f"distill.teacher_workdir is empty; {hint}")
    teacher = ml_collections.ConfigDict(
      files.run_config(self.teacher_workdir, "distill.teacher_workdir", hint, "diffusion")
    )
    differences = list(_differences(teacher, config))
    if differences:
      raise ConfigError(
        f"distill.teacher_workdir={self.teacher_workdir} was trained with "
        + "; ".join(differences[:4])
        + ": the student's data, model and objective are the teacher's."
      )
    if d.teacher_guidance != 1.0 and not self.conditional:
      raise ConfigError(
        f"distill.teacher_guidance={d.teacher_guidance} needs a class-conditional teacher."
      )
    self.teacher_guidance = d.teacher_guidance
    self.method = d.method
    if self.method not in METHODS:
      raise ConfigError(f"distill.method {d.method!r}; use one of {METHODS}.")
    if self.method == "consistency":
      self.metric = consistency.distance(d.distance)
      self.substeps = d.teacher_substeps
      self.levels = consistency.training_levels(
        d.levels, self.objective.sigma_min, self.objective.sigma_max, d.rho, self.substeps
      )
      self.sigma_data = d.sigma_data
      self.mu = d.mu
      if not 0.0 <= d.mu < 1.0:
        raise ConfigError(f"distill.mu={d.mu}: the target network's EMA decay is in [0, 1).")
    else:
      self.levels = progressive.base_grid(d.levels, d.rounds, self.objective.sigma_max)
      self.rounds, self.round_steps = d.rounds, config.train.num_steps // d.rounds
      if self.round_steps < 1 or d.teacher_guidance != 1.0:
        raise ConfigError(
          f"distill.rounds={d.rounds}, teacher_guidance={d.teacher_guidance}: progressive "
          "distillation takes rounds of >= 1 step (train.num_steps / rounds) from an "
          "unguided teacher."
        )

  # --- the state: the student and the teacher, both from the teacher's weights --------------

  def init_state(self, key: jax.Array) -> DistillState:
    student = super().init_state(key).net
    weights = self._teacher_weights(student.params)
    student = student.replace(
      params=weights,
      ema_params=weights if student.optimizer.uses_ema else {},
      opt_state=student.optimizer.tx.init(weights),
    )
    target = weights if self.method == "consistency" else {}
    return DistillState(jnp.zeros((), jnp.int32), student, teacher=weights, target=target)

  def _teacher_weights(self, like: PyTree) -> PyTree:
    """The teacher's newest checkpoint's EMA weights (its parameters if it kept no EMA),
    checked against the student's shapes `like`."""
    manager = checkpoints.make_manager(self.teacher_workdir, keep=1, create=False)
    step = manager.latest_step()
    if step is None:
      raise ConfigError(
        f"distill.teacher_workdir={self.teacher_workdir} has no checkpoint; train it first."
      )
    saved = manager.restore(step, args=ocp.args.StandardRestore())["net"]
    manager.close()
    weights = saved["ema_params"] or saved["params"]
    shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
    if shapes(weights) != shapes(like):
      raise ConfigError(
        f"distill.teacher_workdir={self.teacher_workdir}: its weights do not fit this "
        "config's U-Net; use the teacher's model settings."
      )
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), weights)

  # --- the student as a consistency function --------------------------------------------------

  def denoiser(self, params, labels, guidance: float = 1.0, clip: bool = False):
    """The student as the samplers' `D`: its consistency function f(x, sigma) in
    consistency distillation, its denoiser in progressive distillation."""
    if self.method == "progressive":
      return super().denoiser(params, labels, guidance, clip)
    f = consistency.consistency_function(
      super().denoiser(params, labels, guidance), self.objective.sigma_min, self.sigma_data
    )
    return (lambda x, s: jnp.clip(f(x, s), -1.0, 1.0)) if clip else f

  def _loss_rows(self, state, params, teacher, batch: dict, key: jax.Array, labels):
    """Each image's loss: `consistency.consistency_loss` or `progressive.progressive_loss`
    (this step's round's), `teacher` the teacher's parameters."""
    x0 = batch["image"]
    n = x0.shape[0]
    noise = parallel.global_normal(jax.random.fold_in(key, 1), n, x0.shape[1:])
    levels = jnp.asarray(self.levels, jnp.float32)
    teacher = DiffusionFamily.denoiser(self, teacher, labels, self.teacher_guidance)
    if self.method == "progressive":
      stride = jnp.left_shift(2, self.round_of(state.step))
      draw = lambda k, shape: jax.random.randint(k, shape, 0, (len(levels) - 1) // stride)
      step = parallel.global_draw(draw, jax.random.fold_in(key, 0), n, ())
      student = DiffusionFamily.denoiser(self, params, labels)
      return progressive.progressive_loss(student, teacher, x0, noise, step, stride, levels)
    intervals = (len(self.levels) - 1) // self.substeps
    draw = lambda k, shape: jax.random.randint(k, shape, 0, intervals)
    level = parallel.global_draw(draw, jax.random.fold_in(key, 0), n, ())
    return consistency.consistency_loss(
      self.denoiser(params, labels),
      self.denoiser(state.target, labels),
      teacher,
      x0,
      noise,
      level,
      levels,
      self.metric,
      self.substeps,
    )

  def round_of(self, step: jax.Array) -> jax.Array:
    """Progressive distillation's round at train step `step` (0 .. rounds - 1)."""
    return jnp.minimum(step // self.round_steps, self.rounds - 1)

  def _teacher(self, state: DistillState) -> PyTree:
    """The teacher's parameters for this step: in progressive distillation the student's
    at the first step of each round after the first."""
    if self.method == "consistency":
      return state.teacher
    anew = (state.step > 0) & (state.step % self.round_steps == 0)
    anew &= state.step < self.rounds * self.round_steps
    return jax.tree.map(lambda t, p: jnp.where(anew, p, t), state.teacher, state.net.params)

  # --- steps ---------------------------------------------------------------------------------

  def make_train_step(self):
    def train_step(state: DistillState, batch: dict, key: jax.Array):
      key = jax.random.fold_in(key, state.step)
      labels = self.train_condition(batch, jax.random.fold_in(key, 2), batch["image"].shape[0])
      teacher = self._teacher(state)

      def loss_fn(params):
        return jnp.mean(self._loss_rows(state, params, teacher, batch, key, labels)), ()

      (loss, _), grads = parallel.value_and_mean_grad(loss_fn)(state.net.params)
      metrics = {"loss": parallel.device_mean(loss), **state.net.update_metrics(grads)}
      net = state.net.apply_gradients(grads=grads)
      target = state.target  # Follows the updated student (the paper's Algorithm 2).
      if self.method == "consistency":
        mu = self.mu
        target = jax.tree.map(lambda t, p: mu * t + (1.0 - mu) * p, target, net.params)
      return state.replace(step=state.step + 1, net=net, teacher=teacher, target=target), metrics

    return train_step

  def make_eval_step(self):
    """Per-replica sums of the held-out distillation loss of the student's evaluation
    weights (against the target network one teacher step later in consistency distillation;
    at the last step's round in progressive distillation), on the eval key's draws."""

    def eval_step(state: DistillState, batch: dict, key: jax.Array):
      labels = self.given_condition(batch)
      teacher = state.teacher
      rows = self._loss_rows(state, state.net.eval_params, teacher, batch, key, labels)
      sums = {"loss": rows, "count": jnp.ones_like(rows)}
      return jax.lax.psum(jax.tree.map(lambda x: jnp.sum(x * batch[VALID]), sums), parallel.AXIS)

    return eval_step
