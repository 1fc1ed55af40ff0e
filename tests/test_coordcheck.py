"""The coordinate check reads its richness from the model (``--gamma0`` / ``--base-width`` of ModelConfig, no fields
of its own): the flags parse once, the tiny preset's base width is its narrowest width, the base width and γ₀ are in
every cell key (an 'ntk' model at γ₀ = 1 leaves them out of the runner's default key), and summaries written before
the move still print. No training."""

import dataclasses

from studylib import cli, coordcheck, runner
from studylib.models import ModelConfig


def test_richness_comes_from_the_model_flags_and_keys():
    cfg = cli.config_from_args(coordcheck, cli.parser(coordcheck, "").parse_args(
        ["--preset", "tiny", "--gamma0", "0.5", "--base-width", "32"]))
    assert (cfg.model.gamma0, cfg.model.base_width) == (0.5, 32)
    assert not {"gamma0", "base_width"} & {f.name for f in dataclasses.fields(coordcheck.Config)}
    tiny = cli.config_from_args(coordcheck, cli.parser(coordcheck, "").parse_args(["--preset", "tiny"]))
    assert tiny.model.base_width == tiny.widths[0] == 16 and coordcheck.Config().model.base_width == 64
    from studylib.coordcheck import cell

    assert [(s.parameterization, s.gamma0, s.base_width) for s in cell.settings(cfg)] == [("ntk", 0.5, 32),
                                                                                           ("mup", 0.5, 32)]
    other = dataclasses.replace(tiny, model=dataclasses.replace(tiny.model, base_width=8))
    c = coordcheck.cells(tiny)[0]
    assert runner.cell_key(coordcheck, other, c) != runner.cell_key(coordcheck, tiny, c)
    assert coordcheck.key_config(tiny)["model"]["base_width"] == 16


def test_older_summaries_name_their_richness():
    from studylib.coordcheck import report

    new = {"model": dataclasses.asdict(ModelConfig(base_width=16, gamma0=0.5))}
    assert report.richness(new) == (16, 0.5)
    old = {"model": {k: v for k, v in new["model"].items() if k not in ("gamma0", "base_width")}, "base_width": 64,
           "gamma0": 1.0}
    assert report.richness(old) == (64, 1.0)
