"""The naive recipe of bench_repair.py: a variable for every key, restore all, add global_step,
save all again.

Usage: python tools/bench_children/naive_add_step.py MODEL_DIR STEP

Restores the checkpoint MODEL_DIR's state file names, adds ``global_step`` = STEP and saves
everything to ``MODEL_DIR/model.ckpt-naive-STEP`` (with its meta graph, as ``Saver.save``
does by default). Prints the new prefix.
"""

import sys

import tensorflow as tf


def main(model_dir: str, step: int) -> None:
    """Adds ``global_step`` = ``step`` the naive way; prints the saved prefix."""
    prefix = tf.train.latest_checkpoint(model_dir)
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    graph = tf.Graph()
    with graph.as_default():
        variables = {
            name: tf.compat.v1.get_variable(name, shape=shape, dtype=dtypes[name])
            for name, shape in tf.train.list_variables(prefix)
        }
        global_step = tf.compat.v1.train.get_or_create_global_step()
        assign = global_step.assign(step)
        restorer = tf.compat.v1.train.Saver(var_list=variables)
        saver = tf.compat.v1.train.Saver(var_list={**variables, "global_step": global_step})
        with tf.compat.v1.Session(graph=graph) as sess:
            restorer.restore(sess, prefix)
            sess.run(global_step.initializer)
            sess.run(assign)
            saved = saver.save(sess, model_dir + "/model.ckpt-naive", global_step=step)
    print(saved)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
