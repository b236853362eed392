"""Routes for operators' tools: the health check that load balancers and
Docker's HEALTHCHECK call."""

from fastapi import APIRouter
from sqlmodel import select

from db import ReadSessionDep
from models import error_responses

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Health check",
    responses=error_responses({503: "The database does not answer"}),
)
def healthz(session: ReadSessionDep) -> dict[str, str]:
    """200 when the service and its database answer, 503 otherwise."""
    session.exec(select(1)).one()
    return {"status": "ok"}
