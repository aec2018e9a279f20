# notifier: one image for every role. The command picks the role:
#   notifier serve    HTTP API and WebSocket fan-out (the default CMD)
#   notifier worker   dispatch worker (no HTTP port; disable the HEALTHCHECK for it)
#   notifier migrate  apply the database migrations, then exit
# Settings come from NOTIFIER_* environment variables (see notifier/settings.py).
# Run it with an init as PID 1 (`docker run --init`, `podman run --init`, compose `init: true`)
# so that zombies are reaped; the service itself handles SIGTERM and finishes in-flight work.

# ---- builder: a virtualenv with the dependencies, then the project ----------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a change to the code does not
# reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# Then the project itself. (README.md is left out: setuptools only warns that the long
# description is missing, and a docs change does not rebuild the image.)
COPY notifier ./notifier
COPY workers ./workers
COPY runtime ./runtime
RUN pip install --no-cache-dir --no-deps . \
    && notifier --help > /dev/null

# ---- runtime: the virtualenv only, as a non-root user -------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NOTIFIER_HOST=0.0.0.0 \
    NOTIFIER_PORT=8000

RUN groupadd --system --gid 10001 notifier \
    && useradd --system --uid 10001 --gid notifier --create-home --home-dir /app \
        --shell /usr/sbin/nologin notifier

COPY --from=builder /opt/venv /opt/venv

# /app is the user's home and working directory (`notifier run` keeps its SQLite file there).
WORKDIR /app
USER 10001:10001

EXPOSE 8000

# Liveness of the API process. No curl in the slim image: Python's urllib does the request.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NOTIFIER_PORT', '8000'), timeout=4)"]

# Exec form: the notifier process receives SIGTERM itself (no shell in between).
CMD ["notifier", "serve"]
