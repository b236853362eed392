"""pages.py builds the busiest list pages as dicts, not models: its TypedDicts
must agree with the public SQLModel schemas, key for key and type for type,
so that a field added to a model and forgotten on the fast path fails here.
(What the routes send is compared too: tests/test_messages.py and
tests/test_conversations.py read one item both ways.)"""

import types
from datetime import UTC
from enum import StrEnum
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import pytest
from pydantic import BaseModel
from sqlalchemy.dialects import sqlite
from sqlmodel.sql.sqltypes import UTCDateTime

from models import (
    AttachmentPublic,
    ConversationPublic,
    MessagePublic,
    ReactionPublic,
    ReplyPublic,
    UserPublic,
)
from pages import (
    AttachmentJSON,
    ConversationJSON,
    MessageJSON,
    ReactionJSON,
    ReplyJSON,
    UserJSON,
    UTCTime,
)

PAIRS = {
    UserJSON: UserPublic,
    AttachmentJSON: AttachmentPublic,
    ReplyJSON: ReplyPublic,
    ReactionJSON: ReactionPublic,
    MessageJSON: MessagePublic,
    ConversationJSON: ConversationPublic,
}


def same_type(fast: Any, public: Any) -> bool:
    """Whether a TypedDict's annotation says what the model's field does: a
    nested model is its TypedDict, an enum of strings is a str, and the
    model's validation rules (Annotated[str, ...]) are a str."""
    if get_origin(public) is Annotated:
        return same_type(fast, get_args(public)[0])
    if fast in PAIRS:
        return PAIRS[fast] is public
    if isinstance(public, type) and issubclass(public, StrEnum):
        return fast is str
    fast_origin, public_origin = get_origin(fast), get_origin(public)
    if fast_origin in (Union, types.UnionType) or public_origin in (Union, types.UnionType):
        fast_args, public_args = get_args(fast), get_args(public)
        return len(fast_args) == len(public_args) and all(
            any(same_type(f, p) for p in public_args) for f in fast_args
        )
    if fast_origin is not None or public_origin is not None:
        return fast_origin is public_origin and all(
            same_type(f, p) for f, p in zip(get_args(fast), get_args(public), strict=True)
        )
    return bool(fast is public)


@pytest.mark.parametrize(("fast", "public"), PAIRS.items(), ids=lambda t: t.__name__)
def test_fast_page_dicts_agree_with_the_public_models(fast: Any, public: type[BaseModel]) -> None:
    fast_fields = get_type_hints(fast)
    public_fields = {name: field.annotation for name, field in public.model_fields.items()}
    assert set(fast_fields) == set(public_fields)
    for name, annotation in public_fields.items():
        assert same_type(fast_fields[name], annotation), name


def test_a_difference_would_be_seen() -> None:
    """The comparison itself can fail: a wrong type or a missing key is caught."""
    assert not same_type(int | None, str | None)
    assert not same_type(list[UserJSON], list[MessagePublic])
    assert same_type(list[UserJSON] | None, list[UserPublic] | None)
    assert set(get_type_hints(UserJSON)) != set(MessagePublic.model_fields)


@pytest.mark.parametrize(
    "stored",
    [
        "2026-12-03 04:19:22.040703",  # as SQLAlchemy writes a datetime
        "2026-12-03 04:19:22",  # as CURRENT_TIMESTAMP does (the bench, old rows)
        "2026-12-03 04:19:22.040",
        "2026-12-03T04:19:22.040703",
        "2026-12-03 06:19:22.040703+02:00",  # an offset: the models' way
        None,
    ],
)
def test_utc_time_reads_sqlite_text_as_the_models_do(stored: str | None) -> None:
    """pages.UTCTime, the fast path's reading of a datetime column, gives the
    very datetime (and tzinfo) the models' type gives, or defers to it."""
    dialect = sqlite.dialect()
    models_way = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    fast_way = UTCTime().result_processor(dialect, None)
    assert models_way is not None and fast_way is not None
    expected, got = models_way(stored), fast_way(stored)
    assert got == expected
    if expected is not None:
        assert got.tzinfo is expected.tzinfo is UTC
        assert got.isoformat() == expected.isoformat()
