# syntax=docker/dockerfile:1
#
# One image for every cronhive process; the command picks the process:
#
#   docker run IMAGE api          # REST API under gunicorn on API_HOST:API_PORT
#   docker run IMAGE scheduler    # a scheduler (run 2+; one is leader)
#   docker run IMAGE worker --processes 2 --threads 4
#
# There is no MongoDB in this image: point MONGODB_URI at a MongoDB 7 replica set
# and RABBITMQ_URL at RabbitMQ (deploy/README.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini as PID 1: forwards SIGTERM to the process (graceful shutdown) and reaps zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependencies first (their own layer, rebuilt only when the pins change): the
# runtime dependencies listed in pyproject.toml, at the versions constraints.txt pins.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The package itself (no extras: the embedded SecantusDB is for `make up` only).
COPY . .
RUN pip install -c constraints.txt . \
    && cd / && rm -rf /src

# Unprivileged user with a numeric id (Kubernetes' runAsNonRoot can verify it).
RUN groupadd --system --gid 10001 cronhive \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin cronhive \
    && mkdir -p /app \
    && chown cronhive:cronhive /app
WORKDIR /app
USER 10001:10001

# Containers must listen on every interface; everything else comes from the environment.
ENV API_HOST=0.0.0.0 \
    API_PORT=8080 \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100
EXPOSE 8080 9100

ENTRYPOINT ["/usr/bin/tini", "--", "cronhive"]
CMD ["api"]
