"""A seed-style FastAPI app that hands the welcome email to Celery.

uvicorn fastapi_celery:app
"""

from celery_tasks import send_welcome_email
from fastapi import FastAPI
from pydantic import BaseModel, EmailStr

app = FastAPI()


class Signup(BaseModel):
    email: EmailStr
    name: str


@app.post("/signups", status_code=202)
def signup(signup: Signup) -> dict[str, str]:
    result = send_welcome_email.delay(signup.email, signup.name)
    return {"job_id": result.id}
