"""The reference every scenario is compared with: the smallest FastAPI route.

    uvicorn bench.hello:app --loop uvloop --http httptools

Run from the same venv on the fastest stack installed (bench/run.py's
CEILING), it measures what the machine, uvicorn and FastAPI can do on their
own; a scenario's ratio to it is what MessageApp's own work, and its own
choices (h11, for the request-head deadline), cost.
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, bool]:
    return {"ok": True}
