"""The ASGI app the server runs: MONAI Label's app behind the MediSee gateway.

``monailabel_app.serve`` starts MONAI Label's own launcher with
``--uvicorn_app monailabel_app.asgi:app``: the same settings, the same app instance, the
same auth; in front of it, the product's endpoints (``lib.endpoints``) and the gateway
(``lib.gateway``: endpoint policy, request size limit, errors without internals)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from monailabel.app import app as monai_label
from monailabel.config import settings as monai_settings

from monailabel_app.lib import endpoints
from monailabel_app.lib.gateway import Gateway
from monailabel_app.lib.policy import EndpointPolicy
from monailabel_app.lib.settings import AppSettings
from monailabel_app.lib.uploads import sweep

APP_DIR = Path(__file__).resolve().parent


def _settings() -> AppSettings:
    conf = monai_settings.MONAI_LABEL_APP_CONF
    return AppSettings.from_conf(json.loads(conf) if isinstance(conf, str) else dict(conf or {}), APP_DIR)


@asynccontextmanager
async def lifespan(_: FastAPI):
    sweep(settings.scratch_dir)
    async with monai_label.router.lifespan_context(monai_label):  # MONAI Label's start-up: the app instance
        yield


settings = _settings()
product = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
product.include_router(endpoints.router)
product.mount("/", monai_label)
app = Gateway(product, EndpointPolicy(settings.enable), settings.max_upload_mb << 20)
