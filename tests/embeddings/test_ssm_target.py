"""The SSM soft-label target (paper eqs. 4-5) against a direct loop, by hand, and batch_texts."""

import pytest
import torch

from medfilip.ssm import batch_texts, shuffle_non_positives, ssm_target

torch.set_num_threads(1)


def loop_ssm(image_label_ids, text_label_ids, vectors, categories=None, variant="paper"):
    """S[i, j] = max over image i's labels l of cos(v_l, v_text_j), one pair at a time."""
    out = torch.empty((len(image_label_ids), len(text_label_ids)), dtype=vectors.dtype)
    for i, labels in enumerate(image_label_ids):
        for j, t in enumerate(text_label_ids):
            values = []
            for lab in labels:
                cos = torch.nn.functional.cosine_similarity(vectors[lab], vectors[t], dim=0)
                if variant == "same_category" and categories[lab] != categories[t]:
                    cos = torch.zeros((), dtype=vectors.dtype)
                values.append(cos)
            out[i, j] = max(values)
    return out


def random_batch(seed, dtype, n_labels=40, dim=16, n_images=7, n_texts=11):
    g = torch.Generator().manual_seed(seed)
    vectors = torch.nn.functional.normalize(torch.randn(n_labels, dim, generator=g, dtype=dtype), dim=1)
    categories = torch.randint(0, 4, (n_labels,), generator=g)
    images = []
    for _ in range(n_images):
        ids = torch.randint(0, n_labels, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
        images.append(ids + ids[:1])  # a duplicate label in every image, so c_i >= 2
    texts = torch.randint(0, n_labels, (n_texts,), generator=g)
    return images, texts, vectors, categories


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variant", ["paper", "same_category"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssm_matches_loop_on_random_batches(seed, variant, dtype):
    images, texts, vectors, categories = random_batch(seed, dtype)
    assert len(images) != len(texts) and max(map(len, images)) > 2
    got = ssm_target(images, texts, vectors, categories, variant=variant)
    want = loop_ssm(images, texts.tolist(), vectors, categories, variant)
    assert got.shape == (7, 11) and got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(got, want, rtol=0, atol=tol)


def test_ssm_accepts_tensor_label_lists():
    images, texts, vectors, _ = random_batch(3, torch.float64)
    as_tensors = [torch.tensor(ids) for ids in images]
    torch.testing.assert_close(ssm_target(as_tensors, texts, vectors), ssm_target(images, texts.tolist(), vectors))


# v0 = x, v1 = y, v2 = (0.6, 0.8), v3 = -x; categories 0, 1, 0, 1
HAND_VECTORS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], dtype=torch.float64)
HAND_CATEGORIES = torch.tensor([0, 1, 0, 1])
HAND_IMAGES = [[0, 1], [3, 3]]  # image 1: one label twice
HAND_TEXTS = [2, 3, 0]


def test_ssm_by_hand():
    got = ssm_target(HAND_IMAGES, HAND_TEXTS, HAND_VECTORS)
    # image 0: max(cos(v0, .), cos(v1, .)); image 1: cos(v3, .)
    want = torch.tensor([[0.8, 0.0, 1.0], [-0.6, 1.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_ssm_same_category_by_hand():
    got = ssm_target(HAND_IMAGES, HAND_TEXTS, HAND_VECTORS, HAND_CATEGORIES, variant="same_category")
    # image 0, text v2 (category 0): only v0 (category 0) counts -> 0.6, v1's 0.8 is zeroed
    want = torch.tensor([[0.6, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_ssm_errors_name_the_problem():
    with pytest.raises(ValueError, match="image #1 .* no label"):
        ssm_target([[0], []], [0], HAND_VECTORS)
    with pytest.raises(ValueError, match="needs the category id"):
        ssm_target([[0]], [0], HAND_VECTORS, variant="same_category")
    with pytest.raises(ValueError, match="not one of paper, same_category"):
        ssm_target([[0]], [0], HAND_VECTORS, variant="identity")
    with pytest.raises(IndexError, match="out of range"):
        ssm_target([[0, 4]], [0], HAND_VECTORS)


def test_batch_texts_stable_order_and_positives():
    texts, positives = batch_texts([[5, 2, 5], [7], [2, 9]])
    assert texts.tolist() == [5, 2, 7, 9]
    assert positives.tolist() == [
        [True, True, False, False],
        [False, False, True, False],
        [False, True, False, True],
    ]
    # the image's own labels score 1 in the target (normalised vectors)
    vectors = torch.nn.functional.normalize(
        torch.randn(10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dim=1
    )
    target = ssm_target([[5, 2, 5], [7], [2, 9]], texts, vectors)
    torch.testing.assert_close(target[positives], torch.ones(int(positives.sum()), dtype=torch.float64))
    assert (target[~positives] < 1).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffled_ssm_keeps_row_values_and_positives(seed):
    images, texts, vectors, _ = random_batch(seed, torch.float64, n_images=9, n_texts=30)
    texts, positives = batch_texts(images)
    target = ssm_target(images, texts, vectors, positives=positives)
    shuffled = shuffle_non_positives(target, positives, seed=seed)
    # each row: the same multiset of values, positives unchanged in place
    torch.testing.assert_close(shuffled.sort(dim=1).values, target.sort(dim=1).values, rtol=0, atol=0)
    assert torch.equal(shuffled[positives], target[positives]) and (shuffled[positives] == 1).all()
    # and the values of the non-positive columns moved: the structure is gone
    moved = (shuffled != target) & ~positives
    assert moved.any(dim=1)[(~positives).sum(dim=1) >= 3].all()
    assert float(moved.float().mean()) > 0.5
    # deterministic per seed, another seed another permutation
    assert torch.equal(shuffle_non_positives(target, positives, seed=seed), shuffled)
    assert not torch.equal(shuffle_non_positives(target, positives, seed=seed + 100), shuffled)


def test_shuffled_ssm_by_hand():
    target = torch.tensor([[1.0, 0.9, 0.2, 0.5], [0.3, 1.0, 1.0, 0.7]])
    positives = torch.tensor([[True, False, False, False], [False, True, True, False]])
    out = shuffle_non_positives(target, positives, seed=3)
    assert out[0, 0] == 1.0 and sorted(out[0, 1:].tolist()) == pytest.approx([0.2, 0.5, 0.9])
    assert out[1, 1:3].tolist() == [1.0, 1.0] and sorted(out[1, [0, 3]].tolist()) == pytest.approx([0.3, 0.7])
    with pytest.raises(ValueError, match="positives of shape"):
        shuffle_non_positives(target, positives[:1], seed=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_ssm_on_cuda_matches_cpu():
    images, texts, vectors, categories = random_batch(4, torch.float32)
    for variant in ("paper", "same_category"):
        cpu = ssm_target(images, texts, vectors, categories, variant=variant)
        gpu = ssm_target(images, texts.cuda(), vectors.cuda(), categories.cuda(), variant=variant)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)
    texts_gpu, positives = batch_texts([torch.tensor(ids, device="cuda") for ids in images])
    assert texts_gpu.device.type == "cuda" and positives.device.type == "cuda"
    # the shuffled control draws its permutation on the CPU: the same on either device
    target = ssm_target(images, texts_gpu, vectors.cuda(), positives=positives)
    torch.testing.assert_close(
        shuffle_non_positives(target, positives, seed=1).cpu(), shuffle_non_positives(target.cpu(), positives.cpu(), 1)
    )
