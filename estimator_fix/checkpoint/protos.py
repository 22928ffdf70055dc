"""The protobuf messages a ``.index`` stores, and TensorFlow's dtype numbers.

``BundleHeaderProto`` (under the empty key) and ``BundleEntryProto`` (under every tensor key)
are defined here from their field numbers (tensorflow/core/protobuf/tensor_bundle.proto and the
protos it imports), in a private descriptor pool under a package of our own, so that importing
TensorFlow in the same process never clashes with its own registrations. ``encode_entry`` and
``encode_header`` serialize them exactly as TensorFlow's ``BundleWriter`` does.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# --- TensorFlow DataType enum (tensorflow/core/framework/types.proto) -------------------------

DT_INVALID = 0
DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_UINT8 = 4
DT_INT16 = 5
DT_INT8 = 6
DT_STRING = 7
DT_COMPLEX64 = 8
DT_INT64 = 9
DT_BOOL = 10
DT_BFLOAT16 = 14
DT_UINT16 = 17
DT_COMPLEX128 = 18
DT_HALF = 19
DT_RESOURCE = 20
DT_VARIANT = 21
DT_UINT32 = 22
DT_UINT64 = 23

# Names as ``tf.dtypes.as_dtype(n).name`` spells them.
DTYPE_NAMES: dict[int, str] = {
    DT_FLOAT: "float32",
    DT_DOUBLE: "float64",
    DT_INT32: "int32",
    DT_UINT8: "uint8",
    DT_INT16: "int16",
    DT_INT8: "int8",
    DT_STRING: "string",
    DT_COMPLEX64: "complex64",
    DT_INT64: "int64",
    DT_BOOL: "bool",
    DT_BFLOAT16: "bfloat16",
    DT_UINT16: "uint16",
    DT_COMPLEX128: "complex128",
    DT_HALF: "float16",
    DT_RESOURCE: "resource",
    DT_VARIANT: "variant",
    DT_UINT32: "uint32",
    DT_UINT64: "uint64",
}

ENDIANNESS_LITTLE = 0
ENDIANNESS_BIG = 1

_PROTO_PACKAGE = "estimator_fix_private.bundle"


def _build_messages() -> tuple[Any, Any, Any]:
    """Builds BundleHeaderProto, BundleEntryProto, TensorShapeProto from their field numbers.

    The field numbers and types mirror tensorflow/core/protobuf/tensor_bundle.proto and the
    protos it imports (versions.proto, tensor_shape.proto, tensor_slice.proto, types.proto).
    A private pool and package keep them apart from TensorFlow's own registrations.
    """
    fdp = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(
        name="estimator_fix_private/tensor_bundle.proto", package=_PROTO_PACKAGE, syntax="proto3"
    )
    pkg = "." + _PROTO_PACKAGE

    def add_field(
        msg: Any,
        name: str,
        number: int,
        ftype: int,
        *,
        repeated: bool = False,
        type_name: str | None = None,
        oneof_index: int | None = None,
    ) -> None:
        field = msg.field.add(
            name=name,
            number=number,
            type=ftype,
            label=fdp.LABEL_REPEATED if repeated else fdp.LABEL_OPTIONAL,
        )
        if type_name is not None:
            field.type_name = type_name
        if oneof_index is not None:
            field.oneof_index = oneof_index

    data_type = f.enum_type.add(name="DataType")
    data_type.value.add(name="DT_INVALID", number=DT_INVALID)
    for number, name in sorted(DTYPE_NAMES.items()):
        data_type.value.add(name=f"DT_{name.upper()}", number=number)

    version = f.message_type.add(name="VersionDef")
    add_field(version, "producer", 1, fdp.TYPE_INT32)
    add_field(version, "min_consumer", 2, fdp.TYPE_INT32)
    add_field(version, "bad_consumers", 3, fdp.TYPE_INT32, repeated=True)

    shape = f.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    add_field(dim, "size", 1, fdp.TYPE_INT64)
    add_field(dim, "name", 2, fdp.TYPE_STRING)
    add_field(
        shape, "dim", 2, fdp.TYPE_MESSAGE, repeated=True, type_name=f"{pkg}.TensorShapeProto.Dim"
    )
    add_field(shape, "unknown_rank", 3, fdp.TYPE_BOOL)

    tslice = f.message_type.add(name="TensorSliceProto")
    extent = tslice.nested_type.add(name="Extent")
    extent.oneof_decl.add(name="has_length")
    add_field(extent, "start", 1, fdp.TYPE_INT64)
    add_field(extent, "length", 2, fdp.TYPE_INT64, oneof_index=0)
    add_field(
        tslice,
        "extent",
        1,
        fdp.TYPE_MESSAGE,
        repeated=True,
        type_name=f"{pkg}.TensorSliceProto.Extent",
    )

    header = f.message_type.add(name="BundleHeaderProto")
    endianness = header.enum_type.add(name="Endianness")
    endianness.value.add(name="LITTLE", number=ENDIANNESS_LITTLE)
    endianness.value.add(name="BIG", number=ENDIANNESS_BIG)
    add_field(header, "num_shards", 1, fdp.TYPE_INT32)
    add_field(
        header, "endianness", 2, fdp.TYPE_ENUM, type_name=f"{pkg}.BundleHeaderProto.Endianness"
    )
    add_field(header, "version", 3, fdp.TYPE_MESSAGE, type_name=f"{pkg}.VersionDef")

    entry = f.message_type.add(name="BundleEntryProto")
    add_field(entry, "dtype", 1, fdp.TYPE_ENUM, type_name=f"{pkg}.DataType")
    add_field(entry, "shape", 2, fdp.TYPE_MESSAGE, type_name=f"{pkg}.TensorShapeProto")
    add_field(entry, "shard_id", 3, fdp.TYPE_INT32)
    add_field(entry, "offset", 4, fdp.TYPE_INT64)
    add_field(entry, "size", 5, fdp.TYPE_INT64)
    add_field(entry, "crc32c", 6, fdp.TYPE_FIXED32)
    add_field(
        entry, "slices", 7, fdp.TYPE_MESSAGE, repeated=True, type_name=f"{pkg}.TensorSliceProto"
    )

    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    header_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PROTO_PACKAGE}.BundleHeaderProto")
    )
    entry_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PROTO_PACKAGE}.BundleEntryProto")
    )
    shape_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PROTO_PACKAGE}.TensorShapeProto")
    )
    return header_cls, entry_cls, shape_cls


HeaderProto, EntryProto, ShapeProto = _build_messages()


def encode_entry(
    *, dtype: int, shape: tuple[int, ...], shard_id: int, offset: int, size: int, crc32c: int
) -> bytes:
    """Serializes a (non-partitioned) ``BundleEntryProto`` as TensorFlow does.

    The shape is always present, even for a scalar, like TensorFlow's ``AsProto``, so that an
    entry re-encoded from a parsed one is byte-identical to what TensorFlow wrote.

    Args:
      dtype: the DataType enum value.
      shape: the tensor's shape.
      shard_id: the data shard holding the bytes.
      offset: where the bytes start in the shard.
      size: how many bytes.
      crc32c: the masked crc32c of the bytes (see ``data_file.tensor_crc32c``).

    Returns:
      The serialized proto.
    """
    proto = EntryProto(dtype=dtype, shard_id=shard_id, offset=offset, size=size, crc32c=crc32c)
    proto.shape.SetInParent()
    for d in shape:
        proto.shape.dim.add(size=d)
    return bytes(proto.SerializeToString())


def encode_header(
    *,
    num_shards: int,
    endianness: int = ENDIANNESS_LITTLE,
    producer: int = 1,
    min_consumer: int = 0,
) -> bytes:
    """Serializes a ``BundleHeaderProto`` as TensorFlow's ``BundleWriter`` does.

    Args:
      num_shards: how many data shards the checkpoint has.
      endianness: 0 little endian, 1 big endian.
      producer: ``version.producer`` (TensorFlow writes 1).
      min_consumer: ``version.min_consumer`` (TensorFlow writes 0).

    Returns:
      The serialized proto.
    """
    proto = HeaderProto(num_shards=num_shards, endianness=endianness)
    proto.version.SetInParent()
    proto.version.producer = producer
    proto.version.min_consumer = min_consumer
    return bytes(proto.SerializeToString())
