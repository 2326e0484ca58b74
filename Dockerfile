# The image the manifests in k8s/ name (ghcr.io/servewise/servewise:0.1.0):
#   docker build -t ghcr.io/servewise/servewise:0.1.0 .
# The package is installed in editable mode from /app, so the repo-level folders it reads at run
# time (prompts/, data/published/, studies/) sit where servewise looks for them.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SERVEWISE_HOME=/var/lib/servewise

WORKDIR /app
COPY pyproject.toml README.md ./
COPY servewise/ servewise/
COPY prompts/ prompts/
COPY data/published/ data/published/
COPY studies/ studies/
RUN pip install -e '.[studies]' \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin servewise \
    && mkdir -p "$SERVEWISE_HOME" && chown 10001:10001 "$SERVEWISE_HOME"

USER 10001
EXPOSE 8080
ENTRYPOINT ["servewise"]
CMD ["--help"]
