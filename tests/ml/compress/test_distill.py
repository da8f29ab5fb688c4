"""Rows as the students read them: the teacher's tokens, or their backbone's."""

from __future__ import annotations

import pandas as pd

from distillery.ml.compress.distill import SLICE_TEACHER, tokenize_for_students
from distillery.ml.data.text import tokenize_partition


def test_students_read_their_backbones_tokens_and_keep_every_other_column() -> None:
    rows = pd.DataFrame(
        {
            "text": ["great crew", "late flight again"],
            "label": "x",
            "source_row": [4, 7],
        }
    )
    builtin = tokenize_partition(rows, "builtin", 8, {"x": 0})
    # Ids from some other tokenizer, as a non-BERT teacher's preprocess wrote them.
    teacher_rows = builtin.assign(
        input_ids=[[9, 9], [9, 9, 9]],
        attention_mask=[[1, 1], [1, 1, 1]],
        teacher_logits=[[0.1, 0.9], [0.8, 0.2]],
    )

    assert tokenize_for_students(teacher_rows, SLICE_TEACHER, 8) is teacher_rows
    students = tokenize_for_students(teacher_rows, "builtin", 8)
    assert [ids.tolist() for ids in students["input_ids"]] == [
        ids.tolist() for ids in builtin["input_ids"]
    ]
    assert students["teacher_logits"].tolist() == [[0.1, 0.9], [0.8, 0.2]]
    assert students["source_row"].tolist() == [4, 7]
    assert teacher_rows["input_ids"].iloc[0] == [9, 9]  # the input is left as it was
