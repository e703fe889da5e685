"""The items table and its API shapes (Create / Public).

The API shapes accept only what the columns can store, so PostgreSQL never sees a value it
must refuse (that would be a 500): integers within bigint, text without NUL (PostgreSQL's
text types cannot hold U+0000) and without lone surrogates (not encodable as UTF-8).
"""

from __future__ import annotations

import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import BigInteger, DateTime, Identity, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1  # PostgreSQL bigint (ids, OFFSET)
NAME_MAX_LENGTH = 200
NUL = "\x00"
NO_NUL = r"^[^\x00]*$"  # documented in the OpenAPI schema; enforced by storable_text


def storable_text(value: str) -> str:
    """Text PostgreSQL can store: no NUL, and valid Unicode (encodable as UTF-8)."""
    if NUL in value:
        raise ValueError(f"contains a NUL character (U+0000) at {value.index(NUL)}, which "
                         "PostgreSQL text cannot store: remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"contains a lone surrogate at {error.start}, which is not Unicode "
                         "text: send valid UTF-8") from None
    return value


StorableText = Annotated[str, AfterValidator(storable_text),
                         Field(json_schema_extra={"pattern": NO_NUL})]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ItemCreate(BaseModel):
    name: StorableText = Field(min_length=1, max_length=NAME_MAX_LENGTH)
    note: StorableText = Field("", max_length=10_000)


class ItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    note: str
    created_at: datetime.datetime
