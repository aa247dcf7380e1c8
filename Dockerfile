# geolb: authoritative GeoDNS for global load balancing.
#   docker build -t geolb .
#   docker run -d --name geolb -p 53:5353/udp -p 53:5353/tcp -p 127.0.0.1:8053:8053 \
#     -v $PWD/zones:/zones:ro -v /var/lib/GeoIP:/geoip:ro -e GEOLB_API_TOKEN=... \
#     geolb --zones /zones --geoip /geoip/GeoLite2-City.mmdb --listen 0.0.0.0:5353 --listen [::]:5353
# DNS listens on 5353 inside the container: an unprivileged port needs no capability
# (nothing like setcap, which works under allowPrivilegeEscalation: false); -p maps 53 to it.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY geolb ./geolb
COPY docker/entrypoint.sh /usr/local/bin/geolb-entrypoint
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10053 --no-create-home --shell /usr/sbin/nologin geolb \
    && mkdir -p /zones /var/cache/geolb && chown geolb /var/cache/geolb
# Region maps (built at the first start, ~10 s with the bundled database): keep them across restarts.
# GEOLB_HTTP is `serve --http`'s default, and the address the HEALTHCHECK asks.
ENV GEOLB_CACHE_DIR=/var/cache/geolb \
    GEOLB_HTTP=0.0.0.0:8053

USER geolb
WORKDIR /
VOLUME ["/zones", "/geoip", "/var/cache/geolb"]
EXPOSE 5353/udp 5353/tcp 8053
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; host, _, port = os.environ['GEOLB_HTTP'].rpartition(':'); host = {'0.0.0.0': '127.0.0.1', '[::]': '[::1]', '': '127.0.0.1'}.get(host, host); sys.exit(urllib.request.urlopen(f'http://{host}:{port}/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["geolb-entrypoint"]
CMD ["--zones", "/zones", "--listen", "0.0.0.0:5353", "--listen", "[::]:5353"]
