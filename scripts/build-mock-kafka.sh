#!/usr/bin/env bash
# Builds the librdkafka mock-cluster launcher to build/mock-kafka.
# Needs gcc and librdkafka-dev (rdkafka_mock.h ships with it); as root it
# installs them with apt-get, otherwise it says what is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/scripts/mock-kafka/mock_cluster.c"
out="$root/build/mock-kafka"
header=/usr/include/librdkafka/rdkafka_mock.h

# Up to date: nothing to do (-nt is false when the binary is missing).
if [[ "$out" -nt "$src" && "$out" -nt "${BASH_SOURCE[0]}" ]]; then
  exit 0
fi

missing() { ! command -v gcc >/dev/null 2>&1 || [[ ! -f "$header" ]]; }
if missing; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "build-mock-kafka: installing gcc librdkafka-dev pkg-config" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends gcc libc6-dev librdkafka-dev pkg-config >&2
  fi
  if missing; then
    echo "build-mock-kafka: need gcc and librdkafka-dev ($header);" \
         "install them, e.g. 'sudo apt-get install gcc librdkafka-dev pkg-config'" >&2
    exit 1
  fi
fi

flags="-lrdkafka"
if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists rdkafka; then
  flags="$(pkg-config --cflags --libs rdkafka)"
fi

mkdir -p "$root/build"
# Compile to a temp name and rename, so a concurrent run never sees half a binary.
tmp="$out.tmp.$$"
# shellcheck disable=SC2086  # $flags is a word list on purpose
gcc -std=c11 -O2 -Wall -Wextra -o "$tmp" "$src" $flags
mv -f "$tmp" "$out"
echo "build-mock-kafka: built $out" >&2
