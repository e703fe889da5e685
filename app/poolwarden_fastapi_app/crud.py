"""Item queries; every function takes the session explicitly, keyword-only."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from poolwarden_fastapi_app import models


async def create_item(*, session: AsyncSession, item_create: models.ItemCreate) -> models.Item:
    item = models.Item(name=item_create.name, note=item_create.note)
    session.add(item)
    await session.flush()
    await session.refresh(item)
    return item


async def get_item(*, session: AsyncSession, item_id: int) -> models.Item | None:
    return await session.get(models.Item, item_id)


async def list_items(*, session: AsyncSession, limit: int, offset: int) -> list[models.Item]:
    query = select(models.Item).order_by(models.Item.id).limit(limit).offset(offset)
    return list((await session.scalars(query)).all())
