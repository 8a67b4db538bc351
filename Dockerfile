# syntax=docker/dockerfile:1
# bioner-router container image: `bioner-router run` (the long-running consumer) under tini.
#   docker build -t bioner-router:0.1.0 .
#   docker run --rm -p 9464:9464 -v $PWD/deploy/router.example.yaml:/etc/bioner-router/config.yaml:ro bioner-router:0.1.0
# Not built in the environment this project was written in (no Docker engine there);
# test/unit/container.test.ts checks this file against the repository instead.

# ---- build stage: compile TypeScript, then drop dev dependencies ----
FROM node:24-bookworm-slim AS build
WORKDIR /src
# .npmrc keeps onnxruntime-node-install=skip: the package ships its CPU binary and
# its install script would otherwise fetch CUDA files from the network.
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY scripts/postbuild.mjs ./scripts/postbuild.mjs
RUN npm run build && npm prune --omit=dev --no-audit --no-fund
# onnxruntime-node ships CPU binaries for every OS and CPU (~245 MB of its 288 MB): keep the image's own.
ARG TARGETARCH=amd64
RUN ort=node_modules/onnxruntime-node/bin/napi-v6 \
 && keep="$([ "$TARGETARCH" = arm64 ] && echo arm64 || echo x64)" \
 && rm -rf "$ort/darwin" "$ort/win32" \
 && find "$ort/linux" -mindepth 1 -maxdepth 1 ! -name "$keep" -exec rm -rf {} + \
 && test -f "$ort/linux/$keep/onnxruntime_binding.node"

# ---- runtime stage ----
FROM node:24-bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY schemas ./schemas
# Only what `run` loads: the encoder and LLM bundles, the calibration table and the length estimators
# (models/frontier holds evaluation plots, not needed at run time).
COPY models/bc5cdr-encoder ./models/bc5cdr-encoder
COPY models/bc5cdr-generative ./models/bc5cdr-generative
COPY models/jnlpba-encoder ./models/jnlpba-encoder
COPY models/jnlpba-generative ./models/jnlpba-generative
COPY models/ncbi-disease-encoder ./models/ncbi-disease-encoder
COPY models/ncbi-disease-generative ./models/ncbi-disease-generative
# The token-classification decoder: the tokenizer and labels of the vllm-pooling adapter.
COPY models/bc5cdr-decoder-classifier ./models/bc5cdr-decoder-classifier
COPY models/calibration.json ./models/calibration.json
COPY models/length-estimator ./models/length-estimator
# Files are owned by root and read-only to the app user; the root filesystem can be mounted read-only.
# The only writable path the process expects is /tmp (mount an emptyDir there when readOnlyRootFilesystem: true).
# The config file is expected at /etc/bioner-router/config.yaml (a ConfigMap), secrets as files beside it.
USER 10001:10001
# /metrics (Prometheus), /healthz, /readyz: telemetry.port
EXPOSE 9464
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/cli/main.js"]
CMD ["run", "--config", "/etc/bioner-router/config.yaml"]
