"""Gate flips (studylib.gates) on hand-made nets whose flips are counted by hand, and the early
checkpoint rule."""

import jax.numpy as jnp
import numpy as np
import pytest

from studylib import gates, sgd

# depth 2, width 3, standard parameterization (scales 1): z1 = x W1 + b1, z2 = relu(z1) W2 + b2
NET = sgd.MLP(sizes=(1, 3, 3, 1), w_scale=(1.0, 1.0, 1.0), b_scale=(1.0, 1.0, 1.0))
X = jnp.array([[1.0], [-1.0]])


def _dense(w1, w2):
    z = lambda n: jnp.zeros((1, n))  # noqa: E731
    return ((jnp.array([w1]), z(3)), (jnp.array(w2), z(3)), (jnp.ones((3, 1)), z(1)))


def test_hand_counted_flips():
    # layer 1 gates at x = +1: w1 > 0; at x = -1: w1 < 0.
    d0 = _dense([1.0, -1.0, 2.0], np.eye(3).tolist())
    # flip the sign of unit 1's input weight: its gate flips at both inputs (2 of 6 pairs);
    # layer 2 = relu(z1) @ I: z2 = relu(z1); unit 1 now open at x=+1 (was closed at x=-1 -> open):
    dt = _dense([1.0, 1.0, 2.0], np.eye(3).tolist())
    flips = np.asarray(gates.gate_flips(NET, d0, dt, X))
    # layer 1: unit 1 flips at x = +1 (closed -> open) and x = -1 (open -> closed): 2/6.
    # layer 2 (z2 = relu(z1)): unit 1 at x=+1: 0 -> 1 (closed -> open), at x=-1: 1 -> 0 (open -> closed): 2/6.
    np.testing.assert_allclose(flips, [2 / 6, 2 / 6])
    assert np.asarray(gates.gate_flips(NET, d0, d0, X)).tolist() == [0.0, 0.0]


def test_second_layer_only():
    d0 = _dense([1.0, 1.0, 1.0], np.eye(3).tolist())
    w2 = np.eye(3)
    w2[2, 2] = -1.0  # unit 2 of layer 2 sees -relu(z1): closed at x=+1 (z=-1), still closed at x=-1 (z=0)
    dt = _dense([1.0, 1.0, 1.0], w2.tolist())
    np.testing.assert_allclose(np.asarray(gates.gate_flips(NET, d0, dt, X)), [0.0, 1 / 6])


@pytest.mark.parametrize("steps, want", [([0, 1, 2, 5, 10, 100], 3), ([0, 1, 50, 100], 1), ([0, 3, 300], 1)])
def test_early_checkpoint(steps, want):
    assert gates.early_checkpoint(steps) == want
