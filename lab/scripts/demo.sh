#!/usr/bin/env bash
# The demo: installs what is missing, builds the Kubernetes binaries once (cached), and runs
# `lab demo` (root needed: it creates network namespaces).
set -euo pipefail
cd "$(dirname "$0")/../.."
lab/scripts/setup.sh
cargo build -q --locked -p lab -p controller -p speaker
exec target/debug/lab demo
