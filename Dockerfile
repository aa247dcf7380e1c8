# geolb: authoritative GeoDNS for global load balancing.
#   docker build -t geolb .
#   docker run -p 53:53/udp -p 53:53/tcp -p 127.0.0.1:8053:8053 \
#     -v $PWD/zones:/zones:ro -v /var/lib/GeoIP:/geoip:ro -e GEOLB_API_TOKEN=... \
#     geolb --zones /zones --geoip /geoip/GeoLite2-City.mmdb --listen 0.0.0.0:53 --http 0.0.0.0:8053
FROM python:3.11-slim

# libcap2-bin for setcap: the unprivileged user may then bind port 53.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY geolb ./geolb
RUN pip install --no-cache-dir . \
    && setcap cap_net_bind_service=+ep "$(readlink -f "$(command -v python3)")" \
    && useradd --system --uid 10053 --no-create-home --shell /usr/sbin/nologin geolb \
    && mkdir -p /var/cache/geolb && chown geolb /var/cache/geolb
COPY zones /zones
# Region maps (built at the first start, ~10 s with the bundled database): keep them across restarts.
ENV GEOLB_CACHE_DIR=/var/cache/geolb

USER geolb
WORKDIR /
VOLUME ["/zones", "/geoip", "/var/cache/geolb"]
EXPOSE 53/udp 53/tcp 8053
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8053/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["geolb", "serve"]
CMD ["--zones", "/zones", "--listen", "0.0.0.0:53", "--http", "0.0.0.0:8053"]
