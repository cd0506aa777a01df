# syntax=docker/dockerfile:1
# Keyward on Node.js 24 (LTS). Targets:
#   docker build -t keyward .                      the default image (roots of trust: file, passphrase, AWS KMS)
#   docker build --target pkcs11 -t keyward:pkcs11 .   adds the pkcs11js native addon for an HSM root;
#                                                  mount the vendor's PKCS#11 module and the PIN file.
# No secret is built in: the root key, passphrase or database URL come from mounted secrets or env.

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: nothing native is compiled in this stage (see the pkcs11 target).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY src ./src
COPY migrations ./migrations
RUN node bin/build.mjs && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

FROM build AS build-pkcs11
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
  && npm rebuild pkcs11js && rm -rf /var/lib/apt/lists/*

FROM ${NODE_IMAGE} AS base
ENV NODE_ENV=production KEYWARD_DATA_DIR=/var/lib/keyward
# A user of its own that owns the data directory (the volume is created from this directory,
# so a fresh named volume is owned by it too).
RUN groupadd --system --gid 10001 keyward \
  && useradd --system --uid 10001 --gid keyward --home-dir /var/lib/keyward --shell /usr/sbin/nologin keyward \
  && install -d -o keyward -g keyward -m 0700 /var/lib/keyward
WORKDIR /app
COPY --chown=root:root package.json ./
COPY --chown=root:root bin ./bin
COPY --chown=root:root ca-config ./ca-config
VOLUME /var/lib/keyward
EXPOSE 8443 8080
USER keyward
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=5 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.KEYWARD_HEALTH_PORT||8080)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "bin/keyward.mjs"]
CMD ["serve"]

FROM base AS pkcs11
COPY --from=build-pkcs11 --chown=root:root /app/node_modules ./node_modules
COPY --from=build-pkcs11 --chown=root:root /app/dist ./dist

FROM base AS runtime
COPY --from=build --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/dist ./dist
