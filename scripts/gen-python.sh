#!/usr/bin/env bash
# Generates a Python client of parley (messages and gRPC stubs) with Debian's python3-grpc-tools, as a Python
# team on Debian would: parley's protos (proto/) and the vendored googleapis ones (proto-vendor/google: the
# google.rpc Status and error details, google.api field_behavior). The well-known types (google.protobuf.*)
# are not generated: python3-protobuf ships them.
#
#   scripts/gen-python.sh <out dir>
#   python3: sys.path.insert(0, "<out dir>"); from parley.genie.v1 import genie_pb2, genie_pb2_grpc
#
# Debian 12's python3-grpc-tools (1.14) bundles protoc 3.5.1, whose parser predates proto3 `optional`
# (error_details.proto already uses it, and our contracts will). So buf parses the protos and grpc_tools'
# protoc generates from that descriptor set (--descriptor_set_in) instead of from the .proto text. That old
# generator drops the "proto3 optional" flag: Python sees such a field as the only member of a oneof named
# `_<field>`, which behaves the same (HasField("<field>") works) and is identical on the wire.
#
# PYTHON overrides the interpreter (default /usr/bin/python3, where the Debian packages install; a pyenv or
# venv python3 earlier on PATH may not see them).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/gen-python.sh <out dir>}"
python="${PYTHON:-/usr/bin/python3}"
if ! "$python" -c 'import grpc, grpc_tools.protoc' 2>/dev/null; then
  echo "gen-python: $python lacks grpc or grpc_tools (Debian: apt-get install python3-grpcio python3-grpc-tools)" >&2
  exit 2
fi
mkdir -p "$out"
image="$(mktemp)"
trap 'rm -f "$image"' EXIT
node_modules/.bin/buf build --as-file-descriptor-set -o "$image"
mapfile -t files < <({ (cd proto && find parley -name '*.proto'); (cd proto-vendor && find google -name '*.proto'); } | LC_ALL=C sort)
# protoc's own entry point, not `python3 -m grpc_tools.protoc`: that one adds an -I, which protoc refuses
# next to --descriptor_set_in.
"$python" -c 'import sys; from grpc_tools import protoc; sys.exit(protoc.main(["protoc", *sys.argv[1:]]))' \
  --descriptor_set_in="$image" --python_out="$out" --grpc_python_out="$out" "${files[@]}"
echo "gen-python: ${#files[@]} files into $out" >&2
