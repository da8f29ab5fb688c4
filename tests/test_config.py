"""The project's configuration, loaded as `kedro run` loads it."""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from distillery.settings import CONFIG_LOADER_ARGS

CONF = Path(__file__).resolve().parents[1] / "conf"


def _parameters(env: str = "test", runtime_params: dict | None = None) -> dict:
    """The parameters as `kedro run --env ENV [--params ...]` loads them."""
    args = CONFIG_LOADER_ARGS | {"default_run_env": env}
    return OmegaConfigLoader(str(CONF), runtime_params=runtime_params, **args)[
        "parameters"
    ]


def _teachers(runtime_params: dict | None) -> set[str]:
    params = _parameters(runtime_params=runtime_params)
    return {
        params["preprocess"]["tokenizer"],
        params["train_options"]["model_name_or_path"],
        params["compress_options"]["distill"]["model_name_or_path"],
    }


@pytest.mark.parametrize(
    ("runtime_params", "expected"),
    [
        (None, "builtin"),
        ({"teacher_model": "/models/roberta-base"}, "/models/roberta-base"),
    ],
)
def test_one_switch_changes_the_teacher_of_every_stage(
    runtime_params, expected
) -> None:
    # `kedro run --params teacher_model=DIR_OR_ID`: preprocess tokenises, train
    # fine-tunes and compress distils with the same teacher.
    assert _teachers(runtime_params) == {expected}


def _students(env: str) -> dict:
    from distillery.ml.compress.distill import StudentRecipe  # noqa: PLC0415

    return {
        entry["name"]: StudentRecipe.from_dict(entry)
        for entry in _parameters(env)["compress_options"]["students"]
    }


def test_full_environment_offers_the_default_student_unchanged() -> None:
    # conf/full lists its students again (a list replaces the base's); the default
    # student among them must be the same recipe, or `--env full` compares a
    # different student than the one `kedro run` ships.
    base, full = _students("test"), _students("full")
    assert set(base) < set(full)
    for name, recipe in base.items():
        assert full[name] == recipe
