FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev
COPY bin ./bin
COPY src ./src
COPY migrations ./migrations
COPY ca-config ./ca-config
ENV NODE_ENV=production KEYWARD_DATA_DIR=/var/lib/keyward
VOLUME /var/lib/keyward
EXPOSE 8443 8080
USER node
CMD ["node", "bin/keyward.mjs", "serve"]
