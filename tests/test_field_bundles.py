"""Field samples: TensorFlow Serving's test bundles, from ``../shared/field/``.

Nobody on this project wrote these files (see the folder's README.md): TensorFlow Serving's test
bundles (2016-2022, several TensorFlow builds, 6 of them with snappy-compressed index blocks, one
a V1 sharded session bundle). The tests:

- every bundle: ``estimator-fix scan`` reads it (never "bad input") and lists exactly what
  ``tf.train.list_variables`` lists, with the same dtypes and shapes;
- every snappy bundle, as a model directory: ``repair`` writes a checkpoint TensorFlow reads
  with every source tensor bit for bit and an int64 step, in an uncompressed index;
- the table format's other block types, made from a field bundle: TensorFlow and the reader
  agree on what is read and what is refused.

The field files are never modified: tests read them in place or copy them into ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import struct
from pathlib import Path

import pytest

from tests.conftest import (
    FIELD,
    _bits,
    assert_int64_step_at,
    latest,
    repair_dir,
    run_cli,
    save_v2,
    tensor_bits,
    write_state_file,
)

if not FIELD.is_dir():
    pytest.skip(
        f"the field samples are not here ({FIELD}: the shared/ folder beside the repository); "
        "they are test data only and not part of the repository",
        allow_module_level=True,
    )

import google_crc32c
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from estimator_fix import errors
from estimator_fix.checkpoint import index_file, table, table_writer

OBJECT_STEP_KEY = "estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_V1_SHARD = re.compile(r"-(\d{5})-of-(\d{5})$")
# Path components left out of a bundle's test id: they say nothing about which bundle it is.
_ID_NOISE = {"servables", "tensorflow", "testdata", "variables"}


# --- the bundles ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bundle:
    """One checkpoint in the field folder.

    Attributes:
      prefix: the checkpoint's prefix (for the V1 sharded one: its one shard's file name).
      tf_name: what TensorFlow reads it by (the V1 sharded one: ``<prefix>-?????-of-0000N``).
      v1: True for the V1 sharded session bundle.
      snappy: whether any block of its ``.index`` is snappy-compressed.
    """

    prefix: Path
    tf_name: str
    v1: bool
    snappy: bool

    @property
    def id(self) -> str:
        rel = self.prefix.relative_to(FIELD).parts
        return "/".join(p for p in rel if p not in _ID_NOISE)

    @property
    def scan_names(self) -> set[str]:
        """Any of these names the bundle in a scan report."""
        base = _V1_SHARD.sub("", str(self.prefix))
        return {str(self.prefix), self.tf_name, base}


def _has_snappy_block(index: Path) -> bool:
    """Whether any block is snappy; False for a damaged index (the scan test then says so)."""
    try:
        handles = table.block_handles(str(index), index.read_bytes())
    except errors.CorruptIndexError:
        return False
    return any(t == table.BLOCK_SNAPPY for _, _, t in handles)


def _find_bundles() -> list[Bundle]:
    """Every checkpoint under FIELD: V2 by their ``.index``; V1 sharded by ``-NNNNN-of-NNNNN``."""
    found = [
        Bundle(p.with_suffix(""), str(p.with_suffix("")), False, _has_snappy_block(p))
        for p in FIELD.rglob("*.index")
    ]
    for p in FIELD.rglob("*-?????-of-?????"):
        m = _V1_SHARD.search(p.name)
        if p.is_file() and m and ".data-" not in p.name:
            pattern = f"{_V1_SHARD.sub('', str(p))}-?????-of-{m.group(2)}"
            found.append(Bundle(p, pattern, True, False))
    return sorted(found, key=lambda b: b.id)


BUNDLES = _find_bundles()
SNAPPY = [b for b in BUNDLES if b.snappy]


def _params(bundles: list[Bundle]) -> list:
    return [pytest.param(b, id=b.id) for b in bundles]


def test_the_field_holds_what_its_readme_says() -> None:
    """20 bundles; the 6 snappy ones are those the README names; one V1 sharded bundle."""
    assert len(BUNDLES) == 20, [b.id for b in BUNDLES]
    assert sum(b.v1 for b in BUNDLES) == 1
    snappy_names = sorted(b.prefix.parts[-4] for b in SNAPPY)
    assert snappy_names == [
        "saved_model_half_plus_two_cpu",
        "saved_model_half_plus_two_cpu_with_empty_saved_model_config",
        "saved_model_half_plus_two_cpu_with_saved_model_config",
        "saved_model_half_plus_two_gpu_trt",
        "saved_model_half_plus_two_mlmd",
        "saved_model_half_plus_two_tf2_cpu",
    ]


# --- helpers ----------------------------------------------------------------------------------


def model_dir_from_bundle(bundle: Bundle, model_dir: Path, step: int) -> Path:
    """A model directory holding ``bundle`` as ``model.ckpt-<step>``; returns the new prefix."""
    model_dir.mkdir()
    new_prefix = model_dir / f"model.ckpt-{step}"
    for f in bundle.prefix.parent.glob(bundle.prefix.name + ".*"):
        shutil.copyfile(f, str(new_prefix) + f.name[len(bundle.prefix.name) :])
    return new_prefix


def assert_index_uncompressed(prefix: str) -> None:
    path = index_file.index_path(prefix)
    handles = table.block_handles(path, Path(path).read_bytes())
    assert {t for _, _, t in handles} == {table.BLOCK_UNCOMPRESSED}, handles


# --- scan agrees with TensorFlow on every bundle ----------------------------------------------


@functools.cache
def scan_json(model_dir: Path) -> tuple[int, dict | None, str]:
    """``estimator-fix scan --json`` of a directory, run once per directory: exit code, JSON."""
    result = run_cli("scan", f"--model_dir={model_dir}", "--json")
    document = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, document, result.stderr


@pytest.mark.parametrize("bundle", _params(BUNDLES))
def test_scan_lists_what_tensorflow_lists(bundle: Bundle) -> None:
    code, document, stderr = scan_json(bundle.prefix.parent)
    assert code != errors.EXIT_BAD_INPUT, f"scan calls {bundle.id} bad input: {stderr}"
    assert document is not None, stderr
    reports = [c for c in document["checkpoints"] if c["prefix"] in bundle.scan_names]
    assert len(reports) == 1, [c["prefix"] for c in document["checkpoints"]]
    report = reports[0]
    assert report["error"] is None, report["error"]
    bad_input = {"index_corrupt", "shard_missing", "data_corrupt", "unreadable"}
    assert not [p for p in document["problems"] if p["code"] in bad_input], document["problems"]

    reader = tf.compat.v1.train.NewCheckpointReader(bundle.tf_name)
    dtypes = reader.get_variable_to_dtype_map()
    expected = sorted(
        (name, dtypes[name].name, list(shape))
        for name, shape in tf.train.list_variables(bundle.tf_name)
    )
    listed = sorted((t["name"], t["dtype"], t["shape"]) for t in report["tensors"])
    assert listed == expected
    assert report["tensor_count"] == len(expected)


# --- snappy sources: repair writes what TensorFlow reads --------------------------------------

_SNAPPY_STEP = 123  # TensorFlow Serving's version directories are 00000123


def _step_key(source: dict[str, tuple[str, tuple[int, ...], object]]) -> str:
    return OBJECT_STEP_KEY if OBJECT_GRAPH_KEY in source else "global_step"


def _assert_object_graph_extends(source_bits: object, repaired_bits: object) -> None:
    """The repaired object graph keeps every source node and adds one for the step."""
    assert isinstance(source_bits, bytes) and isinstance(repaired_bits, bytes)
    graph = trackable_object_graph_pb2.TrackableObjectGraph
    old, new = graph.FromString(source_bits), graph.FromString(repaired_bits)
    assert len(new.nodes) == len(old.nodes) + 1
    assert list(new.nodes[1 : len(old.nodes)]) == list(old.nodes[1:])
    old_children = [(c.node_id, c.local_name) for c in old.nodes[0].children]
    new_children = [(c.node_id, c.local_name) for c in new.nodes[0].children]
    assert set(old_children) < set(new_children)
    step_node = new.nodes[len(old.nodes)]
    assert [a.checkpoint_key for a in step_node.attributes] == [OBJECT_STEP_KEY]


def check_snappy_repair(bundle: Bundle, model_dir: Path) -> None:
    """TensorFlow reads the repaired checkpoint: every source tensor bit for bit, an int64 step."""
    source = tensor_bits(bundle.tf_name)
    repaired_prefix = latest(model_dir)
    assert Path(repaired_prefix).name != f"model.ckpt-{_SNAPPY_STEP}", "nothing was repaired"
    repaired = tensor_bits(repaired_prefix)
    step_key = _step_key(source)
    assert step_key not in source
    for key, (dtype, shape, bits) in source.items():
        assert key in repaired, f"{key} missing from the repaired checkpoint"
        assert repaired[key][:2] == (dtype, shape), key
        if key == OBJECT_GRAPH_KEY:
            _assert_object_graph_extends(bits, repaired[key][2])
        else:
            assert repaired[key][2] == bits, key
    assert_int64_step_at(repaired_prefix, step_key, _SNAPPY_STEP)
    assert set(repaired) == {*source, step_key}
    assert_index_uncompressed(repaired_prefix)


@pytest.mark.parametrize("bundle", _params(SNAPPY))
def test_repair_of_a_snappy_bundle_reads_in_tensorflow(bundle: Bundle, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir_from_bundle(bundle, model_dir, _SNAPPY_STEP)
    repair_dir(model_dir)
    check_snappy_repair(bundle, model_dir)


def test_cli_repair_of_a_snappy_bundle_with_a_foreign_state_file(tmp_path: Path) -> None:
    """The command, on a snappy source whose state file names another machine's paths."""
    bundle = next(b for b in SNAPPY if b.prefix.parts[-4] == "saved_model_half_plus_two_cpu")
    model_dir = tmp_path / "model"
    model_dir_from_bundle(bundle, model_dir, _SNAPPY_STEP)
    elsewhere = f"/home/alice/serving/model.ckpt-{_SNAPPY_STEP}"
    write_state_file(model_dir, elsewhere, [elsewhere])
    assert tf.train.latest_checkpoint(str(model_dir)) is None
    result = run_cli("repair", f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr
    check_snappy_repair(bundle, model_dir)


# --- the table format's block types, made from field bundles ----------------------------------


def _bundle_named(name: str) -> Bundle:
    return next(b for b in BUNDLES if not b.v1 and b.prefix.parts[-4] == name)


def _with_block(data: bytes, offset: int, size: int, stored: bytes, block_type: int) -> bytes:
    """``data`` with the block at (offset, size) replaced by ``stored`` (as long) and a valid
    trailer for ``block_type``: the handles stay right, and the crc passes."""
    assert len(stored) == size
    trailer = bytes([block_type])
    crc = table.mask_crc(google_crc32c.value(stored + trailer))
    end = offset + size
    return data[:offset] + stored + trailer + struct.pack("<I", crc) + data[end + 5 :]


def _copy_as(bundle: Bundle, directory: Path, index_bytes: bytes) -> str:
    """``bundle``'s data files under ``directory/v`` with ``index_bytes`` as the index."""
    directory.mkdir()
    prefix = directory / "v"
    for f in bundle.prefix.parent.glob(bundle.prefix.name + ".data-*"):
        shutil.copyfile(f, str(prefix) + f.name[len(bundle.prefix.name) :])
    Path(index_file.index_path(str(prefix))).write_bytes(index_bytes)
    return str(prefix)


def _tf_error(prefix: str) -> str:
    with pytest.raises(tf.errors.OpError) as info:
        tf.compat.v1.train.NewCheckpointReader(prefix)
    return str(info.value)


@pytest.mark.parametrize("block_type", [2, 3, 4, 5, 6, 7, 0x40, 0xFF], ids=lambda t: f"type-{t}")
def test_other_block_types_are_refused_like_tensorflow(block_type: int, tmp_path: Path) -> None:
    """A valid block under a codec byte TensorFlow does not define: both refuse it."""
    bundle = _bundle_named("saved_model_half_plus_two_gpu")  # uncompressed
    data = (bundle.prefix.parent / (bundle.prefix.name + ".index")).read_bytes()
    offset, size, _ = table.block_handles("x", data)[0]
    prefix = _copy_as(
        bundle,
        tmp_path / "c",
        _with_block(data, offset, size, data[offset : offset + size], block_type),
    )
    assert "bad block type" in _tf_error(prefix)
    with pytest.raises(errors.CorruptIndexError) as info:
        index_file.read_index(index_file.index_path(prefix))
    message = str(info.value)
    assert "\n" not in message
    assert "v.index" in message and f"compression type {block_type} " in message
    if block_type in table.FOREIGN_BLOCK_TYPES:
        assert table.FOREIGN_BLOCK_TYPES[block_type] in message


def test_bad_snappy_and_a_flipped_compressed_byte_are_refused_like_tensorflow(
    tmp_path: Path,
) -> None:
    """The crc covers the compressed bytes; bytes that pass it but are not snappy still fail."""
    bundle = SNAPPY[0]
    data = (bundle.prefix.parent / (bundle.prefix.name + ".index")).read_bytes()
    offset, size, block_type = table.block_handles("x", data)[0]
    assert block_type == table.BLOCK_SNAPPY

    flipped = bytearray(data)
    flipped[offset + size // 2] ^= 0x20
    prefix = _copy_as(bundle, tmp_path / "flipped", bytes(flipped))
    assert "block checksum mismatch" in _tf_error(prefix)
    with pytest.raises(errors.CorruptIndexError, match="fails its checksum"):
        index_file.read_index(index_file.index_path(prefix))

    # Not snappy, with a valid crc: the first element is a copy from offset 0, which snappy
    # does not have. TensorFlow: "corrupted compressed block contents".
    garbage = b"\x64\x02\x00\x00" + bytes(size - 4)
    prefix = _copy_as(
        bundle, tmp_path / "garbage", _with_block(data, offset, size, garbage, table.BLOCK_SNAPPY)
    )
    assert "corrupted compressed block contents" in _tf_error(prefix)
    with pytest.raises(errors.CorruptIndexError, match="corrupted compressed block contents"):
        index_file.read_index(index_file.index_path(prefix))

    # A preamble claiming 4 GiB: refused before anything is allocated (not shown to TensorFlow,
    # which allocates what the preamble claims before it decodes).
    greedy = b"\xff\xff\xff\xff\x0f" + bytes(size - 5)
    index_bytes = _with_block(data, offset, size, greedy, table.BLOCK_SNAPPY)
    with pytest.raises(errors.CorruptIndexError, match="more than snappy can encode"):
        list(table.iter_table("greedy.index", index_bytes))


def test_a_many_block_snappy_table_reads_like_tensorflow(tmp_path: Path) -> None:
    """The field's snappy indexes have one small data block; this one has many, all snappy."""
    # Keys that differ early share no prefix, so each entry stores its long, repetitive tail:
    # about 300 KB of entries (two 256 KiB blocks at least) that snappy shrinks well.
    rng = np.random.default_rng(0)
    tail = "/encoder/layer/self_attention/query/kernel" * 5
    values = {f"{i:04d}{tail}": rng.standard_normal(2).astype(np.float32) for i in range(1400)}
    prefix = tmp_path / "big" / "m"
    prefix.parent.mkdir()
    save_v2(prefix, values)
    plain = Path(index_file.index_path(str(prefix))).read_bytes()
    items = list(table.iter_table("plain", plain))
    assert table_writer.build_table(items) == plain  # byte-identical to TensorFlow's uncompressed

    snappy = table_writer.build_table(items, compression=table.BLOCK_SNAPPY)
    handles = table.block_handles("snappy", snappy)
    data_types = [t for _, _, t in handles[:-2]]
    assert len(data_types) > 1 and set(data_types) == {table.BLOCK_SNAPPY}
    Path(index_file.index_path(str(prefix))).write_bytes(snappy)

    assert list(table.iter_table("snappy", snappy)) == items
    assert tensor_bits(prefix) == {k: (v.dtype.name, v.shape, _bits(v)) for k, v in values.items()}
