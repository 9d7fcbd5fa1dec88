# syntax=docker/dockerfile:1
# creditbridge runtime image: the Python package (bridge/, relayers/) with its runtime
# dependencies and the compiled contract artifacts it reads, nothing else: no node_modules,
# no anvil/chopsticks, no tests, no benchmarks. One image for every role:
#   docker run ... creditbridge:latest signer --config /etc/creditbridge/signer.toml
#   docker run ... creditbridge:latest db upgrade --config /etc/creditbridge/api.toml   (PostgreSQL:
#   before the components start, once per release; they refuse an unmigrated database)
# Build: docker build -t creditbridge:latest .
# (Not built in the project's CI: the development machines have no Docker engine.)

ARG PYTHON_VERSION=3.11

# --- 1. Solidity artifacts (contracts/ethereum/build/*.json) with solcjs, pinned like package.json
FROM node:20-bookworm-slim AS contracts
WORKDIR /src
RUN npm install --no-save --no-audit --no-fund solc@0.8.37 @tonconnect/ui@2.4.4
COPY contracts/ethereum/ contracts/ethereum/
RUN node contracts/ethereum/build.js && ls contracts/ethereum/build/CreditLedger.json
# the checkout page's TON Connect bundle, served by the API itself (no CDN; pinned as in package.json)
RUN mkdir -p vendor && cp node_modules/@tonconnect/ui/dist/tonconnect-ui.min.js vendor/ \
    && cp node_modules/@tonconnect/ui/LICENSE vendor/tonconnect-ui.LICENSE

# --- 2. Python dependencies in a virtualenv, at the versions the tests ran with (constraints.txt)
FROM python:${PYTHON_VERSION}-slim-bookworm AS deps
RUN apt-get update && apt-get install -y --no-install-recommends build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY bridge/ bridge/
COPY relayers/ relayers/
# the dependencies only: the code runs from /app (relayers find contracts/ next to themselves)
RUN pip install -c constraints.txt . && pip uninstall -y creditbridge

# --- 3. runtime
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 creditbridge \
    && useradd --system --uid 10001 --gid creditbridge --home-dir /var/lib/creditbridge creditbridge \
    && mkdir -p /etc/creditbridge /var/lib/creditbridge && chown creditbridge:creditbridge /var/lib/creditbridge
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY bridge/ bridge/
COPY relayers/ relayers/
COPY contracts/ton/build/ contracts/ton/build/
COPY --from=contracts /src/contracts/ethereum/build/ contracts/ethereum/build/
COPY --from=contracts /src/vendor/ bridge/api/static/vendor/
COPY config/ /usr/share/creditbridge/config/
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER creditbridge
VOLUME ["/var/lib/creditbridge"]
EXPOSE 8080 9101
ENTRYPOINT ["python", "-m", "bridge.cli"]
CMD ["--help"]
