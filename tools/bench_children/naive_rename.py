"""The read-everything rename recipe of bench_migrate.py: a variable for every key under its new
name, restored from the old name, saved again under the new one.

Usage: python tools/bench_children/naive_rename.py MODEL_DIR PREFIX_OF_NEW_NAMES

Restores the checkpoint MODEL_DIR's state file names and saves every tensor as
``PREFIX_OF_NEW_NAMES + key`` to ``MODEL_DIR/model.ckpt-naive-N`` (``Saver.save`` updates the
state file). Prints the new prefix.
"""

import sys

import tensorflow as tf


def main(model_dir: str, new_prefix: str) -> None:
    """Renames every key the way the public recipes do; prints the saved prefix."""
    prefix = tf.train.latest_checkpoint(model_dir)
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    step = int(prefix.rsplit("-", 1)[1])
    graph = tf.Graph()
    with graph.as_default():
        variables = {
            name: tf.compat.v1.get_variable(new_prefix + name, shape=shape, dtype=dtypes[name])
            for name, shape in tf.train.list_variables(prefix)
        }
        restorer = tf.compat.v1.train.Saver(var_list=variables)
        saver = tf.compat.v1.train.Saver(
            var_list={new_prefix + name: v for name, v in variables.items()}
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            restorer.restore(sess, prefix)
            saved = saver.save(sess, model_dir + "/model.ckpt-naive", global_step=step)
    print(saved)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
