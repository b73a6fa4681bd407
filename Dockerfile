# The Gyoza image used by docker-compose.yml for the server replicas and the worker.
FROM python:3.11-slim

WORKDIR /src
# Only what the wheel needs: the package, the JetStream topology (broker/) and nats.conf, which the wheel carries.
COPY pyproject.toml README.md nats.conf ./
COPY broker ./broker
COPY gyoza ./gyoza
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /data
ENV GYOZA_HOST=0.0.0.0 \
    GYOZA_DATA_DIR=/data
EXPOSE 5555
CMD ["gyoza", "server", "start"]
