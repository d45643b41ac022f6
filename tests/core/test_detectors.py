"""Every built-in detector: true positives in several formats, and traps that must not match."""

from __future__ import annotations

import pytest

from hoop_mcp.core.detectors import Scanner, iban_ok, luhn_ok
from hoop_mcp.core.masking import Masker
from hoop_mcp.core.masking_config import BUILTIN_DETECTORS, MaskingPolicy

SCANNER = Scanner(BUILTIN_DETECTORS)


def found(text: str) -> list[tuple[str, str]]:
    """(detector, masked substring) for every hit."""
    return [(h.name, text[h.start : h.end]) for h in SCANNER.find(text) or []]


def names(text: str) -> list[str]:
    return [name for name, _ in found(text)]


POSITIVES: list[tuple[str, str, str]] = [
    # (detector, text, the exact substring that must be masked)
    ("email", "ada.quill@example.com", "ada.quill@example.com"),
    ("email", "mail me: x_y+tag@mail.ex-ample.co.uk, thanks", "x_y+tag@mail.ex-ample.co.uk"),
    ("email", "<BOB@EXAMPLE.ORG>", "BOB@EXAMPLE.ORG"),
    ("phone", "+1 415-555-0101", "+1 415-555-0101"),
    ("phone", "call (212) 555-0199 today", "(212) 555-0199"),
    ("phone", "415.555.0142", "415.555.0142"),
    ("phone", "+1 (650) 555-0177", "+1 (650) 555-0177"),
    ("phone", "Called from 212-555-0199 about", "212-555-0199"),
    ("phone", "tel 1-800-555-0199", "1-800-555-0199"),
    ("phone", "+44 20 7946 0958", "+44 20 7946 0958"),
    ("phone", "+44 (0)20 7946 0958", "+44 (0)20 7946 0958"),
    ("phone", "e164 +14155550101.", "+14155550101"),
    ("phone", "212 555 0199", "212 555 0199"),
    ("us_ssn", "900-12-3456", "900-12-3456"),
    ("us_ssn", "SSN 123 45 6789 on file", "123 45 6789"),
    ("us_ssn", "ssn:078-05-1120", "078-05-1120"),
    ("payment_card", "4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("payment_card", "5555555555554444", "5555555555554444"),
    ("payment_card", "amex 378282246310005.", "378282246310005"),
    ("payment_card", "6011-1111-1111-1117", "6011-1111-1111-1117"),
    ("payment_card", "ref 12 4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("payment_card", "4111 1111 1111 1111 99", "4111 1111 1111 1111"),
    ("payment_card", "mc2 2223003122003222", "2223003122003222"),
    ("iban", "GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "pay to DE89370400440532013000 now", "DE89370400440532013000"),
    ("iban", "FR1420041010050500013M02606", "FR1420041010050500013M02606"),
    ("iban", "GB82 WEST 1234 5698 7654 32 PLEASE", "GB82 WEST 1234 5698 7654 32"),
    (
        "jwt",
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
    ("aws_access_key", "AKIAFAKEFAKEFAKE1234", "AKIAFAKEFAKEFAKE1234"),
    ("aws_access_key", "key=ASIAY34FZKBOKMUTVV7A,", "ASIAY34FZKBOKMUTVV7A"),
    # AWS's documentation example is masked on purpose (masking a placeholder costs nothing).
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    (
        "aws_secret_key",
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "aws_secret_key",
        '{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    (
        "github_token",
        "rotate ghp_FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE.",
        "ghp_FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE",
    ),
    ("github_token", "gho_" + "a1" * 18, "gho_" + "a1" * 18),
    (
        "github_token",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    ),
    ("gitlab_token", "glpat-xxxxxxxxxxxxxxxxxxxx", "glpat-xxxxxxxxxxxxxxxxxxxx"),
    (
        "slack_token",
        "xoxb-000000000000-000000000000-FAKEFAKEFAKEFAKEFAKEFAKE",
        "xoxb-000000000000-000000000000-FAKEFAKEFAKEFAKEFAKEFAKE",
    ),
    ("stripe_key", "sk_live_FAKE0000000000000000demo1", "sk_live_FAKE0000000000000000demo1"),
    ("stripe_key", "rk_live_51Habcdefghij", "rk_live_51Habcdefghij"),
    ("stripe_key", "pk_live_51Habcdefghij", "pk_live_51Habcdefghij"),
    (
        "private_key",
        "before -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY----- after",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----",
    ),
    (
        "private_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    ),
    # A truncated key (no END line) is masked to the end of the text.
    ("private_key", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN"),
    ("password_assignment", "Refund pending. password=hunter2-FAKE", "hunter2-FAKE"),
    ("password_assignment", "passwd: s3cr3t!", "s3cr3t!"),
    ("password_assignment", "pwd=abc123&user=x", "abc123"),
    ("password_assignment", "DB_PASSWORD = 'correct horse'", "correct horse"),
    ("password_assignment", '{"client_secret": "abc def"}', "abc def"),
    ("password_assignment", "https://x.test/cb?access_token=abc.def&x=1", "abc.def"),
    ("password_assignment", "X-Api-Key: 1234abcd", "1234abcd"),
    ("password_assignment", "token => 'tok'", "tok"),
]


@pytest.mark.parametrize(("detector", "text", "secret"), POSITIVES)
def test_detector_finds_the_secret_and_only_the_secret(detector: str, text: str, secret: str) -> None:
    assert (detector, secret) in found(text)


TRAPS: list[str] = [
    "2024-01-15",
    "2024-01-15T10:30:00Z",
    "at 2024-03-14 10:22:01.123456+00:00 ok",
    "10:22:01",
    "order 100234",
    "ORD-2024-000123",
    "order #4155550142",
    "4155550142",
    "price $1,234.56 or 1234.56 EUR",
    "123e4567-e89b-12d3-a456-426614174000",
    "12345678-1234-1234-1234-123456789012",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "1234567812345678",  # 16 digits, not Luhn-valid
    "4111 1111 1111 1112",  # card-shaped, not Luhn-valid
    "20240115103000123",  # a compact timestamp that happens to be long
    "000-12-3456",
    "666-12-3456",
    "900-00-3456",
    "900-12-0000",
    "123-456-7890",  # not a valid NANP number (area and exchange start with 0/1)
    "v1.415.555.0142",
    "+00:00",
    "tz +0530",
    "1+1=2",
    "GB82 WEST 1234 5698 7654 33",  # IBAN-shaped, bad check digits
    "ghp_short",
    "AKIA1234",
    "eyJub3QiOiJhIGp3dCJ9.eyJ4IjoxfQ.sig",  # header has no "alg"
    "tokens: 5",
    "password reset requested",
    "the user's email is unknown",
    "x@y",
    "user@localhost",
    "I/O error: EOF",
    "BEGIN PRIVATE KEY without dashes",
    "Ada Quill",
    "",
]


@pytest.mark.parametrize("text", TRAPS)
def test_detectors_leave_ordinary_values_alone(text: str) -> None:
    assert found(text) == []


def test_mask_tokens_never_match_any_detector() -> None:
    tokens = [
        "[REDACTED]",
        "[REDACTED:EMAIL]",
        "[REDACTED:SECRET]",
        "[REDACTED:PAYMENT_CARD]",
        "hash:abcdefghijklmnop",
        "password=[REDACTED:SECRET]",
        "token: hash:ponmlkjihgfedcba",
        "***-**-3456",
        "**** **** **** 1111",
        "password=*******FAKE",
    ]
    for token in tokens:
        hits = [(n, s) for n, s in found(token) if n != "password_assignment" or s != "*******FAKE"]
        assert hits == [], token


def test_luhn_and_mod97_checks_accept_published_examples_and_reject_typos() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    assert iban_ok("GB82WEST12345698765432")
    assert not iban_ok("GB82WEST12345698765431")
    assert not iban_ok("GB82WEST1234569876543")  # wrong length for GB


def test_several_secrets_in_one_text_are_all_found_in_order() -> None:
    text = "VIP. ada@example.com; card 4111 1111 1111 1111; ssn 900-12-3456; key AKIAFAKEFAKEFAKE1234"
    assert names(text) == ["email", "payment_card", "us_ssn", "aws_access_key"]


def test_a_scanner_only_runs_its_enabled_detectors() -> None:
    only_email = Scanner(("email",))
    hits = only_email.find("ada@example.com 900-12-3456 4111111111111111") or []
    assert [h.name for h in hits] == ["email"]
    assert Scanner(()).find("ada@example.com") is None


def test_an_assignment_of_an_aws_secret_is_named_aws_secret_key_only_when_that_detector_is_enabled() -> None:
    text = "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    hits = Scanner(("password_assignment",)).find(text) or []
    assert [h.name for h in hits] == ["password_assignment"]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("GHP_" + "FAKE" * 9, "github_token"),
        ("SK_LIVE_" + "FAKE0000000000000000DEMO1", "stripe_key"),
        ("XOXB-000000000000-000000000000-" + "FAKE" * 6, "slack_token"),
        ("GLPAT-" + "abcdefghijklmnopqrstu", "gitlab_token"),
    ],
)
def test_provider_token_prefixes_are_found_in_any_case(text: str, name: str) -> None:
    # upper()/lower() over a free-text column must not turn a token into plain text.
    m = Masker(MaskingPolicy(), hash_key=b"k")
    masked, counts = m.mask_text(f"key: {text} end")
    assert text not in masked
    assert counts[name] == 1
