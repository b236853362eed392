# MessageApp: docker build -t messageapp . && docker run -p 8000:8000 -v messageapp-data:/data messageapp
# No configuration needed: SQLite and the generated token key live in the /data volume.
# Several replicas: DATABASE_URL (PostgreSQL) and REDIS_URL (docs/deploy.md, "Scaling").
# Every setting comes from the environment (docs/deploy.md, "Configuration" and "Docker").

# ---- builder: the pinned dependencies in a venv; only the venv leaves this stage
FROM python:3.11-slim AS builder

# binutils only to strip debug symbols from the wheels' compiled modules
# (uvloop's alone carries 11 MB). This stage is thrown away, so binutils never
# reaches the image; not pinned (DL3008) because a pin names one Debian
# build and breaks whenever the base image moves to a newer one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*

# Only requirements.txt: a code change does not reinstall the packages.
COPY requirements.txt /tmp/requirements.txt
# pip and setuptools leave the venv once they have done their job.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -name '*.so' -exec strip --strip-unneeded {} +

# ---- the image
FROM python:3.11-slim

# WEB_CONCURRENCY: uvicorn's worker count. More than 1 needs REDIS_URL, or live
# events reach only the sockets of the worker that sent them. uvicorn also reads
# FORWARDED_ALLOW_IPS (default 127.0.0.1,::1): the proxies it trusts for X-Forwarded-*.
ENV PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    DATA_DIR=/data \
    WEB_CONCURRENCY=1

# A fixed numeric user, so orchestrators can check it is not root. /data is
# created and owned by it before VOLUME, so a fresh named volume is writable.
RUN groupadd --gid 10001 messageapp \
    && useradd --no-log-init --uid 10001 --gid messageapp --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin messageapp \
    && mkdir /data \
    && chown messageapp:messageapp /data

COPY --from=builder /opt/venv /opt/venv

# The code stays owned by root: the service may write only to /data.
# Patterns, so modules and static files added later are picked up too;
# .dockerignore keeps tests, data and tools out of the build context.
WORKDIR /app
COPY static/ static/
COPY alembic.ini ./
COPY alembic/ alembic/
COPY *.py ./

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Exec form: uvicorn is PID 1 and gets SIGTERM itself. In-flight requests get
# 5 s to finish, so the app shuts down cleanly before `docker stop` (10 s) kills it.
# serve.py starts uvicorn with the flags every start shares (deadlines and size
# caps for requests, no WebSocket compression), as `make run` does.
CMD ["python", "-m", "serve", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--timeout-graceful-shutdown", "5"]
