"""The ensemble study (``python -m study.ensemble``): ensembles of finite networks against the
infinite-width NTK / NNGP Gaussian process (Lee et al. 2019, Fig. 2).

For each hidden width, ``members`` networks from independent initialisations
(NTK parameterization) are trained by full-batch GD on L = 1/2 mean((f - y)^2)
(NT's convention; time = lr * steps), vmapped over the members, in two ways:

* ``ntk``: every layer trained, compared with
  ``nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train,
  learning_rate=lr)(t, x_test, get='ntk', compute_cov=True)``;
* ``readout``: only the last Dense layer trained (the gradients of the hidden
  layers are masked by construction: only the readout parameters are passed to
  the trainer), compared with the same with ``get='nngp'``.

In both cases the GP at step t is (Lee et al. 2019 eqs. 14-16; K = NNGP, Θ = the
trained kernel: the NTK, or the NNGP for readout-only training, N = n_train)::

    A_t      = Θ(x, X) Θ^-1 (I - D_t)
    mean_t   = A_t Y
    cov_t    = K(x, x) + A_t K(X, X) A_t^T - A_t K(X, x) - K(x, X) A_t^T

with D_t = exp(-lr Θ t / N) for gradient flow (NT's function; continuous time,
t counts steps) and D_t = (I - lr Θ / N)^t for the exact discrete GD that the
networks actually run (:func:`studylib.closed_form.gp_moments` with ``discrete=True``).
At t = 0 both give the NNGP prior (mean 0, cov K(x, x)). The statistics and the
Monte-Carlo floor are defined in :mod:`.summary`.

The face every study shares (see :mod:`studylib.runner`): the config and its cells from
:mod:`.config` (imported here: no JAX), the GP computed once and the cell computation
(:mod:`.cell`), the statistics and summary (:mod:`.summary`), the console table and REPORT.md
section (:mod:`.report`) and the figures (:mod:`.plots`), each loaded when first used so
that ``--help`` stays fast.
"""

from __future__ import annotations

from studylib import runner
from studylib.ensemble.config import (
    ARRAYS_FILE,
    COVERAGE_2SIGMA,
    DEFAULT_PRESET,
    MODES,
    NAME,
    PRESETS,
    REFERENCE,
    STATS,
    SWEEP_FIELDS,
    Config,
    EnsembleConfig,
    cell_cost,
    cells,
    prepare_cost,
)

#: Appended to the devices line of a run.
DEVICES_NOTE = " (members are split over them)"

#: Face names loaded on first use -> the submodule that defines them.
_LAZY = {"prepare": "cell", "run_cell": "cell", "notes": "cell", "plan": "cell", "train_width": "cell",
         "member_chunk": "cell", "member_plan": "cell", "readout_model": "cell", "gp_all": "cell",
         "summarise": "summary", "ensemble_stats": "summary", "mc_floor": "summary",
         "floor_summary": "summary", "unstable_members": "summary",
         "format_table": "report", "section": "report", "figures": "plots"}
__getattr__ = runner.lazy_attributes(__name__, _LAZY)
run = runner.study_run(__name__)


def needs_x64(cfg: EnsembleConfig) -> bool:
    """Always: the GP side is float64 (the NNGP Gram spans seven decades); the networks are cast
    to ``cfg.dtype``."""
    return True


__all__ = ["ARRAYS_FILE", "COVERAGE_2SIGMA", "DEFAULT_PRESET", "DEVICES_NOTE", "MODES", "NAME", "PRESETS",
           "REFERENCE", "STATS", "SWEEP_FIELDS", "Config", "EnsembleConfig", "cell_cost", "cells", "needs_x64",
           "prepare_cost",
           "run", *_LAZY]
