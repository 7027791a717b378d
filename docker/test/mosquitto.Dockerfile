# Test stand-in for eclipse-mosquitto:2, which cannot be pulled where the tests run: Debian's
# mosquitto, laid out as the official image is (/mosquitto/{config,data}, user uid 1883).
ARG BASE=localhost/smartcity-debian:bookworm
FROM ${BASE}
RUN groupadd --system --gid 1883 mosquitto \
    && useradd --system --uid 1883 --gid 1883 --home-dir /var/lib/mosquitto mosquitto \
    && apt-get update && apt-get install -y --no-install-recommends mosquitto mosquitto-clients \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/auth \
    && chown -R mosquitto:mosquitto /mosquitto
EXPOSE 1883
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
