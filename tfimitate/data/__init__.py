"""Reading user files and turning them into tf.data pipelines."""
