"""Personal data in texts replaced by typed placeholders, and counted.

E-mail addresses, phone numbers, payment-card numbers and IP addresses are found with
patterns and checks (a card number must pass the Luhn check, an IP address must parse),
then replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]`` and ``[IP]``. Patterns, not a
named-entity model: Presidio's analyzer needs a spaCy model, which cannot be fetched
offline, and names or addresses in tweets are not what this scrub promises to find.
User mentions (``@united``) are not e-mail addresses and are left to normalisation.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable

PLACEHOLDERS = {"email": "[EMAIL]", "card": "[CARD]", "ip": "[IP]", "phone": "[PHONE]"}

_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
# 13 to 19 digits, optionally grouped by spaces or dashes.
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# North American numbers (with or without +1, 1-800 style), and + international ones.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+?1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}(?![\w-])"
    r"|(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w-])"
)


def _luhn(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _is_ip(match: str) -> bool:
    # "::" (an analogy in a tweet, "a : b :: c : d") parses as IPv6's unspecified
    # address; an address worth hiding has at least two groups of digits.
    if ":" in match and sum(1 for group in match.split(":") if group) < 2:
        return False
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


def _is_phone(match: str) -> bool:
    return 10 <= len(re.sub(r"\D", "", match)) <= 15


# Order matters: a card number also looks like a phone number, an address like an IP.
_RULES: tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...] = (
    ("email", _EMAIL, lambda _: True),
    ("card", _CARD, _is_card),
    ("ip", _IPV4, _is_ip),
    ("ip", _IPV6, _is_ip),
    ("phone", _PHONE, _is_phone),
)


def scrub_text(text: str) -> tuple[str, Counter[str]]:
    """Replace the personal data in one text by typed placeholders.

    Args:
        text: Any text.

    Returns:
        The scrubbed text and how many of each type were replaced.
    """
    found: Counter[str] = Counter()
    for kind, pattern, accept in _RULES:

        def replace(match: re.Match[str], kind: str = kind, accept=accept) -> str:
            if not accept(match.group(0)):
                return match.group(0)
            found[kind] += 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return text, found


def scrub_texts(texts: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Scrub many texts; the counts of replacements per type, every type listed.

    Args:
        texts: Texts (strings).

    Returns:
        The scrubbed texts, in order, and ``{type: replacements}``.

    Raises:
        ValueError: On a value that is not a string.
    """
    scrubbed, totals = [], Counter({kind: 0 for kind in PLACEHOLDERS})
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {i} is a {type(text).__name__}, not a string")
        clean, found = scrub_text(text)
        scrubbed.append(clean)
        totals.update(found)
    return scrubbed, dict(totals)
