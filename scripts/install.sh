#!/usr/bin/env bash
# Installs vidsift and everything it needs on a fresh Debian machine (run as root or with sudo):
# system packages, then a Python 3.11 virtual environment at .venv with vidsift in editable mode.
# `--tests` adds what the test suite needs: the `test` extra (pytest, Playwright, moto) and the
# `families` extra (transformers: SigLIP's tokenizers), which the demo does not need (with it,
# every `import open_clip` also imports transformers: about 2.5 s more per command here).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need_apt=()
# Debian's chromium drives the browser tests (Playwright's own browser download cannot work offline).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v python3.11 >/dev/null 2>&1 || python3 -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
  || need_apt+=(python3.11 python3.11-venv)
[ ${#need_apt[@]} -gt 0 ] && { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}"; }

PY=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch 2.14.1 / torchvision 0.29.1 are pinned through pyproject's upper bounds.
EXTRAS=""
[ "${1:-}" = "--tests" ] && EXTRAS="[test,families]"
.venv/bin/python -m pip install -q -e ".${EXTRAS}"
echo "vidsift installed in $(pwd)/.venv"
