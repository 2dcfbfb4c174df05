"""GET /v1/models and /v1/models/{id}: the one served model."""

from __future__ import annotations

from fastapi import FastAPI

from ...protocol.errors import APIError
from ...protocol.models import ModelCard, ModelList
from ...settings import Settings
from ...types import EngineProtocol
from ..errors import ERROR_RESPONSES


def check_model(served: str, model: str) -> None:
    """A request for another model than the served one is a 404 naming `model`."""
    if model != served:
        raise APIError(404, f"The model `{model}` does not exist.", param="model", type_="model_not_found")


def add(app: FastAPI, prefix: str, engine: EngineProtocol, settings: Settings, created: int) -> None:
    """`created`: the model card's timestamp, one per app (when it was built)."""
    served = settings.served_name

    def card() -> ModelCard:
        return ModelCard(id=served, created=created, max_model_len=engine.max_model_len)

    async def list_models() -> ModelList:
        return ModelList(data=[card()])

    async def retrieve_model(model_id: str) -> ModelCard:
        check_model(served, model_id)
        return card()

    app.add_api_route(prefix + "/models", list_models, methods=["GET"], response_model=ModelList,
                      responses=ERROR_RESPONSES)
    app.add_api_route(prefix + "/models/{model_id:path}", retrieve_model, methods=["GET"],
                      response_model=ModelCard, responses=ERROR_RESPONSES)
