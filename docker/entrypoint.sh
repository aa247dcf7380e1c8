#!/bin/sh
# The image's entrypoint: `geolb serve "$@"`, but never on an empty zones directory.
# /zones is a volume: without `-v $PWD/zones:/zones:ro` it is empty, and serving nothing
# (REFUSED to every query) while the health check says "ok" is worse than not starting.
set -eu
zones=zones
previous=
for arg in "$@"; do
    if [ "$previous" = "--zones" ]; then
        zones=$arg
    fi
    case $arg in
        --zones=*) zones=${arg#--zones=} ;;
    esac
    previous=$arg
done
for file in "$zones"/*.yaml; do
    if [ -f "$file" ]; then
        exec geolb serve "$@"
    fi
done
echo "geolb: no zone files (*.yaml) in $zones: mount your zones directory, e.g. docker run -v \$PWD/zones:/zones:ro ..." >&2
exit 1
