"""Dense layers traced as 2-D MatMul + BiasAdd for exports: the same outputs, other ops."""

import numpy as np


def test_matrix_product_reads_einsum_dense_equations():
    from tfimitate.serving.dense_2d import matrix_product

    assert matrix_product("abc,cde->abde") == ("ab", "c", "de")
    assert matrix_product("abcd,cde->abe") == ("ab", "cd", "e")
    assert matrix_product("ab,bc->ac") == ("a", "b", "c")
    assert matrix_product("abc,dce->abde") is None  # contracts a middle kernel axis
    assert matrix_product("abcd,ade->abce") is None


def test_patched_layers_give_the_same_outputs_as_matmul_and_bias_add():
    import keras
    import tensorflow as tf
    from tfimitate.serving.dense_2d import two_d_dense

    inputs = keras.Input((None, 8))
    heads = keras.layers.EinsumDense("abc,cde->abde", (None, 2, 4), bias_axes="de")(inputs)
    merged = keras.layers.EinsumDense("abcd,cde->abe", (None, 8), bias_axes="e")(heads)
    hidden = keras.layers.Dense(16, activation="gelu")(merged)
    kept = keras.layers.EinsumDense("abc,cd->abd", (None, 3))(hidden)  # no bias
    model = keras.Model(inputs, kept)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 5, 8)), tf.float32)
    plain = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec([None, None, 8], tf.float32))
    with two_d_dense(model):
        flat = tf.function(lambda x: model(x)).get_concrete_function(
            tf.TensorSpec([None, None, 8], tf.float32))
    np.testing.assert_allclose(flat(x).numpy(), plain(x).numpy(), atol=1e-5)
    ops = lambda f: {op.type for op in f.graph.get_operations()}
    assert "Einsum" in ops(plain) and "Einsum" not in ops(flat)
    assert {"MatMul", "BiasAdd"} <= ops(flat)
    assert "call" not in vars(model.layers[1])  # the layers' own call is back
