"""The public API: what ``import switokd`` gives, and every docstring example of the public modules, run."""
import doctest
import importlib

import pytest

import switokd

PUBLIC = ["Trainer", "load_config", "create_method", "list_methods", "create_model", "list_models",
          "register_model", "DataSplits", "decide", "switch_stats", "SwitokdError"]


def test_the_public_api_imports_from_switokd():
    for name in PUBLIC:
        obj = getattr(switokd, name)
        assert name in switokd.__all__
        if callable(obj) and not isinstance(obj, type) or name in ("Trainer",):
            doc = obj.__doc__ or ""
            assert doc.strip(), f"{name} has no docstring"
    for name in ("Trainer", "load_config", "create_method", "decide", "switch_stats"):
        doc = getattr(switokd, name).__doc__
        assert "Args:" in doc and "Example:" in doc, name
    assert "dkd" in switokd.list_methods() and "uniokd" in switokd.list_methods()
    assert "resnet20" in switokd.list_models()


@pytest.mark.parametrize("module", ["switokd.core.switching", "switokd.config", "switokd.core.losses", "switokd.methods",
                                    "switokd.methods.distill", "switokd.race.plan", "switokd.race.schedule",
                                    "switokd.methods.recipes", "switokd.data.conditions", "switokd.log"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0, result


def test_errors_share_one_base_with_their_exit_codes():
    from switokd import errors
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), switokd.SwitokdError)
    assert errors.CheckpointWriteError.exit_code == 4 and errors.TrainingDiverged.exit_code == 3
    assert errors.AccuracyDropError.exit_code == 3 and errors.ConfigError.exit_code == 2
    # They keep the built-in bases they had.
    from switokd.train.signals import Interrupted
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.CheckpointError, RuntimeError)
    assert issubclass(errors.TrainingDiverged, RuntimeError) and issubclass(Interrupted, switokd.SwitokdError)


def test_output_goes_through_logging_and_can_be_routed(tmp_path, splits, capsys):
    import logging
    from switokd import log
    from conftest import tiny_config

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    log.route(Keep())
    try:
        switokd.Trainer(tiny_config(tmp_path, overrides=["train.progress=true", "train.epochs=1"]), data=splits,
                        writable=False).fit()
    finally:
        log.route()
        log.console()
        logging.getLogger("switokd").handlers[:] = [h for h in logging.getLogger("switokd").handlers
                                                    if isinstance(h, log.ConsoleHandler)]
    text = "\n".join(records)
    assert text.startswith("device ") and "img/s" in text  # the header and the epoch line
    assert "img/s" not in capsys.readouterr().err
