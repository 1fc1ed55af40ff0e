r"""μP (the maximal-update parameterization) for the fully connected net, and a richness knob γ₀.

**The abc-parameterization** (Yang & Hu 2021, "Feature Learning in Infinite-Width Neural Networks",
Tensor Programs IV, arXiv 2011.14522, §3): a layer's weight is W = σ (n/n₀)^−a w / √fan_in₀ with trainable
w, initialised w₀ ~ N(0, (n/n₀)^−2b), and trained by SGD at learning rate η (n/n₀)^−c. Here n is the hidden
width, n₀ the base width (both parameterizations coincide there: microsoft/mup's convention), σ is W_std
(b_std for a bias), fan_in₀ the layer's fan-in at the base width (d for the input layer, n₀ for the others;
1 for a bias). The exponents used here, in one table (biases follow TP4's rule of treating them as weights
of a fan-in-1 input layer; the readout bias as the readout, without its fan-in):

=====================  ==================  ===================
layer                  NTK  (a, b, c)      μP  (a, b, c)
=====================  ==================  ===================
input W (fan-in d)     (0, 0, 0)           (−½, ½, 0)
hidden W (fan-in n)    (½, 0, 0)           (0, ½, 0)
readout W (fan-in n)   (½, 0, 0)           (½, ½, 0)
hidden biases          (0, 0, 0)           (−½, ½, 0)
readout bias           (0, 0, 0)           (0, ½, 0)
=====================  ==================  ===================

NTK is TP4's NTP (a₁ = 0, a_l = ½ for l ≥ 2, b = 0, c = 0; NT's ``parameterization='ntk'``); μP is TP4's
μP (a₁ = −½, a_l = 0 for hidden l, a_{L+1} = ½, b = ½, c = 0).

**Why a stax net expresses it.** SGD changes w by −η (n/n₀)^−c ∂L/∂w, so W moves by
−η (n/n₀)^−(c+2a) (σ²/fan_in₀) ∂L/∂W and starts with variance (n/n₀)^−2(a+b) σ²/fan_in₀: the training of
the function depends on (a, b, c) only through a + b and c + 2a, i.e. (a, b, c) → (a + θ, b − θ, c − 2θ)
changes nothing (TP4 §3's symmetry, here per layer). With θ = b every layer takes NT's 'ntk' form (w ~ N(0, 1),
b' = 0): a' = a + b, c' = c − 2b. Against NT's own 'ntk' Dense (a' = ½ for fan-in n, 0 for the input layer
and biases, c' = 0) a parameterization is then a per-layer factor (n/n₀)^{(a+b)_NTK − (a+b)} on W_std /
b_std and a per-layer factor (n/n₀)^{(c−2b)_NTK − (c−2b)} on the learning rate (:func:`layer_scales`). For
μP: the readout's W_std and b_std × (n/n₀)^−½, every learning rate × n/n₀ (input, hidden and readout alike);
the other layers are NT's 'ntk' Dense unchanged. tests/test_mup.py trains the table's native form (written
there directly from the exponents) and this form from the same draws and finds the same outputs.

**The richness knob γ₀** (Bordelon & Pehlevan 2022, "Self-consistent dynamical field theory of kernel
evolution in wide neural networks", arXiv 2205.09653; their code Pehlevan-Group/Richness_Sweep): on top of
either row of the table, the output is divided by γ₀ (the readout's W_std and b_std ÷ γ₀) and every learning
rate is multiplied by γ₀²; the model trained is centred, g = f(θ) − f(θ₀) (:mod:`studylib.centring`), so
that a small γ₀ does not blow f₀ up. Together: the centred NTK-form network with output ÷ γ and learning
rate × γ², where

    γ = γ₀ √(n/n₀) under 'mup',   γ = γ₀ under 'ntk'   (:func:`gamma`).

* γ₀ = 1, 'mup': μP at every width, equal to the NTK net at n = n₀.
* γ = 1 (γ₀ = √(n₀/n) under 'mup', or γ₀ = 1 under 'ntk'): the centred NTK-parameterized net itself.
* γ₀ → 0: the lazy limit. Relation to Chizat, Oyallon & Bach 2019 (α h(θ) with h = f − f₀, learning rate
  η/α²): α = 1/γ exactly -- gradient flow gives dθ/dt = −η γ J_hᵀ ∇ₓL and dg/dt = −η J_h J_hᵀ ∇ₓL, the
  network's kernel dynamics for every γ, while θ moves O(γ) (SCIENCE.md §7). So as γ₀ → 0 the model trains
  as the linearized NTK-parameterized net at the width given with f₀ = 0, in function space
  f_t(X) = (I − (I − η K₀/(N k))^t) Y (NT's loss ½ mean over N k outputs), to O(γ) (tested).

The analytic ``kernel_fn`` of these nets is NT's for the scaled readout: the width-n NTK-form kernel ÷ γ²
(so η × γ² keeps η Θ, and the critical rate 2Nk/λ_max of that kernel, fixed). The params tree is NT's FC
net's (:func:`studylib.models.fully_connected`): [(W, b), (), ..., (W, b)]. No JAX at import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from studylib.config import ConfigError, integer, number, one_of, validate
from studylib.flags import option

#: The parameterizations of the table above ('ntk' = NT's; 'mup' = TP4's μP).
PARAMETERIZATIONS = ("ntk", "mup")
#: The layer roles of the FC net the table has a row for.
ROLES = ("input", "hidden", "readout", "hidden_bias", "readout_bias")
#: (a, b, c) per role: multiplier (n/n₀)^−a, initial variance (n/n₀)^−2b, learning rate η (n/n₀)^−c.
EXPONENTS: dict[str, dict[str, tuple[float, float, float]]] = {
    "ntk": {"input": (0.0, 0.0, 0.0), "hidden": (0.5, 0.0, 0.0), "readout": (0.5, 0.0, 0.0),
            "hidden_bias": (0.0, 0.0, 0.0), "readout_bias": (0.0, 0.0, 0.0)},
    "mup": {"input": (-0.5, 0.5, 0.0), "hidden": (0.0, 0.5, 0.0), "readout": (0.5, 0.5, 0.0),
            "hidden_bias": (-0.5, 0.5, 0.0), "readout_bias": (0.0, 0.5, 0.0)},
}
#: Base width n₀ by default (the narrowest width of the studies' sweeps).
BASE_WIDTH = 64


class Net(NamedTuple):
    """NT's triple of a stax net (the fields of :class:`studylib.models.Network`)."""

    init_fn: Callable[..., Any]
    apply_fn: Callable[..., Any]
    kernel_fn: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Richness:
    """Where on the lazy-rich axis a network sits: the table row (``parameterization``), the knob
    ``gamma0`` (γ₀ > 0) and the base width n₀ (``base_width``) at which 'mup' equals 'ntk'."""

    parameterization: str = option("mup", "ntk or mup (Yang & Hu 2021's abc table, docs/mup.md)",
                                   check=one_of(PARAMETERIZATIONS))
    gamma0: float = option(1.0, "richness gamma_0 (Bordelon & Pehlevan 2022): output / gamma, learning rate x "
                           "gamma^2, gamma = gamma_0 sqrt(n/n_0) under mup; -> 0: lazy", check=number())
    base_width: int = option(BASE_WIDTH, "base width n_0 (mup equals ntk there)", check=integer())

    def __post_init__(self):
        validate(self, "mup.")


def _check(parameterization: str, width: int, base_width: int, gamma0: float) -> None:
    if parameterization not in PARAMETERIZATIONS:
        raise ConfigError(f"mup.parameterization: unknown value {parameterization!r}; accepted: "
                          f"{', '.join(PARAMETERIZATIONS)}")
    if not (isinstance(width, int) and width >= 1 and isinstance(base_width, int) and base_width >= 1):
        raise ConfigError(f"mup.base_width: width and base width must be integers >= 1, got {width!r}, "
                          f"{base_width!r}")
    if not (isinstance(gamma0, int | float) and math.isfinite(gamma0) and gamma0 > 0):
        raise ConfigError(f"mup.gamma0: must be a finite number > 0, got {gamma0!r}")


def gamma(width: int, *, parameterization: str = "mup", gamma0: float = 1.0, base_width: int = BASE_WIDTH
          ) -> float:
    """γ: the centred NTK-form net's output ÷ γ and its learning rate × γ² give this parameterization at
    ``width``; γ₀ √(n/n₀) under 'mup', γ₀ under 'ntk' (Chizat's α = 1/γ)."""
    _check(parameterization, width, base_width, gamma0)
    return gamma0 * (math.sqrt(width / base_width) if parameterization == "mup" else 1.0)


def layer_scales(width: int, *, parameterization: str = "mup", gamma0: float = 1.0,
                 base_width: int = BASE_WIDTH) -> dict[str, tuple[float, float]]:
    """Per role of :data:`ROLES`: (factor on NT's 'ntk' W_std or b_std, factor on the learning rate), from
    :data:`EXPONENTS` by the symmetry a' = a + b, c' = c − 2b (module docstring), with γ₀ on the readout
    (÷ γ₀) and on every learning rate (× γ₀²)."""
    _check(parameterization, width, base_width, gamma0)
    r = width / base_width
    out = {}
    for role in ROLES:
        a, b, c = EXPONENTS[parameterization][role]
        a0, b0, c0 = EXPONENTS["ntk"][role]
        mult = r ** ((a0 + b0) - (a + b)) / (gamma0 if role.startswith("readout") else 1.0)
        out[role] = (mult, r ** ((c0 - 2 * b0) - (c - 2 * b)) * gamma0**2)
    return out


def fully_connected_layers(width: int, *, depth: int = 5, activation: str = "relu", W_std: float = math.sqrt(2.0),
                           b_std: float = 0.1, out_dim: int = 1, parameterization: str = "mup",
                           gamma0: float = 1.0, base_width: int = BASE_WIDTH) -> list:
    """The stax layers of :func:`fully_connected`: [Dense, activation] x ``depth`` then a Dense readout, all
    NT 'ntk' Dense layers with W_std / b_std times :func:`layer_scales`' factors."""
    from studylib.nt import stax

    activations = {"relu": stax.Relu, "erf": stax.Erf}  # studylib.models' (this module does not import it)
    if activation not in activations:
        raise ConfigError(f"model.activation: unknown value {activation!r}; accepted: {', '.join(activations)}")

    s = layer_scales(width, parameterization=parameterization, gamma0=gamma0, base_width=base_width)
    layers = []
    for i in range(depth):
        w_role = "input" if i == 0 else "hidden"
        layers += [stax.Dense(width, W_std=W_std * s[w_role][0], b_std=b_std * s["hidden_bias"][0],
                              parameterization="ntk"), activations[activation]()]
    layers.append(stax.Dense(out_dim, W_std=W_std * s["readout"][0], b_std=b_std * s["readout_bias"][0],
                             parameterization="ntk"))
    return layers


def fully_connected(width: int, **kwargs: Any):
    """The FC net of :func:`studylib.models.fully_connected` (same layers, same params tree, the same draws
    from the same key) in the parameterization ``parameterization`` with richness ``gamma0`` at base width
    ``base_width`` (keywords of :func:`fully_connected_layers`). Train it with the learning rate times
    :func:`lr_scales` and centred (:func:`studylib.centring.centred_apply`); with 'ntk' and γ₀ = 1 it is
    ``models.fully_connected(..., parameterization='ntk')``. Returns a :class:`Net` (init_fn, apply_fn,
    kernel_fn), the fields of :class:`studylib.models.Network`, which this module does not import."""
    from studylib.nt import stax

    return Net(*stax.serial(*fully_connected_layers(width, **kwargs)))


def dense_roles(params: Sequence[Any]) -> list[tuple[str, str] | None]:
    """Per top-level layer of an FC net's params list: (weight role, bias role) for a Dense layer (the
    first 'input', the last 'readout', the others 'hidden'), None for a layer without parameters."""
    dense = [i for i, p in enumerate(params) if isinstance(p, tuple | list) and len(p) == 2]
    if not dense:
        raise ConfigError("model.arch: no Dense layer (W, b) found in the params; the mup scales need the FC net")
    roles: list[tuple[str, str] | None] = [None] * len(params)
    for j, i in enumerate(dense):
        w = "input" if j == 0 else "readout" if j == len(dense) - 1 else "hidden"
        roles[i] = (w, "readout_bias" if w == "readout" else "hidden_bias")
    return roles


def lr_scales(params: Sequence[Any], *, width: int, parameterization: str = "mup", gamma0: float = 1.0,
              base_width: int = BASE_WIDTH) -> list:
    """A tree like ``params`` (the FC net's list of (W, b) and ()) holding each leaf's learning-rate
    factor (Python floats): a trainer steps θ ← θ − η · scale · ∂L/∂θ leaf by leaf (:func:`sgd_update`).
    For both rows of the table the factor is the same for every layer, γ² (:func:`gamma`), but it is
    read per role from :func:`layer_scales`, so another table row needs no other code."""
    s = layer_scales(width, parameterization=parameterization, gamma0=gamma0, base_width=base_width)
    return [() if r is None else (s[r[0]][1], s[r[1]][1]) for r in dense_roles(params)]


def sgd_update(params: Any, grads: Any, learning_rate: float, scales: Any) -> Any:
    """θ − η · scale · g leaf by leaf (``scales`` from :func:`lr_scales`; params may carry leading batch axes)."""
    import jax

    return jax.tree_util.tree_map(lambda p, g, s: p - learning_rate * s * g, params, grads, scales)


def half_mse(f, y):
    """NT's loss ½ mean((f − y)²) over all N k outputs."""
    import jax.numpy as jnp

    return 0.5 * jnp.mean((f - y) ** 2)


def gd_step(apply_fn: Callable, params: Any, params0: Any, x, y, learning_rate: float, scales: Any, *,
            centred: bool = True) -> Any:
    """One full-batch GD step on :func:`half_mse` of the (centred, when ``centred``: f(θ) − f(θ₀)) model with
    per-leaf learning-rate factors ``scales``. One seed; vmap/jit it outside."""
    import jax

    from studylib.centring import centred_apply

    model = centred_apply(apply_fn, params0) if centred else apply_fn
    grads = jax.grad(lambda p: half_mse(model(p, x), y))(params)
    return sgd_update(params, grads, learning_rate, scales)


def layer_outputs(layers: Sequence[Any], params: Sequence[Any], x) -> list:
    """The output of every stax layer of ``layers`` (as :func:`fully_connected_layers` gives them) applied in
    turn to ``x`` with ``params`` (one seed): NT's own forward pass, layer by layer; the last entry is the
    network's output. Entries 1, 3, ... of the FC net are its hidden activations φ(h^l), (N, n) each."""
    outs = []
    h = x
    for layer, p in zip(layers, params, strict=True):
        h = layer[1](p, h)
        outs.append(h)
    return outs


def coordinate_sizes(layers: Sequence[Any], params: Sequence[Any], params0: Sequence[Any], x, *,
                     outputs0: list | None = None) -> dict[str, Any]:
    """microsoft/mup's coordinate check at one step, on inputs x (N, d): per hidden layer l = 1..L and the
    output (index L), the per-coordinate size RMS over all N × n entries of the activation φ(h^l)(θ)
    (``size``; the output: f(θ), uncentred) and of its change since θ₀ (``update``: φ(h^l)(θ) − φ(h^l)(θ₀);
    the output: f(θ) − f(θ₀), the centred model). ``outputs0``: :func:`layer_outputs` at θ₀ when already
    computed. Arrays of shape (L + 1,); JAX, jit-able."""
    import jax.numpy as jnp

    now = layer_outputs(layers, params, x)
    then = layer_outputs(layers, params0, x) if outputs0 is None else outputs0
    picks = [*range(1, len(layers) - 1, 2), len(layers) - 1]
    rms = lambda a: jnp.sqrt(jnp.mean(jnp.square(a)))  # noqa: E731
    return {"size": jnp.stack([rms(now[i]) for i in picks]),
            "update": jnp.stack([rms(now[i] - then[i]) for i in picks])}


def base_learning_rate(x, *, out_dim: int = 1, lr_fraction: float = 0.5, depth: int = 5, activation: str = "relu",
                       W_std: float = math.sqrt(2.0), b_std: float = 0.1) -> float:
    """η = ``lr_fraction`` × 2 N k / λ_max of the analytic NTK of the NTK-parameterized FC net on ``x``
    (width independent): the rate before :func:`lr_scales`. The γ-model's kernel is that ÷ γ² and its rate
    η γ², so η Θ, and the fraction of the critical rate, is the same at every width and γ₀."""
    import numpy as np

    from studylib import kernels

    kernel_fn = fully_connected(8, depth=depth, activation=activation, W_std=W_std, b_std=b_std, out_dim=out_dim,
                                parameterization="ntk", gamma0=1.0)[2]  # models.fully_connected's 'ntk' net
    theta = np.asarray(kernels.analytic(kernel_fn, x, None), np.float64)
    return lr_fraction * float(kernels.critical_learning_rate(theta, outputs=out_dim))


def readout_form(width: int, setting: Richness) -> tuple[float, float]:
    """(γ, learning-rate factor) of ``setting`` at ``width`` when it is the NTK-form net with its output ÷ γ
    and one learning-rate factor for every leaf (true of both rows of the table, γ₀ included: then the
    factor is γ²); ValueError for a table whose factors are not of that form."""
    s = layer_scales(width, parameterization=setting.parameterization, gamma0=setting.gamma0,
                     base_width=setting.base_width)
    g = gamma(width, parameterization=setting.parameterization, gamma0=setting.gamma0,
              base_width=setting.base_width)
    lrs = {v[1] for v in s.values()}
    if len(lrs) != 1 or any(abs(s[r][0] * (g if r.startswith("readout") else 1.0) - 1.0) > 1e-12 for r in ROLES):
        raise ValueError(f"{setting}: not an NTK-form net with output / gamma and one learning-rate factor")
    return g, lrs.pop()


def coordinate_check(width: int, x, y, *, learning_rate: float, steps: int, seeds: Sequence[int],
                     settings: Sequence[Richness], depth: int = 5, activation: str = "relu",
                     W_std: float = math.sqrt(2.0), b_std: float = 0.1, centred: bool = True,
                     dtype: str | None = None) -> dict[str, Any]:
    """microsoft/mup's coordinate check of the FC net at one width, for each of ``settings``: ``steps``
    full-batch GD steps on (x (N, d), y (N, k)) at ``learning_rate`` × :func:`lr_scales` from each seed's θ₀
    (PRNGKey(seed), drawn in ``dtype``; the same θ₀ for every setting), the model centred when ``centred``;
    after every step :func:`coordinate_sizes`. Returns NumPy float64 ``size`` and ``update``,
    (P, S, steps + 1, depth + 1) (step 0 = init; last axis: hidden layers 1..L, then the output), and ``gamma``
    and ``lr_scale`` (P,).

    Every setting is the NTK-form net with its output ÷ γ (:func:`readout_form`), which is what
    :func:`fully_connected` builds (the readout's W_std and b_std ÷ γ); here γ and the learning rate are traced
    values, so all settings share one compiled function per width (vmapped), and seeds run one after another
    (``lax.map``: one seed's parameters in memory at a time)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from studylib.nt import stax
    from studylib.training import init_params

    form = [readout_form(width, s) for s in settings]
    layers = fully_connected_layers(width, depth=depth, activation=activation, W_std=W_std, b_std=b_std,
                                    out_dim=int(y.shape[-1]), parameterization="ntk")
    init_fn, apply_fn, _ = stax.serial(*layers)
    params0 = init_params(init_fn, list(seeds), tuple(x.shape), dtype=dtype)
    dt = jax.tree_util.tree_leaves(params0)[0].dtype
    x, y = jnp.asarray(x, dt), jnp.asarray(y, dt)
    gammas = jnp.asarray([g for g, _ in form], dt)
    lrs = jnp.asarray([learning_rate * f for _, f in form], dt)

    def one(p0, g, lr):
        scaled = [*layers[:-1], (None, lambda p, h, **kw: layers[-1][1](p, h, **kw) / g, None)]
        model = lambda p, xx: apply_fn(p, xx) / g  # noqa: E731
        outputs0 = layer_outputs(scaled, p0, x)
        ones = jax.tree_util.tree_map(lambda _: 1.0, p0)

        def body(p, _):
            p = gd_step(model, p, p0, x, y, lr, ones, centred=centred)
            return p, coordinate_sizes(scaled, p, p0, x, outputs0=outputs0)

        _, rec = jax.lax.scan(body, p0, None, length=steps)
        first = coordinate_sizes(scaled, p0, p0, x, outputs0=outputs0)
        return {k: jnp.concatenate([first[k][None], rec[k]]) for k in first}

    per_seed = jax.jit(lambda p: jax.lax.map(lambda q: jax.vmap(one, in_axes=(None, 0, 0))(q, gammas, lrs), p))
    out = per_seed(params0)  # (S, P, T + 1, L + 1)
    return {"size": np.swapaxes(np.asarray(out["size"], np.float64), 0, 1),
            "update": np.swapaxes(np.asarray(out["update"], np.float64), 0, 1),
            "gamma": np.array([g for g, _ in form]), "lr_scale": np.array([f for _, f in form])}
