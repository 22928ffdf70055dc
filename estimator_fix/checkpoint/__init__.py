"""Checkpoint files read and written without TensorFlow.

``index_file`` (the V2 ``.index``: the parsed entries, read and write), stored as a sorted string
table (``table``) of protobuf messages (``protos``); ``data_file`` (tensor bytes in the data
shards, checksum verified); ``state_file`` (the ``checkpoint`` state file); ``keys`` (names and
numbers of the format that several modules need).
"""
