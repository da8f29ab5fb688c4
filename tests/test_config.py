"""The project's configuration, loaded as `kedro run` loads it."""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from distillery.settings import CONFIG_LOADER_ARGS

CONF = Path(__file__).resolve().parents[1] / "conf"


def _teachers(runtime_params: dict | None) -> set[str]:
    args = CONFIG_LOADER_ARGS | {"default_run_env": "test"}
    params = OmegaConfigLoader(str(CONF), runtime_params=runtime_params, **args)[
        "parameters"
    ]
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
