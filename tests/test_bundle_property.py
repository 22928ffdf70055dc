"""Property test of the checkpoint index and data file modules against TensorFlow 2.15.

Random sets of variables (nested names, every plain dtype, partitioned ones, on one device or
two) saved by a graph-mode ``Saver``, sharded or not: the index lists what TensorFlow lists,
each entry decodes as protobuf does and its data passes its checksum, and writing the parsed
items back reproduces TensorFlow's file byte for byte.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import tensorflow as tf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from estimator_fix.checkpoint import data_file, index_file, protos
from tests.conftest import VarSpec, items_of, save_checkpoint

# --- property test ----------------------------------------------------------------------------

_SEGMENTS = ["dense", "kernel", "bias", "layer_1", "w", "Adam", "global_step", "a.b", "x-y", "B9"]
_PLAIN_DTYPES = ["float32", "float64", "int32", "int64", "bool", "string", "uint8", "float16"]


def _drop_nested_names(names: list[str]) -> list[str]:
    """Keeps names that are neither a scope of nor inside another kept name ("w", "w/b")."""
    kept: list[str] = []
    for name in names:
        if not any(name.startswith(k + "/") or k.startswith(name + "/") for k in kept):
            kept.append(name)
    return kept


@st.composite
def variable_sets(draw: st.DrawFn) -> tuple[list[VarSpec], bool]:
    names = draw(
        st.lists(
            st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3).map("/".join),
            min_size=1,
            max_size=7,
            unique=True,
        ).map(_drop_nested_names)
    )
    specs = []
    for name in names:
        device = draw(st.integers(0, 1))
        if draw(st.integers(0, 4)) == 0:
            partitions = draw(st.integers(2, 3))
            dim0 = draw(st.integers(partitions, 6))
            rest = draw(st.lists(st.integers(1, 3), max_size=1))
            dtype = draw(st.sampled_from(["float32", "float64", "int64"]))
            specs.append(VarSpec(name, dtype, (dim0, *rest), partitions, device))
        else:
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
            specs.append(VarSpec(name, draw(st.sampled_from(_PLAIN_DTYPES)), shape, 0, device))
    return specs, draw(st.booleans())


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=variable_sets(), seed=st.integers(0, 2**16))
def test_index_matches_tensorflow(
    case: tuple[list[VarSpec], bool], seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    specs, sharded = case
    prefix = save_checkpoint(tmp_path_factory.mktemp("prop"), specs, sharded=sharded, seed=seed)
    index = index_file.read_index(index_file.index_path(prefix))
    reader = tf.train.load_checkpoint(prefix)

    # Shards: sharded saves get one per distinct device, plain saves exactly one.
    expected_shards = len({s.device for s in specs}) if sharded else 1
    event(f"data shards: {expected_shards}")
    event(f"partitioned variables: {sum(1 for s in specs if s.partitions)}")
    assert index.header.num_shards == expected_shards
    for shard in range(expected_shards):
        assert os.path.exists(index_file.data_path(prefix, shard, expected_shards))

    # What the user sees: names, shapes, dtypes, exactly as TensorFlow lists them.
    ours = sorted((e.name, list(e.shape)) for e in index.variables())
    assert ours == sorted((n, list(s)) for n, s in tf.train.list_variables(prefix))
    assert {e.name for e in index.variables()} == {s.name for s in specs}
    tf_dtypes = {name: dtype.name for name, dtype in reader.get_variable_to_dtype_map().items()}
    assert {e.name: e.dtype_name for e in index.variables()} == tf_dtypes
    assert index.total_bytes == sum(e.size for e in index.entries)

    by_name = {s.name: s for s in specs}
    for entry in index.entries:
        # The fast path builds the same frozen dataclass as its __init__ and as protobuf.
        rebuilt = index_file.Entry(
            **{f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
        )
        assert entry == rebuilt and hash(entry) == hash(rebuilt)
        slow = index_file._entry_fields_slow(entry.raw_value)
        assert slow == (entry.dtype, entry.shape, entry.shard_id, entry.offset, entry.size,
                        entry.crc32c, entry.slices)  # fmt: skip
        spec = by_name[entry.name]
        if entry.slices:
            assert entry.size == 0 and len(entry.slices) == spec.partitions
            slice_keys = [e for e in index.entries if e.is_slice and e.name == entry.name]
            assert len(slice_keys) == spec.partitions
            continue
        assert (
            protos.encode_entry(
                dtype=entry.dtype,
                shape=entry.shape,
                shard_id=entry.shard_id,
                offset=entry.offset,
                size=entry.size,
                crc32c=entry.crc32c,
            )
            == entry.raw_value
        )
        data = data_file.read_tensor_bytes(prefix, index, entry)  # verifies the checksum
        if not entry.is_slice and entry.dtype != protos.DT_STRING:
            assert data == reader.get_tensor(entry.name).tobytes()

    # Writing the parsed items back reproduces TensorFlow's file byte for byte.
    original = Path(index_file.index_path(prefix)).read_bytes()
    assert index_file.encode_index(items_of(index)) == original
    assert protos.encode_header(num_shards=expected_shards) == index.header.raw_value
