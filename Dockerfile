# One image for every role: api, worker and flower differ only in their command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY api_shim ./api_shim
COPY templates ./templates
# A regular install, as a user's: the image runs the wheel, not this source tree.
RUN pip install . && rm -rf /src && useradd --create-home securesend \
    && mkdir -p /app/var && chown securesend /app/var
WORKDIR /app
USER securesend
EXPOSE 8080
CMD ["securesend", "api", "--host", "0.0.0.0", "--port", "8080"]
