#!/usr/bin/env bash
# Install Debian's headless Chromium for the report's browser test when we can (root + apt).
# Without it the browser test is skipped locally; CI sets REPSCOPE_REQUIRE_BROWSER=1 so a
# missing browser fails the run instead.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser test ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped"
else
  echo "note: chromium is not installed and we are not root; the browser test will be skipped"
fi
exit 0
