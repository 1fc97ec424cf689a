"""Architecture facts of the Flax model checked against Sense-X's published figures, fvcore's counts and MMAction2's
model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import reference_model, sensex_state_dict, video
from flax import traverse_util

from uniformer_jax import UniFormer, create_model
from uniformer_jax.benchmarks import mmaction2
from uniformer_jax.models import backends, depthwise, layers, thin_conv, uniformer
from uniformer_jax.weights import torch_keys as keys
from uniformer_jax.weights.checkpoints import abstract_variables

# Sense-X `video_classification/README.md` and fvcore's `flop_count` of Sense-X's model.
PARAMS = {("uniformer_small", 400): 21_400_400, ("uniformer_base", 400): 49_813_200,
          ("uniformer_small", 600): 21_503_000, ("uniformer_base", 600): 49_915_800,
          ("uniformer_small", 174): 21_284_462, ("uniformer_base", 174): 49_697_262}
STATE_DICT_KEYS = {"uniformer_small": (331, 15), "uniformer_base": (687, 27)}  # keys, of which num_batches_tracked
GMACS = {"uniformer_small": {8: 17.61, 16: 41.76, 32: 109.63}, "uniformer_base": {8: 40.23, 16: 96.74, 32: 258.63}}


@pytest.mark.parametrize("variant,classes", sorted(PARAMS))
def test_parameter_count(variant, classes):
    params = abstract_variables(create_model(variant, num_classes=classes))["params"]
    assert sum(np.prod(p.shape) for p in jax.tree.leaves(params)) == PARAMS[variant, classes]


@pytest.mark.parametrize("variant", sorted(STATE_DICT_KEYS))
def test_every_state_dict_tensor_maps_to_exactly_one_leaf(variant):
    state_dict = sensex_state_dict(reference_model(variant))
    total, counters = STATE_DICT_KEYS[variant]
    assert len(state_dict) == total
    tensors = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    assert len(tensors) == total - counters
    leaves = traverse_util.flatten_dict(abstract_variables(create_model(variant)))
    mapped = {}
    for key, tensor in tensors.items():
        path, order = keys.flax_leaf(key, tensor.ndim)
        assert path not in mapped, f"{key} and {mapped.get(path)} map to the same leaf"
        mapped[path] = key
        expected = tuple(np.array(tensor.shape)[list(order)]) if order else tuple(tensor.shape)
        assert leaves[path].shape == expected, key
    assert set(mapped) == set(leaves)


def test_stage_shapes_at_16x224():
    model = create_model("uniformer_small")
    x = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.features), abstract_variables(model), x)
    # Sense-X `slowfast/models/uniformer.py`: (64,8,56,56) -> (128,8,28,28) -> (320,8,14,14) -> (512,8,7,7), channels
    # last here.
    assert [feats[f"stage{i}"].shape for i in range(1, 5)] == [
        (1, 8, 56, 56, 64), (1, 8, 28, 28, 128), (1, 8, 14, 14, 320), (1, 8, 7, 7, 512)]
    assert feats["pooled"].shape == (1, 512)


@pytest.mark.parametrize("variant", sorted(GMACS))
@pytest.mark.parametrize("frames", [8, 16, 32])
def test_flops_match_the_reference(monkeypatch, variant, frames):
    # The reference counts (fvcore) take 1 MAC as 1 FLOP and count no activation functions, while XLA counts
    # 2 FLOPs per MAC and 66 per exact-erf GELU; counting without the GELUs compares like with like.
    monkeypatch.setattr(layers, "gelu", lambda x: x)
    model = create_model(variant)
    x = jax.ShapeDtypeStruct((1, frames, 224, 224, 3), jnp.float32)
    flops = jax.jit(model.apply).lower(abstract_variables(model), x).cost_analysis()["flops"]
    assert flops / 2e9 == pytest.approx(GMACS[variant][frames], rel=0.05)


@pytest.mark.parametrize("variant", sorted(GMACS))
def test_flops_count_is_the_papers(variant):
    # uniformer.flops feeds the benchmark's MFU; it counts as fvcore does, so it gives fvcore's figures exactly.
    for frames, gmacs in GMACS[variant].items():
        assert uniformer.flops(uniformer.DEPTHS[variant], frames) / 1e9 == pytest.approx(gmacs, abs=0.005)


def test_initialisation_follows_pytorch():
    """Each weight is drawn like its MMAction2 counterpart: same spread, same bound."""
    reference = sensex_state_dict(reference_model("uniformer_small"))
    params = create_model("uniformer_small").init(jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)))["params"]
    for path, value in traverse_util.flatten_dict(params).items():
        key, _ = keys.torch_key(("params", *path), value.ndim)
        ours, theirs = np.asarray(value), reference[key].numpy()
        if "norm" in key:  # LayerNorm/BatchNorm affine: exactly 1 and 0 (the reference's BN is randomised)
            assert np.all(ours == (1.0 if key.endswith("weight") else 0.0)), key
        elif key.startswith("head."):  # MMAction2's I3DHead uses std .01; Sense-X uses trunc normal .02
            assert ours.std() == pytest.approx(0.02 if key.endswith("weight") else 0.0, rel=0.05, abs=1e-7)
        else:
            if ours.size >= 1000:
                assert ours.std() == pytest.approx(theirs.std(), rel=0.1), key
            weight = reference[key.rsplit(".", 1)[0] + ".weight"]
            if weight.ndim == 5:  # conv: PyTorch's U(+-1/sqrt(fan_in)), fan_in from the (O, I/g, kT, kH, kW) shape
                bound = 1 / np.sqrt(np.prod(weight.shape[1:]))
                assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound, key
            else:  # linear: normal weights, zero biases
                assert np.all(ours == 0) == np.all(theirs == 0), key


def test_drop_path_rates_are_spaced_like_mmaction2():
    reference = mmaction2.build("uniformer_base", drop_path_rate=0.3).backbone
    blocks = [*reference.blocks1, *reference.blocks2, *reference.blocks3, *reference.blocks4]
    expected = [block.drop_path.drop_prob if block.drop_path.__class__.__name__ == "DropPath" else 0.0
                for block in blocks]
    model = create_model("uniformer_base", drop_path_rate=0.3)
    bound = model.bind(abstract_variables(model))
    ours = [b.drop_path for b in [*bound.blocks1, *bound.blocks2, *bound.blocks3, *bound.blocks4]]
    assert expected[0] == 0.0 and expected[-1] == pytest.approx(0.3)
    np.testing.assert_allclose(ours, expected, atol=1e-7)


def test_drop_path_is_stochastic_in_training_only():
    model = create_model("uniformer_small", num_classes=10, drop_path_rate=0.5)
    x = video((2, 8, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    train = lambda seed: model.apply(variables, x, train=True, mutable=["batch_stats"],  # noqa: E731
                                     rngs={"dropout": jax.random.key(seed)})[0]
    assert not np.allclose(train(1), train(2))
    np.testing.assert_array_equal(train(1), train(1))
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))


def test_remat_changes_nothing_numerically():
    """On a model of one block a stage: the same mechanism, a quarter of UniFormer-S's compile time."""
    x = video((2, 8, 32, 32, 3))
    plain = UniFormer(depth=(1, 1, 1, 1), num_classes=10)
    remat = UniFormer(depth=(1, 1, 1, 1), num_classes=10, remat=(1, 1, 1, 1))
    variables = plain.init(jax.random.key(0), x)

    def loss(model, params):
        out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out ** 2)

    g_plain = jax.jit(jax.grad(lambda p: loss(plain, p)))(variables["params"])
    g_remat = jax.jit(jax.grad(lambda p: loss(remat, p)))(variables["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g_plain, g_remat)


@pytest.mark.parametrize("kwargs", [dict(attention="flash"), dict(remat=(4, 0, 0, 0)), dict(remat=(0, 0, 0))])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        abstract_variables(create_model("uniformer_small", **kwargs))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="uniformer_small"):
        create_model("uniformer_large")


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("frames_per_chunk", [1, 2, 5])
def test_cpu_depthwise_conv_gradients_match_xla_convolution(monkeypatch, size, frames_per_chunk):
    # The CPU form has a hand-written derivative; XLA's grouped convolution is the independent reference.
    rng = np.random.RandomState(size)
    x = jnp.asarray(rng.randn(2, 5, 6, 5, 8), jnp.float32)
    monkeypatch.setattr(depthwise, "CACHE_BYTES", frames_per_chunk * x[:, 0].size * 4)
    kernel = jnp.asarray(rng.randn(size, size, size, 1, 8), jnp.float32)
    cotangent = jnp.asarray(rng.randn(*x.shape), jnp.float32)

    def pullback(fn):
        out, vjp = jax.vjp(fn, x, kernel)
        return (out, *vjp(cotangent))

    ours = pullback(depthwise._depthwise_shift_add)
    reference = pullback(depthwise._grouped_conv)
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,strides,padding",
                         [((3, 3, 3), (1, 2, 2), (1, 1, 1)), ((3, 4, 4), (2, 4, 4), (1, 0, 0))])
def test_cpu_thin_conv_and_its_gradients_match_xla_convolution(kernel, strides, padding):
    # The XXS/XS stem and the S/B stem's shapes; XLA's convolution is the independent reference.
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(2, 5, 12, 8, 3), jnp.float32)
    w = jnp.asarray(rng.randn(*kernel, 3, 6), jnp.float32)
    reference = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, strides, [(p, p) for p in padding], dimension_numbers=("NDHWC", "DHWIO", "NDHWC")))
    ours = jax.jit(lambda x, w: thin_conv.thin_conv(x, w, strides, padding))
    cotangent = jnp.asarray(rng.randn(*reference(x, w).shape), jnp.float32)
    assert "convolution" not in ours.lower(x, w).as_text()  # the CPU form is what runs here
    results = [(f(x, w), *jax.vjp(f, x, w)[1](cotangent)) for f in (ours, reference)]
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,strides,padding", [((1, 1, 1), 1, 0), ((1, 4, 4), (1, 4, 4), 0),
                                                    ((2, 4, 4), (2, 4, 4), 0), ((3, 4, 4), (2, 4, 4), (1, 0, 0))])
def test_portable_convolutions_over_whole_windows_are_matmuls_with_xla_convolutions_result(kernel, strides, padding):
    # The pointwise and patch-embedding shapes become a matmul in the exported form; the padded stem stays a
    # convolution. XLA's convolution is the independent reference.
    conv = layers.conv(5, kernel, 6, stride=strides, padding=padding)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 4, 8, 8, 6), jnp.float32)
    variables = conv.init(jax.random.key(0), x)
    with backends.portable():
        lowered = jax.jit(lambda x: conv.apply(variables, x)).lower(x).as_text()
        ours = conv.apply(variables, x)
    assert ("convolution" in lowered) == (padding != 0)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(conv.apply(variables, x)), rtol=1e-5, atol=1e-5)
