"""The rewritten layers (sub-pixel transposed convolution, stride-1 convolution,
max-pool) against their definitions and the plain flax forms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgen.core import backend
from imgen.core.errors import ConfigError
from imgen.models import layers


def _torch_definition(x, w):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1) by its scatter definition, in NumPy.

  y[n, 2i - 1 + ki, 2j - 1 + kj, o] += x[n, i, j, c] * w[ki, kj, c, o].
  """
  n, h, wd, _ = x.shape
  y = np.zeros((n, 2 * h + 2, 2 * wd + 2, w.shape[-1]))  # One extra row/col each side.
  for ki in range(4):
    for kj in range(4):
      contrib = np.einsum("nijc,co->nijo", x, w[ki, kj])
      y[:, ki : ki + 2 * h : 2, kj : kj + 2 * wd : 2] += contrib
  return y[:, 1:-1, 1:-1]


@pytest.mark.parametrize("shape", [(2, 3, 3, 4, 5), (1, 7, 5, 3, 2), (2, 4, 3, 5, 16)])
def test_both_forms_match_the_definition(shape):
  n, h, w, cin, cout = shape
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, h, w, cin))
  k = rng.standard_normal((4, 4, cin, cout))
  expected = _torch_definition(x, k)
  # The phase form itself, and the layer (which takes XLA's form below 16 outputs).
  forms = (
    layers.conv_transpose_4x4s2,
    layers._subpixel_forward,
    layers.conv_transpose_4x4s2_subpixel,
  )
  for impl in forms:
    got = np.asarray(impl(jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32)))
    assert got.shape == (n, 2 * h, 2 * w, cout)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
  "shape", [(2, 6, 6, 8, 3), (1, 7, 5, 3, 2), (2, 3, 4, 4, 5), (2, 4, 4, 3, 16)]
)
def test_subpixel_gradients_equal_the_reference(shape):
  n, h, w, cin, cout = shape
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((4, 4, cin, cout)), jnp.float32)
  target = jnp.asarray(rng.standard_normal((n, 2 * h, 2 * w, cout)), jnp.float32)

  def grads(impl):
    loss = lambda x, k: jnp.sum((impl(x, k) - target) ** 2)
    return jax.grad(loss, argnums=(0, 1))(x, k)

  reference, subpixel = (
    grads(layers.conv_transpose_4x4s2),
    grads(layers.conv_transpose_4x4s2_subpixel),
  )
  for ref, got in zip(reference, subpixel, strict=True):
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=1e-4)


def test_module_uses_the_chosen_form():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 4, 4, 3)), jnp.float32)
  outs = []
  for impl in ("subpixel", "transpose"):
    module = layers.ConvTranspose4x4S2(5, impl)
    variables = module.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].shape == (4, 4, 3, 5)
    outs.append(module.apply(variables, x))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def _conv_definition(x, w):
  """Conv2d(k=4, s=2, p=1) by its definition, in NumPy: y[o] = sum_k x[2o - 1 + k] w[k]."""
  n, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = np.zeros((n, h // 2, wd // 2, w.shape[-1]))
  for ki in range(4):
    for kj in range(4):
      y += np.einsum("nijc,co->nijo", xp[:, ki : ki + h - 1 : 2, kj : kj + wd - 1 : 2], w[ki, kj])
  return y


@pytest.mark.parametrize(
  "shape", [(2, 8, 8, 3, 5), (1, 6, 10, 32, 4), (2, 4, 4, 16, 8), (1, 7, 9, 3, 2)]
)
def test_downsampling_conv_and_its_gradients(shape):
  """Both input-gradient forms (XLA's below 16 channels, sub-pixel above) against the
  definition's forward and XLA's gradients of the plain convolution."""
  n, h, w, cin, cout = shape
  rng = np.random.default_rng(3)
  x = rng.standard_normal((n, h, w, cin))
  k = rng.standard_normal((4, 4, cin, cout))
  target = jnp.asarray(rng.standard_normal((n, h // 2, w // 2, cout)), jnp.float32)
  xj, kj = jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32)
  got = layers.conv_4x4s2_subpixel_grad(xj, kj)
  np.testing.assert_allclose(got, _conv_definition(x, k), atol=1e-4, rtol=1e-4)

  def grads(impl):
    loss = lambda x, k: jnp.sum((impl(x, k) - target) ** 2)
    return jax.grad(loss, argnums=(0, 1))(xj, kj)

  for ref, new in zip(
    grads(layers.conv_4x4s2), grads(layers.conv_4x4s2_subpixel_grad), strict=True
  ):
    assert new.shape == ref.shape
    np.testing.assert_allclose(new, ref, atol=1e-3, rtol=1e-4)


def test_discriminator_keeps_the_plain_conv_parameters():
  """The Conv4x4S2 discriminator initialises exactly as one built from nn.Conv."""
  from imgen.models import dcgan

  class PlainConvs(nn.Module):
    @nn.compact
    def __call__(self, x):
      for f in (8, 16):
        conv = nn.Conv(
          f,
          (4, 4),
          (2, 2),
          ((1, 1), (1, 1)),
          use_bias=False,
          kernel_init=nn.initializers.normal(0.02),
        )
        x = conv(x)
      return x

  x = jnp.zeros((1, 16, 16, 1))
  params = dcgan.Discriminator(16, width=8).init(jax.random.key(0), x, train=False)["params"]
  plain = PlainConvs().init(jax.random.key(0), x)["params"]
  for name in ("Conv_0", "Conv_1"):
    np.testing.assert_array_equal(params[name]["kernel"], plain[name]["kernel"])


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 7, 5, 4)])
def test_max_pool_2x2_equals_flax_max_pool(shape):
  """Values exactly (odd sizes drop the last row/column, as VALID pooling does);
  gradients through a ReLU, where the only ties are zeros the ReLU stops."""
  x = jax.random.normal(jax.random.key(0), shape)
  plain = lambda x: nn.max_pool(x, (2, 2), (2, 2))
  np.testing.assert_array_equal(layers.max_pool_2x2(x), plain(x))
  grad = lambda pool: jax.grad(lambda x: jnp.sum(jnp.sin(pool(jax.nn.relu(x)))))(x)
  np.testing.assert_array_equal(grad(layers.max_pool_2x2), grad(plain))


def test_the_cnn_with_the_written_pool_trains_as_with_flax_max_pool(monkeypatch):
  """The classifier's loss and every gradient, against the same network built
  with nn.max_pool (XLA's select-and-scatter gradient)."""
  from imgen.models import classifiers

  model = classifiers.SimpleCNN(width=4, dropout=0.0)
  x = jax.random.normal(jax.random.key(0), (4, 12, 12, 1))
  variables = jax.jit(model.init)(jax.random.key(1), x)

  def loss_and_grads():
    def loss(params):
      out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
      return jnp.sum(jnp.sin(out))

    return jax.jit(jax.value_and_grad(loss))(variables["params"])  # Traced at each call.

  written = loss_and_grads()
  monkeypatch.setattr(classifiers, "max_pool_2x2", lambda x: nn.max_pool(x, (2, 2), (2, 2)))
  plain = loss_and_grads()
  for a, b in zip(jax.tree.leaves(written), jax.tree.leaves(plain), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_vae_encoder_keeps_nn_conv_parameters_values_and_gradients():
  """Conv4x4S2 in the encoder: the parameter tree and initial values of the
  nn.Conv encoder it replaced, its outputs, and its gradients."""
  from imgen.models import conv_vae

  class PlainEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
      for i in range(2):
        x = nn.relu(nn.Conv(8 * 2**i, (4, 4), (2, 2), ((1, 1), (1, 1)))(x))
      x = nn.relu(nn.Dense(16 * 8)(x.reshape(x.shape[0], -1)))
      out = nn.Dense(2 * 3)(x)
      return out[:, :3], out[:, 3:]

  x = jax.random.normal(jax.random.key(0), (3, 28, 28, 1))
  encoder = conv_vae.Encoder(28, 3, width=8)
  params = encoder.init(jax.random.key(1), x)["params"]
  plain_params = PlainEncoder().init(jax.random.key(1), x)["params"]
  assert jax.tree.structure(params) == jax.tree.structure(plain_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(plain_params), strict=True):
    np.testing.assert_array_equal(a, b)

  def loss(module, params, x):
    mean, log_var = module.apply({"params": params}, x)
    return jnp.sum(jnp.sin(mean) * log_var)

  value_and_grads = jax.jit(jax.value_and_grad(loss, argnums=(1, 2)), static_argnums=0)
  (value, written), (plain_value, plain) = (
    value_and_grads(module, params, x) for module in (encoder, PlainEncoder())
  )
  np.testing.assert_allclose(value, plain_value, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(written), jax.tree.leaves(plain), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
  "kernel, padding, shape, bias, strides",
  [
    ((3, 3), "SAME", (2, 9, 7, 3), False, 1),
    ((1, 1), "SAME", (2, 5, 5, 4), True, 1),
    ((3, 3), "VALID", (2, 8, 8, 3), True, 1),
    ((5, 5), "SAME", (1, 6, 7, 2), True, 1),
    ((4, 4), "VALID", (2, 4, 4, 5), False, 1),  # DCGAN's head: the whole map to one value.
    ((3, 3), ((2, 0), (1, 1)), (2, 6, 6, 2), True, 1),
    ((3, 3), "SAME", (2, 8, 7, 3), True, 2),  # The diffusion U-Net's downsampling.
    ((4, 4), "SAME", (2, 9, 8, 3), False, 2),
    ((3, 3), "VALID", (1, 9, 9, 2), True, 3),
  ],
)
def test_conv_equals_nn_conv_in_parameters_values_and_gradients(
  kernel, padding, shape, bias, strides
):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = layers.Conv(6, kernel, strides, padding=padding, use_bias=bias)
  plain = nn.Conv(6, kernel, strides, padding=padding, use_bias=bias)
  params = ours.init(jax.random.key(1), x)
  plain_params = plain.init(jax.random.key(1), x)
  assert jax.tree.structure(params) == jax.tree.structure(plain_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(plain_params), strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(ours.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-5)
  loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
  grads = jax.grad(loss(ours), (0, 1))(params, x)
  plain_grads = jax.grad(loss(plain), (0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_conv_gradients_inside_a_rolled_scan():
  """The same gradients in a lax.scan as outside it (the reason for the form)."""
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  conv = layers.Conv(4, (3, 3))
  params = conv.init(jax.random.key(1), x)
  grad = jax.grad(lambda p: jnp.sum(jnp.sin(conv.apply(p, x))))
  looped = jax.lax.scan(lambda c, _: (c, grad(params)), 0, None, length=2)[1]
  for a, b in zip(jax.tree.leaves(looped), jax.tree.leaves(grad(params)), strict=True):
    np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)


class _EveryTwoFormLayer(nn.Module):
  """Each layer that has a CPU form and XLA's own, in one network."""

  @nn.compact
  def __call__(self, x):
    x = jnp.sin(layers.Conv(8, (3, 3))(x))
    x = jnp.sin(layers.Conv(8, (3, 3), strides=2)(x))
    x = layers.max_pool_2x2(jax.nn.relu(x))
    x = layers.ConvTranspose4x4S2(16)(x)  # 16 outputs: the sub-pixel form.
    x = layers.ConvTranspose4x4S2(4)(jnp.sin(x))
    return layers.Conv4x4S2(16)(jnp.sin(x))


def test_the_backend_picks_each_layers_form_and_both_forms_agree():
  """'cpu' forms (what the CPU backend runs) against 'xla' (XLA's own, what
  GPU and TPU run): the same values and gradients, and each form is what the
  program holds (custom gradients, or XLA's pooling and dilated convolutions)."""
  net = _EveryTwoFormLayer()
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 3))
  params = net.init(jax.random.key(1), x)

  def value_grads_and_program(forms):
    with backend.layer_forms(forms):
      loss = lambda p, x: jnp.sum(jnp.sin(net.apply(p, x)))  # A new function: traced here.
      program = str(jax.make_jaxpr(loss)(params, x))  # Custom gradients show here.
      return jax.jit(jax.value_and_grad(loss, (0, 1)))(params, x), program

  (cpu, cpu_program), (xla, xla_program) = map(value_grads_and_program, ("cpu", "xla"))
  assert "custom_vjp_call" in cpu_program and "custom_vjp_call" not in xla_program
  assert "reduce_window_max" in xla_program and "reduce_window_max" not in cpu_program
  assert "lhs_dilation=(2, 2)" in xla_program  # XLA's transposed convolution.
  for a, b in zip(jax.tree.leaves(cpu), jax.tree.leaves(xla), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with backend.layer_forms("auto"):
    assert backend.cpu_forms() == (jax.default_backend() == "cpu")
  with pytest.raises(ConfigError, match=r"model.layer_forms='gpu'; use one of"):
    backend.configure("gpu")


def test_nearest_upsampling_is_the_resize_in_values_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 5, 3, 4))
  resize = lambda x: jax.image.resize(x, (2, 10, 6, 4), "nearest")
  np.testing.assert_array_equal(layers.upsample_nearest_2x(x), resize(x))
  w = jax.random.normal(jax.random.key(1), (2, 10, 6, 4))
  grad = lambda up: jax.grad(lambda x: jnp.sum(w * up(x)))(x)
  np.testing.assert_allclose(grad(layers.upsample_nearest_2x), grad(resize), rtol=1e-6, atol=1e-6)
  program = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(w * layers.upsample_nearest_2x(x))))(x))
  assert "gather" not in program and "scatter" not in program


def test_in_bfloat16_xlas_forms_take_their_gradients_in_bfloat16():
  """What accelerators run: no float32 result asked of a bfloat16 convolution
  (the CPU form's weight gradient sums the batch in float32)."""
  conv = layers.Conv(8, (3, 3), dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  params = conv.init(jax.random.key(1), x)

  def gradient_program(forms):
    with backend.layer_forms(forms):
      loss = lambda p: jnp.sum(conv.apply(p, x).astype(jnp.float32) ** 2)
      return str(jax.make_jaxpr(jax.grad(loss))(params))

  assert "preferred_element_type=float32" in gradient_program("cpu")
  assert "preferred_element_type=float32" not in gradient_program("xla")
