"""The training recipe against independent references: MMAction2's model and torch's AdamW, Sense-X's
lr schedule formula, and what mixup and cutmix must do to a batch."""

from __future__ import annotations

import copy
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from conftest import reference_model, save_mmaction2, sensex_state_dict
from flax import traverse_util

import convert.__main__ as cli
from uniformer_jax import load_pretrained, mixing, training
from uniformer_jax.weights import torch_keys as keys


def torch_soft_cross_entropy(logits, labels, num_classes, smoothing):
    targets = torch.full((len(labels), num_classes), smoothing / num_classes)
    targets[torch.arange(len(labels)), labels] += 1.0 - smoothing
    return torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1).mean()


def torch_binary_cross_entropy(logits, hot, num_classes, smoothing):
    """timm's BinaryCrossEntropy smoothing on multi-hot targets, PySlowFast's `bce_logit` (mean reduction)."""
    targets = hot.float() * (1.0 - smoothing) + smoothing / num_classes
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)


# Multi-label rides on the accumulation case: two behaviours, one model build.
@pytest.mark.parametrize("accumulate, multi_label", [(1, False), (2, True)])
def test_one_train_step_matches_mmaction2(tmp_path, accumulate, multi_label):
    """Same weights, same batch, BatchNorm in training mode: same loss, gradients and running statistics.

    With accumulation, PyTorch's usual loop is the reference: one forward and backward pass per micro-batch,
    each loss divided by their number, gradients summed before the step. Multi-label: multi-hot labels, the
    loss PyTorch's binary cross-entropy with logits."""
    reference = copy.deepcopy(reference_model("uniformer_small", num_classes=400, ln_eps=1e-5))
    assert cli.main([str(save_mmaction2(reference, tmp_path / "mm.pth")), str(tmp_path / "ckpt")]) == 0
    model, variables = load_pretrained(tmp_path / "ckpt")
    rng = np.random.RandomState(0)
    video = rng.randint(0, 256, (8, 8, 32, 32, 3)).astype(np.uint8)
    labels = rng.randint(0, 400, 8).astype(np.int32)
    if multi_label:  # two or three classes a clip
        labels = np.zeros((8, 400), np.float32)
        for row in labels:
            row[rng.choice(400, rng.randint(2, 4), replace=False)] = 1.0

    # Plain SGD with rate 1 turns the update into the gradient.
    tx = optax.sgd(1.0)
    step = jax.jit(training.make_train_step(model, tx, optax.constant_schedule(1.0),
                                            mixing.Mixing(mixup=0.0, cutmix=0.0, smoothing=0.1, group=4),
                                            accumulate=accumulate, multi_label=multi_label))
    state = training.init_state(variables, tx, seed=0)
    new, metrics = step(state, {"video": video, "label": labels})
    grads = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), state.params, new.params)

    before = traverse_util.flatten_dict(keys.to_flax(running_stats(reference))["batch_stats"])
    reference.train()
    reference.cls_head.dropout.eval()  # MMAction2's head drops half its inputs in training; the original does not
    x = ((torch.from_numpy(video).float() - 114.75) / 57.375).permute(0, 4, 1, 2, 3).contiguous()
    losses = []
    criterion = torch_binary_cross_entropy if multi_label else torch_soft_cross_entropy
    y_all = torch.from_numpy(labels) if multi_label else torch.from_numpy(labels).long()
    for part, y in zip(x.chunk(accumulate), y_all.chunk(accumulate), strict=True):
        loss = criterion(reference.cls_head(reference.backbone(part)), y, 400, 0.1)
        (loss / accumulate).backward()
        losses.append(loss.item())
    assert abs(float(metrics["loss"]) - np.mean(losses)) < 1e-4

    named = dict(reference.named_parameters())
    pairs = zip(sensex_state_dict(reference), reference.state_dict(), strict=True)
    torch_grads = {k: named[m].grad.numpy() for k, m in pairs if m in named}
    expected = traverse_util.flatten_dict(keys.to_flax(torch_grads)["params"])
    got = traverse_util.flatten_dict(grads)
    assert expected.keys() == got.keys()
    scale = max(np.abs(g).max() for g in expected.values())
    worst = max(np.abs(got[k] - expected[k]).max() for k in expected)
    assert worst < 1e-3 * scale, f"largest gradient difference {worst:.2e} (largest gradient {scale:.2e})"

    after = traverse_util.flatten_dict(keys.to_flax(running_stats(reference))["batch_stats"])
    ours = traverse_util.flatten_dict(jax.device_get(new.batch_stats))
    for k, v in after.items():
        if k[-1] == "var":
            # PyTorch updates running_var with the unbiased batch variance, Flax with the biased one (as the
            # original's BatchNorm does in its normalisation): undo Bessel's correction on torch's updates.
            n = 8 // accumulate * VALUES_PER_CHANNEL[k[0][:7]]
            kept = 0.9 ** accumulate * before[k]
            v = kept + (v - kept) * (n - 1) / n
        np.testing.assert_allclose(ours[k], v, rtol=1e-4, atol=1e-5, err_msg=str(k))


VALUES_PER_CHANNEL = {"blocks1": 4 * 8 * 8, "blocks2": 4 * 4 * 4, "norm": 4}  # per clip, 8x32x32 input


def running_stats(model) -> dict:
    return {k: v.numpy().copy() for k, v in sensex_state_dict(model).items() if "running" in k}


def spec_learning_rate(step, steps_per_epoch, base, warmup_epochs, epochs, start=1e-6, end=1e-6):
    """Sense-X `slowfast/utils/lr_policy.py` (`lr_func_cosine`, warmup) in its own terms: per-iteration epoch, linear
    warmup, then cosine after warmup."""
    epoch = step / steps_per_epoch
    if epoch < warmup_epochs:
        return start + (base - start) * epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return end + (base - end) * (math.cos(math.pi * progress) + 1) / 2


def test_schedule_follows_the_spec_and_scales_with_the_batch():
    recipe = training.Recipe(lr=1e-4, reference_batch=64, batch_size=256, total_steps=110 * 50,
                             warmup_steps=10 * 50)
    schedule = recipe.schedule()
    for step in (0, 1, 249, 500, 501, 3000, 5499):
        want = spec_learning_rate(step, 50, 4e-4, 10, 110)
        assert abs(float(schedule(step)) - want) < 1e-9 + 1e-5 * want, step


def test_optimizer_matches_torch_adamw_with_clipping_and_no_decay_on_1d():
    rng = np.random.RandomState(1)
    params = {"conv": {"kernel": rng.randn(3, 3, 4, 5).astype(np.float32), "bias": rng.randn(5).astype(np.float32)},
              "norm": {"scale": rng.randn(5).astype(np.float32)}}
    recipe = training.Recipe(lr=1e-2, reference_batch=8, batch_size=8, total_steps=10, warmup_steps=0,
                             warmup_lr=1e-2, end_lr=1e-2, weight_decay=0.05, clip_norm=20.0)
    tx = recipe.optimizer()
    ours, state = jax.tree.map(jnp.asarray, params), tx.init(params)
    flat = traverse_util.flatten_dict(params)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in flat.items()}
    opt = torch.optim.AdamW([{"params": [t for k, t in tensors.items() if t.ndim > 1], "weight_decay": 0.05},
                             {"params": [t for k, t in tensors.items() if t.ndim <= 1], "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for i in range(3):
        grads = {k: rng.randn(*v.shape).astype(np.float32) * (30.0 if i == 0 else 0.5) for k, v in flat.items()}
        for k, t in tensors.items():
            t.grad = torch.from_numpy(grads[k].copy())
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), 20.0)
        opt.step()
        updates, state = tx.update(traverse_util.unflatten_dict(grads), state, ours)
        ours = optax.apply_updates(ours, updates)
    got = traverse_util.flatten_dict(ours)
    for k, t in tensors.items():
        np.testing.assert_allclose(np.asarray(got[k]), t.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=str(k))


def test_mixup_and_cutmix_mix_pairs_and_their_labels():
    num_classes, group = 5, 4
    rng = np.random.RandomState(2)
    video = jnp.asarray(rng.rand(8, 2, 16, 16, 3), jnp.float32)
    labels = jnp.asarray([0, 1, 2, 3, 4, 0, 1, 2], jnp.int32)
    settings = mixing.Mixing(mixup=0.8, cutmix=1.0, switch=0.5, smoothing=0.1, group=group)
    # Multi-label: each clip also has the next class; its multi-hot vector is smoothed and mixed the same way.
    hot = jax.nn.one_hot(labels, num_classes) + jax.nn.one_hot((labels + 1) % num_classes, num_classes)
    smoothed = np.asarray(hot) * 0.9 + 0.1 / num_classes
    modes = []
    for seed in range(40):
        mixed, targets = jax.device_get(mixing.mix(video, labels, num_classes, settings, jax.random.key(seed)))
        mixed_hot, targets_hot = jax.device_get(mixing.mix(video, hot, num_classes, settings, jax.random.key(seed)))
        np.testing.assert_array_equal(mixed_hot, mixed)
        np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-5)
        for g in range(0, 8, group):
            x, partner = np.asarray(video[g:g + group]), np.asarray(video[g:g + group][::-1])
            m, t = mixed[g:g + group], targets[g:g + group]
            own = t[np.arange(group), labels[g:g + group]] - 0.1 / num_classes
            partner_weight = t[np.arange(group), labels[g:g + group][::-1]] - 0.1 / num_classes
            lam = (own / (own + partner_weight))[0]  # the weight of a clip's own label, without smoothing
            s = smoothed[g:g + group]
            np.testing.assert_allclose(targets_hot[g:g + group], lam * s + (1 - lam) * s[::-1], atol=1e-5)
            from_self, from_partner = np.isclose(m, x), np.isclose(m, partner)
            if (from_self | from_partner).all():  # cutmix: pixels copied from the partner in one box, all frames
                box = from_partner[0, 0, :, :, 0] & ~from_self[0, 0, :, :, 0]
                assert (from_partner[:, :, box] | from_self[:, :, box]).all()
                assert abs((1 - lam) - box.mean()) < 1e-5
                modes.append("cutmix")
            else:  # mixup: a blend with the partner, the same lambda as the targets
                np.testing.assert_allclose(m, lam * x + (1 - lam) * partner, atol=1e-5)
                modes.append("mixup")
    assert 0.25 < modes.count("cutmix") / len(modes) < 0.75
