#!/usr/bin/env bash
# The whole job on a bundled example: a model directory whose export fails with
# "Key global_step not found in checkpoint" (a plain Session loop saved an int32
# `my_global_step`), copied to a temporary folder so testdata/ is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r testdata/session_loop_int32_step "$work/model_dir"

echo "### 1. scan: what is wrong (exit 3 = repairable)"
set +e; "$BIN/estimator-fix" scan --model_dir="$work/model_dir"; code=$?; set -e
echo "(exit $code)"; [ "$code" -eq 3 ]

echo; echo "### 2. repair --dry_run: the plan, nothing written"
"$BIN/estimator-fix" repair --model_dir="$work/model_dir" --dry_run

echo; echo "### 3. repair"
"$BIN/estimator-fix" repair --model_dir="$work/model_dir"

echo; echo "### 4. scan again (exit 0 = healthy)"
"$BIN/estimator-fix" scan --model_dir="$work/model_dir"

echo; echo "### files after the repair (originals untouched, data hard-linked)"
ls -li "$work/model_dir"
