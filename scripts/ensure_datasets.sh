#!/usr/bin/env bash
# Install the Debian data packages the test suite and the landscape tasks read offline
# (dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz) when we can
# (root + apt). Without it the Fashion-MNIST tests are skipped locally; CI sets
# REPSCOPE_REQUIRE_DATASETS=1 so a missing data set fails the run instead.
set -u
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's dataset-fashion-mnist for the landscape tasks ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "warning: could not install dataset-fashion-mnist; the Fashion-MNIST tests will be skipped"
else
  echo "note: dataset-fashion-mnist is not installed and we are not root; the Fashion-MNIST tests will be skipped"
fi
exit 0
