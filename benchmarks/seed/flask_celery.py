"""A seed-style Flask app that hands the welcome email to Celery.

gunicorn flask_celery:app
"""

from typing import Any

from celery_tasks import send_welcome_email
from flask import Flask, request
from pydantic import BaseModel, EmailStr

app = Flask(__name__)


class Signup(BaseModel):
    email: EmailStr
    name: str


@app.post("/signups")
def signup() -> tuple[dict[str, Any], int]:
    data = Signup.model_validate(request.get_json())
    result = send_welcome_email.delay(data.email, data.name)
    return {"job_id": result.id}, 202
