# pgqueue's image: the wheel built from this checkout, installed into a virtualenv in a build
# stage, then copied into a slim runtime that runs as an unprivileged user.
#   docker build -t pgqueue .
#   docker run --rm -e PGQUEUE_DSN=postgresql://... pgqueue migrate
#   docker run -p 8000:8000 -e PGQUEUE_DSN=postgresql://... pgqueue serve
#   docker run -e PGQUEUE_DSN=postgresql://... pgqueue worker myproject.tasks:app
# tests/packaging/test_compose.py runs this file's ENTRYPOINT, ENV and HEALTHCHECK against a
# real database, as compose.yaml uses them.

FROM python:3.12-slim AS build
WORKDIR /src
# Only what the wheel is built from (no tests, docs or local venvs in the build context).
COPY pyproject.toml setup.py MANIFEST.in README.md LICENSE ./
COPY sql ./sql
COPY pgqueue ./pgqueue
# EXTRAS: optional extras of the wheel, e.g. `docker build --build-arg EXTRAS=otel .`
ARG EXTRAS=""
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
 && python -m venv /opt/pgqueue \
 && /opt/pgqueue/bin/pip install --no-cache-dir "$(ls /dist/pgqueue-*.whl)${EXTRAS:+[$EXTRAS]}"

FROM python:3.12-slim
# The same base image as the build stage: the venv's interpreter path is the same here.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/pgqueue pgqueue
COPY --from=build /opt/pgqueue /opt/pgqueue
ENV PATH=/opt/pgqueue/bin:$PATH PYTHONUNBUFFERED=1 PGQUEUE_HOST=0.0.0.0 PGQUEUE_PORT=8000
USER pgqueue
WORKDIR /home/pgqueue
EXPOSE 8000
# /readyz: database reachable, schema current, listener connected. Worker containers run
# `pgqueue health --worker` instead (compose.yaml): a worker has no HTTP port.
HEALTHCHECK --interval=10s --timeout=6s --start-period=15s --retries=3 CMD ["pgqueue", "health"]
ENTRYPOINT ["pgqueue"]
CMD ["serve"]
