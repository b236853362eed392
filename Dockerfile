# MessageApp: docker build -t messageapp . && docker run -p 8000:8000 -v messageapp-data:/data messageapp
# No configuration needed: SQLite and the generated token key live in the /data volume.
# Several replicas: DATABASE_URL (PostgreSQL) and REDIS_URL (docs/deploy.md, "Scaling").
# Every setting comes from the environment (docs/deploy.md, "Configuration" and "Docker").

# ---- builder: the pinned dependencies in a venv; only the venv leaves this stage
FROM python:3.11-slim AS builder

# Build tools, to strip the compiled modules and to build two packages from
# source against Debian's libraries instead of the copies their wheels bundle:
# Pillow (the wheel carries 15 MB of codecs and fonts; attachments use JPEG,
# WebP and zlib) and psycopg's C part (psycopg-binary carries 10 MB, its own
# OpenSSL among it; Debian's libpq5 adds 1 MB next to the base's OpenSSL).
# Python.h comes with the official image; python3-dev only where it does not.
# This stage is thrown away: none of it reaches the image. Not pinned
# (DL3008) because a pin names one Debian build and breaks whenever the base
# image moves to a newer one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils gcc libc6-dev \
       libpq-dev libjpeg62-turbo-dev libwebp-dev zlib1g-dev \
    && if [ ! -e "$(python -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" ]; then \
         apt-get install -y --no-install-recommends python3-dev; fi \
    && rm -rf /var/lib/apt/lists/*

# Only requirements.txt: a code change does not reinstall the packages.
COPY requirements.txt /tmp/requirements.txt
# The pins of requirements.txt, with psycopg-c (built here, same version)
# in place of psycopg-binary, and Pillow built from source.
# --no-compile: see the next step for the .pyc files.
# pip and setuptools leave the venv once they have done their job.
RUN python -m venv /opt/venv \
    && psycopg=$(sed -n 's/^psycopg-binary==\([^ ]*\).*/\1/p' /tmp/requirements.txt) \
    && grep -v '^psycopg-binary==' /tmp/requirements.txt > /tmp/image-requirements.txt \
    && echo "psycopg-c==$psycopg" >> /tmp/image-requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-compile --no-binary pillow,psycopg-c \
       -r /tmp/image-requirements.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -name '*.so' -exec strip --strip-unneeded {} + \
    && find /opt/venv \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' \
       -o -name '*.c' -o -name '*.h' \) -delete \
    && /opt/venv/bin/python -c "import psycopg, PIL.features as f; assert psycopg.pq.__impl__ == 'c' \
and all(map(f.check, ('jpg', 'webp', 'zlib'))), 'psycopg C or Pillow codecs missing'"

# Not needed at run time: the test harnesses SQLAlchemy, Alembic and Mako ship
# for their own test suites (1 MB), and the tests of pywebpush, py-vapid,
# certifi and ecdsa (0.4 MB).
# Nor the optional C accelerators of what Web Push pulls in (1.8 MB):
# aiohttp's (HTTP parser and writer, WebSocket reader and mask) and those of
# multidict, yarl, frozenlist and propcache under it: push.py POSTs pushes
# with aiohttp, a few small answers a message, where the pure-Python parser
# costs nothing to notice; and charset-normalizer's mypyc-compiled detector,
# which requests (imported by pywebpush, unused by us) loads. Each package falls back to its
# pure-Python code when the compiled module is missing (`except ImportError`),
# as it does on PyPy; the check below makes sure it does here (-B: it writes
# no .pyc, the next step does).
RUN sp=/opt/venv/lib/python3.11/site-packages \
    && rm -r "$sp"/sqlalchemy/testing "$sp"/alembic/testing "$sp"/mako/testing \
       "$sp"/pywebpush/tests "$sp"/py_vapid/tests "$sp"/certifi/tests "$sp"/ecdsa/test_*.py \
    && rm "$sp"/aiohttp/*.so "$sp"/aiohttp/_websocket/*.so "$sp"/multidict/*.so "$sp"/yarl/*.so \
       "$sp"/frozenlist/*.so "$sp"/propcache/*.so "$sp"/charset_normalizer/*.so \
    && /opt/venv/bin/python -B -c "import pywebpush, requests, multidict._compat as m, \
aiohttp.http_parser as p, charset_normalizer.md as md; \
assert not m.USE_EXTENSIONS and p.HttpResponseParser is p.HttpResponseParserPy \
and md.__file__.endswith('.py'), 'a compiled module is still loaded'"

# .pyc files for what a start imports, not for everything: without any, each
# start compiles ~800 modules in memory (the code is root's, nothing is written
# back), 1.8 s more from start to healthy; pip's default compiles all of them,
# 27 MB, much of it for modules the service never loads. Importing the top
# level of every installed package writes the .pyc of what it loads (16 MB);
# anything else is compiled in memory when first imported. PYTHONNODEBUGRANGES:
# without the column tables, which only place the ^^^ under a traceback's
# line, the .pyc take 1.3 MB less.
# pipefail: a failure to list the packages fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN /opt/venv/bin/python -c "import importlib.metadata as m; print(*sorted({f.parts[0].removesuffix('.py') \
for d in m.distributions() for f in d.files or () if f.suffix == '.py' \
and f.parts[0].removesuffix('.py').isidentifier()}), sep='\n')" \
    | while read -r module; do \
        PYTHONNODEBUGRANGES=1 /opt/venv/bin/python -c "import $module" || echo "not imported on its own: $module"; \
      done

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

# The libraries the packages built above link to (Pillow: JPEG and WebP;
# psycopg: libpq), from Debian: 2.5 MB (a 3.4 MB layer: apt also rewrites
# debconf's database) where the wheels' copies took 24 MB.
# Not pinned (DL3008), as above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       libpq5 libjpeg62-turbo libwebp7 libwebpmux3 libwebpdemux2 \
    && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log

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
