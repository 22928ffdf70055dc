"""The healthy twin of a bench_export.py fixture, made by the naive recipe.

Usage: python tools/bench_children/make_healthy.py SOURCE_PREFIX DESTINATION_DIR STEP

A variable for every key of SOURCE_PREFIX but ``global_step``, restored; an int64
``global_step`` = STEP added; everything saved to ``DESTINATION_DIR/model.ckpt-STEP`` with
relative paths and no meta graph. Prints the new prefix.
"""

import os
import sys

import tensorflow as tf


def main(source: str, destination: str, step: int) -> None:
    """Writes the healthy twin; prints its prefix."""
    dtypes = tf.train.load_checkpoint(source).get_variable_to_dtype_map()
    graph = tf.Graph()
    with graph.as_default():
        variables = {
            name: tf.compat.v1.get_variable(name, shape=shape, dtype=dtypes[name])
            for name, shape in tf.train.list_variables(source)
            if name != "global_step"
        }
        global_step = tf.compat.v1.train.get_or_create_global_step()
        restorer = tf.compat.v1.train.Saver(var_list=variables)
        saver = tf.compat.v1.train.Saver(
            var_list={**variables, "global_step": global_step}, save_relative_paths=True
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            restorer.restore(sess, source)
            sess.run(global_step.initializer)
            sess.run(global_step.assign(step))
            prefix = saver.save(
                sess,
                os.path.join(destination, "model.ckpt"),
                global_step=step,
                write_meta_graph=False,
            )
    print(prefix)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
