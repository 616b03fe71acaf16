# syntax=docker/dockerfile:1
# Build stage: make the wheel and install it with its dependencies into a virtualenv.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clusterpedia ./clusterpedia
COPY operator ./operator
COPY apiserver ./apiserver
RUN python -m venv /opt/clusterpedia \
 && /opt/clusterpedia/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/clusterpedia/bin/pip install --no-cache-dir .

# Final stage: the virtualenv only, no build tools, a non-root user.
FROM python:3.11-slim
COPY --from=build /opt/clusterpedia /opt/clusterpedia
RUN useradd --system --uid 10001 --home-dir /var/lib/clusterpedia --create-home clusterpedia
USER 10001
WORKDIR /var/lib/clusterpedia
ENV PATH=/opt/clusterpedia/bin:$PATH PYTHONUNBUFFERED=1
# The API server's HTTPS port (clusterpedia run --secure-port; the Deployment's containerPort).
EXPOSE 8443
ENTRYPOINT ["clusterpedia"]
CMD ["run"]
