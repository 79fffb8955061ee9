# The push schedule service as a container: README.md, "Operations", says how to build and run it.
#
# Stage 1 installs the package and its dependencies (all wheels, no compiler) into a venv; stage 2 is the
# slim runtime with that venv, the migrations, tini as PID 1 and an unprivileged user. Without DATABASE_URL
# the embedded PostgreSQL keeps its files in the /data volume (single node); with it, the container is
# stateless and any number of replicas may share that server. WORKERS=auto: one serving process per core the
# container is given (its cpuset, or its --cpus quota), under one parent (README.md, "Workers").

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
# tini forwards SIGTERM to the service, which passes it to its workers, and reaps orphans (the embedded
# PostgreSQL's children included).
# The version is whatever the base image's Debian release ships, so it moves with security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
# A fixed, unprivileged uid: the embedded PostgreSQL refuses to run as root.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /data --no-create-home --shell /usr/sbin/nologin app \
    && mkdir /data \
    && chown app:app /data
COPY --from=builder /opt/venv /opt/venv
COPY sql /app/sql
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    WORKERS=auto \
    DATA_DIR=/data \
    SQL_DIR=/app/sql
# Numeric, so an orchestrator can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# /healthz only says the process answers; orchestrators that route traffic should probe /readyz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "service", "healthcheck"]
ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "service"]
