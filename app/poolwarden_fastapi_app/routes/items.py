"""/items: create, read and list items (a small real resource on the pooled session)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from poolwarden.fastapi import ReadOnlySessionDep, SessionDep
from poolwarden_fastapi_app import crud, errors, models

router = APIRouter(prefix="/items", tags=["items"], responses=errors.UNAVAILABLE_RESPONSES)
ItemId = Annotated[int, Path(ge=models.BIGINT_MIN, le=models.BIGINT_MAX)]  # the id column


@router.post("", status_code=status.HTTP_201_CREATED, response_model=models.ItemPublic,
             responses=errors.BAD_BODY_RESPONSES)
async def create_item(item_create: models.ItemCreate, session: SessionDep) -> models.Item:
    return await crud.create_item(session=session, item_create=item_create)


@router.get("/{item_id}", response_model=models.ItemPublic,
            responses=errors.NOT_FOUND_RESPONSES)
async def read_item(item_id: ItemId, session: ReadOnlySessionDep) -> models.Item:
    item = await crud.get_item(session=session, item_id=item_id)
    if item is None:
        raise HTTPException(status_code=404, detail=f"item {item_id} not found")
    return item


@router.get("", response_model=list[models.ItemPublic])
async def list_items(
    session: ReadOnlySessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=models.BIGINT_MAX)] = 0,  # OFFSET is a bigint
) -> list[models.Item]:
    return await crud.list_items(session=session, limit=limit, offset=offset)
