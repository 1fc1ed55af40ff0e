"""compare.cell.Ahead trains a width's quadratic model on its own thread (Ahead.quad_job), and the main thread
takes that result only where it is the one it would compute itself: same rate, same steps, same numbers."""

import time

import numpy as np
import pytest

from studylib import data as D
from studylib.compare import cell
from studylib.compare.config import CompareConfig
from studylib.models import ModelConfig
from studylib.runner import Context

# depth 2 (the default is 5): the start compiles the training and quadratic-model programs in less time
CFG = CompareConfig(widths=(8,), seeds=2, steps=12, n_checkpoints=3, quad_max_width=8, model=ModelConfig(depth=2))


@pytest.fixture
def ahead(monkeypatch):
    monkeypatch.setenv(cell.AHEAD_ENV, "1")
    a = cell.Ahead()
    yield a
    a.cancel_queued()


def test_quad_trained_ahead_is_the_quad_of_run_width_bit_for_bit(ahead):
    data = D.load_for(CFG.data, CFG.model)
    ctx = Context(dataset=data, shared={}, log=print)
    seeds = [0, 1]
    ahead.submit(CFG, [8], data, ctx)
    assert len(ahead.quads) == 1  # width 8 <= quad_max_width: its quadratic model is queued after its start
    theta_train, _ = cell.shared_analytic(CFG, 8, ctx)  # what the main thread does first; the job waits for it
    start = ahead.take(CFG, 8, data, seeds)
    assert start is not None
    n, k = data.y_train.shape
    from studylib import kernels

    lr_inf = float(kernels.critical_learning_rate(theta_train, outputs=k))
    lr, steps = cell.width_schedule(CFG, 8, start["at_init"]["k0_flat"], lr_inf, n * k)[3:]
    (_, job), = ahead.quads
    for _ in range(1000):  # a job not begun yet is cancelled by take_quad (the main thread trains it then)
        if job.running() or job.done():
            break
        time.sleep(0.01)
    got = ahead.take_quad(CFG, 8, data, seeds, lr, steps)
    assert got is not None
    import jax.numpy as jnp

    x_train, y_train, x_test = (jnp.asarray(a, jnp.float32) for a in (data.x_train, data.y_train, data.x_test))
    want = cell.train_quadratic(CFG, 8, start["net"].apply_fn, start["p0"], x_train, y_train, x_test, lr=lr,
                                steps=steps)
    assert set(got) == set(want)
    for key in want:  # the same program on the same inputs: equal bit for bit, NaN where it diverged
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert np.isfinite(got["f_train"]).all()  # a trained model, not NaN placeholders
    # a job that trained at another rate (or for other steps) than the main thread's: not taken
    from concurrent.futures import Future

    for other_lr, other_steps in ((lr * 0.5, steps), (lr, steps * 2)):
        done = Future()
        done.set_result({"lr": other_lr, "steps": other_steps, "quad": got})
        ahead.quads.append(((CFG, 8, data, tuple(seeds)), done))
        assert ahead.take_quad(CFG, 8, data, seeds, lr, steps) is None


def test_quad_job_waiting_for_the_analytic_kernel_stops_when_the_run_stops(ahead):
    from concurrent.futures import Future, ThreadPoolExecutor

    data = D.load_for(CFG.data, CFG.model)
    ctx = Context(dataset=data, shared={}, log=print)  # no analytic kernel will come (the run stopped before)
    begun = Future()
    begun.set_result({})  # the width's start is done
    with ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(ahead.quad_job, CFG, 8, data, [0, 1], begun, ctx, ahead.generation)
        time.sleep(0.1)
        assert job.running()  # waiting for the analytic kernel
        ahead.cancel_queued()
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="run stopped"):
            job.result(timeout=30)
        assert time.monotonic() - t0 < 5  # it polls every 20 ms
