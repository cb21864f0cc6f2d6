#!/usr/bin/env bash
# Install the system Chromium used by tests/test_report_browser.py (driven by the `playwright` Python package
# from the `dev` extra, with executable_path=/usr/bin/chromium; `playwright install` is never used).
# Never fails the build: without Chromium the browser test skips and says why.
set -u
have() { command -v "$1" >/dev/null 2>&1; }
if have chromium || have chromium-browser || have google-chrome || [ -x /usr/bin/chromium ]; then
  echo "install-browser: chromium present: $(command -v chromium || command -v chromium-browser || command -v google-chrome)"
  exit 0
fi
if ! have apt-get; then
  echo "install-browser: no apt-get; the browser test will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if have sudo; then SUDO="sudo -n"; else echo "install-browser: not root and no sudo; the browser test will skip" >&2; exit 0; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y chromium chromium-driver \
  || { $SUDO apt-get update && $SUDO apt-get install -y chromium chromium-driver; } \
  || echo "install-browser: apt-get could not install chromium; the browser test will skip" >&2
exit 0
