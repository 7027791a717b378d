# Test stand-in for influxdb:2.7, which cannot be pulled where the tests run: Debian's InfluxDB
# 1.x, served on 8086 like the official image. The platform reaches both through the v1 API.
ARG BASE=localhost/smartcity-debian:bookworm
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends influxdb curl \
    && rm -rf /var/lib/apt/lists/*
ENV INFLUXDB_DATA_DIR=/var/lib/influxdb/data INFLUXDB_DATA_WAL_DIR=/var/lib/influxdb/wal \
    INFLUXDB_META_DIR=/var/lib/influxdb/meta INFLUXDB_REPORTING_DISABLED=true
USER influxdb
EXPOSE 8086
CMD ["/usr/bin/influxd", "-config", "/etc/influxdb/influxdb.conf"]
