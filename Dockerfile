# semphase serve in a container: the base install plus the serve extra, no torch, run as a non-root user.
# Build (from a checkout):  docker build -t semphase-serve .
# Run (model and token mounted read-only, see docs/serve.md):
#   docker run -p 8000:8000 -v /srv/models:/models:ro \
#     -v /srv/secrets/semphase_token:/run/secrets/semphase_token:ro semphase-serve
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/semphase
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt ".[serve]" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin semphase

USER 10001
EXPOSE 8000
# the model is mounted at /models (read-only); MODEL picks the file
ENV MODEL=/models/model.int8.onnx \
    WORKERS=1 \
    QUEUE=4
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
# 0.0.0.0 inside the container: reachable through the published port, so the token (a mounted secret,
# never an environment variable) is required
CMD ["sh", "-c", "exec semphase serve \"$MODEL\" --host 0.0.0.0 --port 8000 --workers \"$WORKERS\" --queue \"$QUEUE\" --token-file /run/secrets/semphase_token"]
