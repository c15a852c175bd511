# opsmcp over streamable HTTP: a slim Python image, a non-root user, the opensearch extra
# (compose.yaml sets OPSMCP_LOG_BACKEND=opensearch), no sandbox extra (the container talks to
# real backends; compose.yaml wires LocalStack, OpenSearch, Prometheus and Alertmanager). The playbook catalog ships inside the package. Build: docker build -t opsmcp:local .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ".[opensearch]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin opsmcp \
 && mkdir -p /data \
 && chown opsmcp:opsmcp /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OPSMCP_DATA_DIR=/data
WORKDIR /app
USER opsmcp
EXPOSE 3001
HEALTHCHECK --interval=10s --timeout=5s --retries=6 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3001/readyz', timeout=3)"]
ENTRYPOINT ["opsmcp"]
CMD ["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "3001"]
