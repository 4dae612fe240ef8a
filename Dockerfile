# syntax=docker/dockerfile:1
# One image for every process of the project (gateway, engine, settlement, lag exporter,
# init job): `exchange <command>`. Built by compose/docker-compose.yml.
#
# Two stages: `build` has the compilers some dependencies may need when no wheel fits the
# platform; the final image gets only the virtualenv and the sources, runs as a non-root
# user and has no build tools.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /app
# Dependencies first, so a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p engine settlement gateway exchange ops entrypoints \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install .
COPY avro ./avro
COPY cql ./cql
COPY engine ./engine
COPY settlement ./settlement
COPY gateway ./gateway
COPY exchange ./exchange
COPY ops ./ops
COPY entrypoints ./entrypoints
# Editable on purpose: the codec and the Cassandra store find avro/ and cql/ next to their
# packages (exchange/codec/, settlement/cassandra_store.py), so the packages stay in /app.
RUN /opt/venv/bin/pip install --no-deps -e . \
    && /opt/venv/bin/python -m compileall -q /app

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 exchange \
    && useradd --system --uid 10001 --gid exchange --home-dir /var/lib/exchange \
       --create-home --shell /usr/sbin/nologin exchange
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EXCHANGE_DATA_DIR=/var/lib/exchange
WORKDIR /app
USER exchange:exchange
EXPOSE 8000 9101 9102 9103
CMD ["exchange", "--help"]
