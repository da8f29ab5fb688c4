"""build_student: layer copies, width slicing, valid configs, bad shapes rejected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from distillery.ml.compress.student import (
    build_student,
    default_layer_selection,
    rank_hidden_dims,
)
from distillery.ml.compress.vocab import prune_vocabulary
from distillery.ml.models.modeling import TextClassifier

TINY_LABELS = ["a", "b", "c"]


@pytest.fixture
def teacher(tiny_classifier: Callable[..., TextClassifier]) -> TextClassifier:
    """4 layers, width 32, 2 heads of 16, FFN 37, 100 ids."""
    return tiny_classifier(TINY_LABELS)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 100, (3, 12), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    return input_ids, attention_mask


def _logits(model: TextClassifier, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        return model(*batch)


@pytest.mark.parametrize(
    ("depth", "keep", "expected"),
    [
        (6, 1, [5]),
        (6, 2, [0, 5]),
        (6, 3, [0, 3, 5]),
        (6, 6, list(range(6))),
        (4, 2, [0, 3]),
    ],
)
def test_default_layer_selection_spreads_from_first_to_last(
    depth: int, keep: int, expected: list[int]
) -> None:
    assert default_layer_selection(depth, keep) == expected


@pytest.mark.parametrize("keep", [0, 7])
def test_default_layer_selection_rejects_impossible_depths(keep: int) -> None:
    with pytest.raises(ValueError, match="num_layers"):
        default_layer_selection(6, keep)


def test_full_depth_student_is_the_teacher(teacher: TextClassifier, batch) -> None:
    student = build_student(teacher, 4)
    assert torch.equal(_logits(student, batch), _logits(teacher, batch))


def test_selected_layers_embeddings_and_head_are_copied(
    teacher: TextClassifier,
) -> None:
    student = build_student(teacher, 2, layer_selection=[1, 3])
    assert student.config.num_hidden_layers == 2
    t_layers, s_layers = teacher.encoder.encoder.layer, student.encoder.encoder.layer
    for s_idx, t_idx in enumerate([1, 3]):
        t_state, s_state = t_layers[t_idx].state_dict(), s_layers[s_idx].state_dict()
        assert s_state.keys() == t_state.keys()
        assert all(torch.equal(s_state[k], t_state[k]) for k in t_state)
    assert torch.equal(
        student.encoder.embeddings.word_embeddings.weight,
        teacher.encoder.embeddings.word_embeddings.weight,
    )
    assert torch.equal(student.head.weight, teacher.head.weight)
    assert student.labels == teacher.labels


def test_build_student_leaves_the_teacher_untouched(teacher: TextClassifier) -> None:
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    build_student(teacher, 1, hidden_size=16, intermediate_size=20)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_narrow_student_is_a_valid_slice_of_the_teacher(
    teacher: TextClassifier, batch, tmp_path: Path
) -> None:
    dims = list(range(31, -1, -1))  # rank: highest index first
    student = build_student(
        teacher,
        1,
        layer_selection=[2],
        hidden_size=16,
        intermediate_size=20,
        max_position_embeddings=24,
        hidden_dims=dims,
    )
    cfg = student.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (
        16,
        1,
        20,
    )
    assert cfg.max_position_embeddings == 24
    kept = torch.arange(16, 32)  # the 16 top-ranked coordinates, in order
    t_emb, s_emb = teacher.encoder.embeddings, student.encoder.embeddings
    assert torch.equal(
        s_emb.word_embeddings.weight, t_emb.word_embeddings.weight[:, kept]
    )
    assert torch.equal(
        s_emb.position_embeddings.weight, t_emb.position_embeddings.weight[:24, kept]
    )
    # Every student weight is a sub-matrix of the teacher's: check the query rows.
    t_query = teacher.encoder.encoder.layer[2].attention.self.query.weight
    s_query = student.encoder.encoder.layer[0].attention.self.query.weight  # (16, 16)
    head_rows = [r for r in range(32) if torch.equal(t_query[r, kept], s_query[0])]
    assert head_rows in ([0], [16])
    assert torch.equal(student.head.weight, teacher.head.weight[:, kept])
    input_ids, attention_mask = batch
    logits = _logits(student, (input_ids, attention_mask))
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    # A valid transformers config: it saves and loads into the same model.
    student.save(tmp_path / "student")
    reloaded = TextClassifier.load(tmp_path / "student")
    assert torch.equal(_logits(reloaded, batch), logits)


def test_rank_hidden_dims_is_a_permutation(teacher: TextClassifier, batch) -> None:
    data_free = rank_hidden_dims(teacher)
    from_data = rank_hidden_dims(teacher, *batch)
    assert sorted(data_free) == list(range(32))
    assert sorted(from_data) == list(range(32))


def test_rank_hidden_dims_needs_both_inputs(teacher: TextClassifier, batch) -> None:
    with pytest.raises(ValueError, match="both"):
        rank_hidden_dims(teacher, batch[0])


def test_pruned_vocabulary_is_carried_over(teacher: TextClassifier, batch) -> None:
    pruned = prune_vocabulary(teacher, list(range(50)), unk_id=1)
    student = build_student(pruned, 4)
    assert torch.equal(student.id_map, pruned.id_map)
    assert torch.equal(_logits(student, batch), _logits(pruned, batch))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 24}, "head size"),  # 24 is not a multiple of 16
        ({"hidden_size": 24, "num_heads": 5}, "divisible"),
        ({"hidden_size": 64}, "exceeds"),
        ({"intermediate_size": 64}, "exceeds"),
        ({"layer_selection": [0, 4]}, "layer_selection"),
        ({"layer_selection": [0]}, "layer_selection"),
        ({"max_position_embeddings": 128}, "exceeds"),
        ({"hidden_size": 16, "hidden_dims": [0, 1, 2]}, "hidden_dims"),
    ],
)
def test_build_student_rejects_bad_shapes(
    teacher: TextClassifier, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_student(teacher, 2, **kwargs)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"embedding_bits": 2}, "L2-H256: embedding_bits must be 4 or 8"),
        (
            {"embedding_block_size": 100},
            "L2-H256: embedding_block_size must be a power of two",
        ),
        ({"embedding_blocks": 64}, "embedding_blocks"),
    ],
)
def test_student_recipe_names_the_bad_setting(
    entry: dict[str, object], message: str
) -> None:
    from distillery.ml.compress.distill import StudentRecipe  # noqa: PLC0415

    with pytest.raises(ValueError, match=message):
        StudentRecipe.from_dict({"name": "L2-H256", "num_layers": 2} | entry)


def test_student_recipe_keeps_its_embedding_block_size() -> None:
    from distillery.ml.compress.distill import StudentRecipe  # noqa: PLC0415

    recipe = StudentRecipe.from_dict(
        {"name": "L2-H256", "num_layers": 2, "embedding_block_size": 32}
    )
    assert recipe.embedding_block_size == 32
    # A recipe that leaves it out gets the chosen setting, not a smaller one: the
    # drift that once gave conf/full's students four times the scales.
    assert StudentRecipe(name="s", num_layers=1).embedding_block_size == 128
