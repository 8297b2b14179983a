# modelrollout-controller image: `docker build -t modelrollout:0.1.0 .` (docs/install.md).
# Two stages on the same slim Python 3.11 base: the build stage installs the package into a
# virtualenv, the run stage copies only that virtualenv and runs as the non-root uid 65532.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/modelrollout
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN /opt/modelrollout/bin/pip install . \
 && /opt/modelrollout/bin/python -m compileall -q /opt/modelrollout

FROM python:3.11-slim
LABEL org.opencontainers.image.title="modelrollout" \
      org.opencontainers.image.description="Progressive delivery of ML models on Kubernetes" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/modelrollout /opt/modelrollout
# Bytecode was compiled at build time: the root filesystem is read-only at run time.
ENV PATH=/opt/modelrollout/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric uid:gid, so the kubelet can verify runAsNonRoot without a passwd entry.
USER 65532:65532
EXPOSE 8080
# Exec form: no shell is involved in starting the controller.
ENTRYPOINT ["modelrollout-controller"]
