"""A seed-style FastAPI app that hands the welcome email to ARQ.

uvicorn fastapi_arq:app
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq import create_pool
from arq_tasks import REDIS
from fastapi import FastAPI, Request
from pydantic import BaseModel, EmailStr


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.redis = await create_pool(REDIS)
    yield
    await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


class Signup(BaseModel):
    email: EmailStr
    name: str


@app.post("/signups", status_code=202)
async def signup(signup: Signup, request: Request) -> dict[str, str]:
    job = await request.app.state.redis.enqueue_job("send_welcome_email", signup.email, signup.name)
    return {"job_id": job.job_id}
