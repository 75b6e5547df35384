"""Pure parts of search and notifications: word normalisation, tokens, what a notice says."""

from __future__ import annotations

from uuid import uuid4

from application.notices import PREVIEW_CHARS, notice_for
from application.search import MAX_BLIND_WORDS, blind_words, query_words, words
from domain.message import Message
from infrastructure.blindindex import token_of
from infrastructure.notifiers import SECURE_BODY, render


def test_words_are_case_folded_without_diacritics_and_punctuation() -> None:
    assert words("Café AU LAIT, naïve—Straße! x_1 ﬁne") == [
        "cafe",
        "au",
        "lait",
        "naive",
        "strasse",
        "x_1",
        "fine",
    ]
    assert words("a" * 65 + " ok") == ["ok"]  # an overlong run is not a word
    assert query_words("Noon noon NOON bay") == ["noon", "bay"]


def test_an_encrypted_message_keeps_a_bounded_set_of_distinct_words() -> None:
    text = " ".join(f"w{i}" for i in range(MAX_BLIND_WORDS + 10)) + " w1 w2"
    kept = blind_words(text)
    assert len(kept) == MAX_BLIND_WORDS and len(set(kept)) == MAX_BLIND_WORDS


def test_tokens_depend_on_the_key_and_hide_the_word() -> None:
    key_a, key_b = b"a" * 32, b"b" * 32
    token = token_of(key_a, "potassium")
    assert token == token_of(key_a, "potassium") and len(token) == 16
    assert token != token_of(key_b, "potassium") and token != token_of(key_a, "potassium2")
    assert "potassium" not in token


def message(content: str, encrypted: bool) -> Message:
    return Message(
        id=uuid4(),
        tenant_id="t1",
        conversation_id=uuid4(),
        sender_id="dr-lee",
        recipient_ids=["nurse"],
        kind="direct",
        encrypted=encrypted,
        notify=True,
        index=True,
        content=None if encrypted else content,
        sealed={"ciphertext": "AA=="} if encrypted else None,
        end_to_end=False,
        content_digest="d",
        client_message_id=None,
        meta={"tenant_id": "t1"},
    )


def test_by_default_a_notice_says_only_that_there_is_a_new_message() -> None:
    plain = notice_for(message("Bed 12 needs a fluid balance chart", encrypted=False))
    assert plain.preview is None
    rendered = render(plain)
    assert (rendered.title, rendered.body) == ("New message", "You have a new message")
    assert "dr-lee" not in str(rendered) and "Bed 12" not in str(rendered)
    assert set(rendered.data) == {"type", "messageId", "conversationId"}


def test_with_previews_on_a_notice_previews_plain_text_never_an_encrypted_message() -> None:
    long = "word " * 100
    plain = notice_for(message(long, encrypted=False), preview_content=True)
    assert plain.preview is not None and len(plain.preview) == PREVIEW_CHARS
    assert render(plain).body == plain.preview and "dr-lee" in render(plain).title

    secure = notice_for(message("the biopsy result", encrypted=True), preview_content=True)
    assert secure.preview is None
    rendered = render(secure)
    assert (rendered.title, rendered.body) == ("New secure message", SECURE_BODY)
    assert "dr-lee" not in str(rendered)
    assert set(rendered.data) == {"type", "messageId", "conversationId"}
