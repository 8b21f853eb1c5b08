# pgfanout-publisher and pgfanout-listener in one image (the compose file picks the
# program per service). Build: docker build -t pgfanout .
#
# Build stage: Debian 12 with the -dev packages (the same ones scripts/deps.sh installs,
# without the test servers).
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libpqxx-dev libpq-dev libboost-dev nlohmann-json3-dev librabbitmq-dev libssl-dev \
      libspdlog-dev libcli11-dev libsimdjson-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY common common
COPY publisher publisher
COPY listener listener
COPY packaging packaging
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPGFANOUT_BUILD_TESTS=OFF \
 && cmake --build build

# Runtime stage: only the shared libraries the two programs link (libpqxx pulls libpq5,
# libspdlog pulls libfmt9; the listener reads messages with libsimdjson).
FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpqxx-6.4 librabbitmq4 libspdlog1.10 libsimdjson14 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin pgfanout
COPY --from=build /src/build/bin/ /usr/local/bin/
COPY sql /usr/share/pgfanout/sql
USER pgfanout
EXPOSE 9187
CMD ["pgfanout-publisher", "--help"]
