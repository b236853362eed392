"""The reference every scenario is compared with: the smallest FastAPI route.

    uvicorn bench.hello:app

Run from the same venv with the same uvicorn flags as MessageApp, it measures
what the machine, uvicorn and FastAPI cost on their own; a scenario's ratio to
it is what MessageApp's own work costs.
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, bool]:
    return {"ok": True}
