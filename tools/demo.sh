#!/usr/bin/env bash
# The whole job on a bundled example: a model directory whose export fails with
# "Key global_step not found in checkpoint" (a plain Session loop saved an int32
# `my_global_step`), copied to a temporary folder so testdata/ is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r testdata/session_loop_int32_step "$work/model_dir"
model=(--estimator=testdata/models.py:session_loop_model
       --serving_input_fn=testdata/models.py:session_loop_model_serving_input_fn)

echo "### 1. scan: what is wrong (exit 3 = repairable)"
set +e; "$BIN/estimator-fix" scan --model_dir="$work/model_dir"; code=$?; set -e
echo "(exit $code)"; [ "$code" -eq 3 ]

echo; echo "### 2. fix: repair, export, verify in one command"
"$BIN/estimator-fix" fix --model_dir="$work/model_dir" --export_dir="$work/export" "${model[@]}"

echo; echo "### 3. fix again: the directory is healthy now, so a second export and no repair"
"$BIN/estimator-fix" fix --model_dir="$work/model_dir" --export_dir="$work/export" "${model[@]}"

echo; echo "### files after (originals untouched, data hard-linked: same inode numbers)"
ls -li "$work/model_dir"
echo; echo "### the SavedModel"
"$BIN/saved_model_cli" show --dir "$(ls -d "$work"/export/[0-9]* | head -1)" --all 2>/dev/null \
  | sed -n '1,25p'
