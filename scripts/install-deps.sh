#!/bin/sh
# Installs what mm needs to build, test and benchmark on Debian 12.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential cmake pkg-config git \
  libjemalloc-dev libgc-dev liburcu-dev libnuma-dev libcriterion-dev libjansson-dev zlib1g-dev \
  gnuplot-nox clang libclang-rt-14-dev python3-prometheus-client man-db >/dev/null
