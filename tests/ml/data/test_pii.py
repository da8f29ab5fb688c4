"""Personal data in tweets: replaced by typed placeholders and counted, nothing else."""

from __future__ import annotations

import pytest

from distillery.ml.data.pii import scrub_text, scrub_texts


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        (
            "mail me at jane.doe+fly@example.co.uk pls",
            "mail me at [EMAIL] pls",
            "email",
        ),
        ("call 1-800-433-7300 now", "call [PHONE] now", "phone"),
        ("call (212) 555-0199 now", "call [PHONE] now", "phone"),
        ("my cell 212.555.0199!", "my cell [PHONE]!", "phone"),
        ("ring +44 20 7946 0958 today", "ring [PHONE] today", "phone"),
        ("card 4111 1111 1111 1111 charged twice", "card [CARD] charged twice", "card"),
        ("card 4111-1111-1111-1111.", "card [CARD].", "card"),
        ("wifi blocked 192.168.10.254 again", "wifi blocked [IP] again", "ip"),
        ("server 2001:db8::ff00:42:8329 down", "server [IP] down", "ip"),
    ],
)
def test_personal_data_is_replaced_by_its_type(
    text: str, expected: str, kind: str
) -> None:
    scrubbed, found = scrub_text(text)
    assert scrubbed == expected
    assert dict(found) == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "@united flight 1234 delayed 45 min",  # a mention and a flight number
        "landed at 10:30:15, gate 22",  # a clock time is no IPv6 address
        "only $1,299.99 for 2 seats on 12/25/2026",
        "confirmation 4111111111111112",  # fails the Luhn check: not a card
        "http://t.co/abc123 version 1.2.3.4.5",  # not an IP
        "call 555-0199",  # too short to be a whole phone number
        "Horseless Carriage : Car :: Driverless Car : ???",  # "::" is no address
    ],
)
def test_ordinary_tweets_are_left_alone(text: str) -> None:
    assert scrub_text(text) == (text, {})


def test_counts_cover_every_type_and_bad_values_are_refused() -> None:
    texts, counts = scrub_texts(
        ["a@b.com and c@d.org", "fine", "dial 212-555-0199 or 10.0.0.1"]
    )
    assert texts == ["[EMAIL] and [EMAIL]", "fine", "dial [PHONE] or [IP]"]
    assert counts == {"email": 2, "card": 0, "ip": 1, "phone": 1}
    with pytest.raises(ValueError, match="text 1 is a float"):
        scrub_texts(["ok", float("nan")])
