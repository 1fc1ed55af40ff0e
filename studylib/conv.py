"""A fast forward pass for the ``cnn`` net of :mod:`studylib.models`, on stax's own parameters.

``models.convolutional`` is ``depth`` x [``stax.Conv(width, filter, SAME)`` + activation], then
``stax.Flatten`` or ``stax.GlobalAvgPool`` and ``stax.Dense(out_dim)``, on NHWC images. Its stax
``apply_fn`` runs each convolution through ``lax.conv_general_dilated``, which XLA's CPU backend
executes slowly for these shapes (few channels, 8x8 images: SCIENCE.md section 9). Here the same
network is computed as **im2col**: each layer's input is padded as SAME padding pads it, the
fh x fw shifted copies are concatenated along channels into patches (N, H, W, fh fw C) in the order
(kh, kw, c) -- exactly the row order of the HWIO kernel ``W`` (fh, fw, C, O) reshaped to
(fh fw C, O) -- and one matmul (N H W, fh fw C) @ (fh fw C, O) gives the convolution. Its
gradient is a matmul plus pads and adds (the transpose of the shifts), with no convolution left.

Conventions are NT 0.6.5's (``neural_tangents/_src/stax/linear.py``, ``_Conv`` and ``Dense``),
taking the params tree ``init_fn`` returns unchanged -- ``[(W, b), (), ..., (), (), (W_out, b_out)]``
for ``stax.serial`` (conv + activation pairs, the readout, the Dense layer):

* 'ntk': z = W_std / sqrt(fan_in) * conv(h, W) + b_std * b, fan_in = C fh fw (Conv) or the input
  width (Dense), W and b ~ N(0, 1); 'standard': z = conv(h, W) + b (NT's ``s = (1, 1)``: init_fn
  already scaled W by W_std / sqrt(fan_in) and b by b_std);
* b of shape (1, 1, 1, O) (Conv) or (1, out) (Dense); ``b = None`` (stax's ``b_std=None``) means
  no bias; ``b_std = 0`` keeps b in the tree, multiplied by 0 under 'ntk';
* ReLU = max(z, 0) (NT's ABRelu(0, 1) has the same values and, at z = 0, the same gradient 1/2),
  Erf = erf(z); Flatten keeps NHWC order, GlobalAvgPool is the mean over H and W.

Each layer's output is cast to its input's dtype, as ``models._same_dtype`` does for stax's Conv,
so float32 images stay float32 with 64-bit mode on. ``kernel_fn`` and ``init_fn`` stay NT's; only
``apply_fn`` is replaced, and ``tests/test_conv.py`` checks it, its gradients and its empirical NTK
against the stax net in float64. The other forms (``FORMS``) are kept for measurement
(docs/performance.md, "Conv nets").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

#: Ways to compute a SAME stride-1 convolution, with the activation layout each keeps between layers:
#: 'im2col_cf' (the default: channels first (C, N, H, W), patches (fh fw C, N H W) by shifts, one matmul
#: W^T (O, fh fw C) @ patches), 'im2col' (NHWC, patches (N H W, fh fw C) @ W), 'nt_patches' (NHWC,
#: ``lax.conv_general_dilated_patches`` + one matmul), 'lax_nhwc' / 'lax_nchw' (``lax.conv_general_dilated``
#: on NHWC / NCHW activations, the HWIO kernel as stored).
FORMS = ("im2col_cf", "im2col", "nt_patches", "lax_nhwc", "lax_nchw")
DEFAULT_FORM = "im2col_cf"
#: Activation layout of each form between layers (N batch, C channels, H W spatial).
LAYOUT = {"im2col_cf": "CNHW", "im2col": "NHWC", "nt_patches": "NHWC", "lax_nhwc": "NHWC", "lax_nchw": "NCHW"}
READOUTS = ("flatten", "gap")
ACTIVATIONS = ("relu", "erf")


@dataclasses.dataclass(frozen=True)
class ConvNet:
    """Static description of ``models.convolutional``: ``depth`` conv layers with a ``filter_shape``
    (fh, fw) SAME stride-1 filter, ``activation``, weight / bias scales and parameterization as in
    :class:`studylib.models.ModelConfig` (``b_std=None``: no biases), and the ``readout``."""

    depth: int
    activation: str = "relu"
    W_std: float = math.sqrt(2.0)
    b_std: float | None = 0.1
    parameterization: str = "ntk"
    readout: str = "flatten"
    filter_shape: tuple[int, int] = (3, 3)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: unknown value {self.activation!r}; accepted: {', '.join(ACTIVATIONS)}")
        if self.parameterization not in ("ntk", "standard"):
            raise ValueError(f"parameterization: unknown value {self.parameterization!r}; accepted: ntk, standard")
        if self.readout not in READOUTS:
            raise ValueError(f"readout: unknown value {self.readout!r}; accepted: {', '.join(READOUTS)}")


def same_pads(size: int) -> tuple[int, int]:
    """(low, high) zero padding of SAME for a stride-1 filter of ``size`` taps (XLA's rule: total
    size - 1, the extra one on the high side)."""
    return (size - 1) // 2, size - 1 - (size - 1) // 2


def patches(x, filter_shape: Sequence[int], *, layout: str = "NHWC"):
    """im2col for a SAME stride-1 ``filter_shape`` (fh, fw) by fh fw shifted copies of the padded input:
    NHWC ``x`` (N, H, W, C) -> (N, H, W, fh fw C); channels-first 'CNHW' ``x`` (C, N, H, W) ->
    (fh fw C, N, H, W). Channel index (kh fw + kw) C + c either way: the row order of an HWIO kernel
    (fh, fw, C, O) reshaped to (fh fw C, O)."""
    import jax.numpy as jnp

    fh, fw = filter_shape
    if layout == "NHWC":
        h, w = x.shape[1:3]
        xp = jnp.pad(x, ((0, 0), same_pads(fh), same_pads(fw), (0, 0)))
        return jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(fh) for j in range(fw)], axis=-1)
    if layout == "CNHW":
        h, w = x.shape[2:4]
        xp = jnp.pad(x, ((0, 0), (0, 0), same_pads(fh), same_pads(fw)))
        return jnp.concatenate([xp[:, :, i:i + h, j:j + w] for i in range(fh) for j in range(fw)], axis=0)
    raise ValueError(f"layout: unknown value {layout!r}; accepted: NHWC, CNHW")


def conv_same(x, W, *, form: str = DEFAULT_FORM):
    """SAME stride-1 convolution (cross-correlation, as ``lax.conv_general_dilated``) of activations ``x``
    in the layout of ``form`` (:data:`LAYOUT`: NHWC (N, H, W, C), CNHW (C, N, H, W) or NCHW) with an HWIO
    kernel ``W`` (fh, fw, C, O); the output has the same layout with O channels. No scaling, no bias."""
    import jax.numpy as jnp
    from jax import lax

    fh, fw, c, o = W.shape
    if form == "im2col_cf":
        p = patches(x, (fh, fw), layout="CNHW")
        return jnp.matmul(W.reshape(fh * fw * c, o).T, p.reshape(fh * fw * c, -1)).reshape(o, *x.shape[1:])
    if form == "im2col":
        p = patches(x, (fh, fw))
        return jnp.matmul(p.reshape(-1, fh * fw * c), W.reshape(fh * fw * c, o)).reshape(*x.shape[:-1], o)
    if form == "nt_patches":  # channel order of conv_general_dilated_patches: c (fh fw) + (kh fw + kw)
        p = lax.conv_general_dilated_patches(x, (fh, fw), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        w2 = jnp.transpose(W, (2, 0, 1, 3)).reshape(c * fh * fw, o)
        return jnp.matmul(p.reshape(-1, c * fh * fw), w2).reshape(*x.shape[:-1], o)
    if form == "lax_nhwc":
        return lax.conv_general_dilated(x, W, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if form == "lax_nchw":
        return lax.conv_general_dilated(x, W, (1, 1), "SAME", dimension_numbers=("NCHW", "HWIO", "NCHW"))
    raise ValueError(f"form: unknown value {form!r}; accepted: {', '.join(FORMS)}")


def to_layout(x, layout: str):
    """NHWC images (N, H, W, C) in ``layout`` ('NHWC', 'CNHW' or 'NCHW')."""
    import jax.numpy as jnp

    return x if layout == "NHWC" else jnp.transpose(x, tuple("NHWC".index(a) for a in layout))


def from_layout(h, layout: str):
    """Activations in ``layout`` back to NHWC (N, H, W, C) (the inverse of :func:`to_layout`)."""
    import jax.numpy as jnp

    return h if layout == "NHWC" else jnp.transpose(h, tuple(layout.index(a) for a in "NHWC"))


def _activation(name: str, z):
    import jax
    import jax.numpy as jnp

    return jnp.maximum(z, 0) if name == "relu" else jax.scipy.special.erf(z)


def apply_fn(net: ConvNet, *, form: str = DEFAULT_FORM) -> Callable[[Any, Any], Any]:
    """``apply(params, x, **kwargs) -> f`` of shape (N, out_dim) for NHWC images ``x`` (N, H, W, C) and the
    params tree of ``stax.serial`` over the layers of :class:`ConvNet` (``models.convolutional``'s
    ``init_fn``); the same function as that net's stax ``apply_fn`` (keyword arguments, e.g. NT's
    ``rng``, are accepted and ignored: the net has no stochastic layer)."""
    import jax.numpy as jnp

    if form not in FORMS:
        raise ValueError(f"form: unknown value {form!r}; accepted: {', '.join(FORMS)}")
    ntk = net.parameterization == "ntk"
    fh, fw = net.filter_shape

    def apply(params, x, **kwargs):
        if len(params) != 2 * net.depth + 2:
            raise ValueError(f"params: expected the {2 * net.depth + 2} layers of a depth-{net.depth} cnn, got "
                             f"{len(params)}")
        layout = LAYOUT[form]
        h = to_layout(x, layout)
        for layer in range(net.depth):
            W, b = params[2 * layer]
            z = conv_same(h, W, form=form)
            if ntk:
                z = (net.W_std / math.sqrt(W.shape[2] * fh * fw)) * z  # fan_in = C fh fw
            if b is not None:  # b (1, 1, 1, O) as NHWC; the same transpose puts it in the layout's channel axis
                z = z + to_layout(net.b_std * b if ntk else b, layout)
            h = _activation(net.activation, z.astype(h.dtype))
        if net.readout == "flatten":
            h = from_layout(h, layout)
            h = h.reshape(h.shape[0], -1)
        else:
            h = from_layout(jnp.mean(h, axis=tuple(layout.index(a) for a in "HW"), keepdims=True), layout)
            h = h.reshape(h.shape[0], -1)
        W, b = params[-1]
        out = jnp.matmul(h, W)
        if ntk:
            out = (net.W_std / math.sqrt(h.shape[-1])) * out
        if b is not None:
            out = out + (net.b_std * b if ntk else b)
        return out

    return apply
