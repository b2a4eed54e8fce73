# syntax=docker/dockerfile:1
# One image for every process of a deployment: `worker`, `beat`, `flower`, `metrics`, or any
# `flowcraft-celery` command (docs/containers.md). Your node modules and blueprints go in an image
# built FROM this one (examples/azure-container-apps/Dockerfile).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md celeryconfig.py ./
COPY flowcraft_celery ./flowcraft_celery
COPY transports ./transports
# The package and every dependency as wheels; `identity` for managed identities, `flower` for the dashboard.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[identity,flower]"

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "flowcraft-celery[identity,flower]" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /app --create-home --shell /usr/sbin/nologin flowcraft
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/flowcraft-entrypoint
WORKDIR /app
USER 10001:10001
EXPOSE 5555 9808
ENTRYPOINT ["flowcraft-entrypoint"]
CMD ["worker"]
