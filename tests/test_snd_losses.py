"""SND target losses (§4.2-4.4), distillation errors and intrinsic reward (§3), the SND-V augmentation (§5) and pair
sampling (§4.2), and the s_{t+1} lookup of SND-STD / SND-VIC, against values computed by hand."""

import math

import pytest
import torch
import torch.nn as nn
from conftest import load_script

snd_v = load_script("ppo_snd_v_atari.py")
snd_std = load_script("ppo_snd_std_atari.py")
snd_vic = load_script("ppo_snd_vic_atari.py")

ALL_SCRIPTS = [snd_v, snd_std, snd_vic]
ABS_ERROR_SCRIPTS = [snd_std, snd_vic]  # e = mean_k (|T - P| + 1e-8)^2
SCRIPT_IDS = lambda module: module.__name__  # noqa: E731


def hadamard8() -> torch.Tensor:
    """The 8 x 8 Sylvester Hadamard matrix: +-1 entries, orthogonal columns, columns 1..7 sum to zero."""
    h = torch.ones(1, 1)
    for _ in range(3):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


# ---------------------------------------------------------------------------------------------------- SND-V contrastive


def test_contrastive_loss_by_hand():
    """d is the mean (not the sum) over features of (z - z')^2, similarity the mean over pairs of (y - d)^2, and the
    magnitude hinge is 0 for small features, so the total is the similarity alone."""
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    z_other = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    # d = (0, (1 + 1 + 1) / 3, 4 / 3, (9 + 1) / 3) = (0, 1, 4/3, 10/3)
    # (y - d)^2 = (0, 0, 1/9, 100/9) -> similarity = (101 / 9) / 4 = 101/36
    # mean z^2 = (14 + 0 + 4 + 9) / 12 = 27/12, mean z'^2 = (14 + 3 + 0 + 1) / 12 = 18/12: 3.75 - 200 < 0 -> 0
    total, terms = snd_v.contrastive_loss(z, z_other, labels)
    torch.testing.assert_close(terms["similarity"], torch.tensor(101 / 36))
    assert terms["magnitude"].item() == 0.0
    torch.testing.assert_close(total, torch.tensor(101 / 36))


@pytest.mark.parametrize(
    "square, other_square, magnitude",
    [
        (99.5, 99.5, 0.0),  # M = 199: just below the threshold -> exactly 0
        (99.99, 99.99, 0.0),  # M = 199.98
        (100.5, 100.5, 1.0),  # M = 201 -> the excess, 1 (a hinge on the mean of both sides, 100.5, would give 0)
        (150.0, 60.0, 10.0),  # M = 150 + 60 = 210: the two sides' means are added
    ],
)
def test_contrastive_magnitude_hinge(square, other_square, magnitude):
    """L_mag = max(0, mean(z^2) + mean(z'^2) - 200) with constant features; the similarity is computed by hand."""
    z = torch.full((4, 3), math.sqrt(square))
    z_other = torch.full((4, 3), math.sqrt(other_square))
    labels = torch.tensor([0.0, 1.0, 1.0, 1.0])
    total, terms = snd_v.contrastive_loss(z, z_other, labels)
    if magnitude == 0.0:
        assert terms["magnitude"].item() == 0.0
    else:
        torch.testing.assert_close(terms["magnitude"], torch.tensor(magnitude), rtol=0, atol=2e-4)
    distance = (math.sqrt(square) - math.sqrt(other_square)) ** 2  # the same on every feature
    similarity = (distance**2 + 3 * (1 - distance) ** 2) / 4
    torch.testing.assert_close(terms["similarity"], torch.tensor(similarity), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(total, torch.tensor(similarity + magnitude), rtol=1e-5, atol=2e-4)


def test_contrastive_magnitude_hinge_passes_no_gradient_below_200():
    """With z = z' and label 0 the similarity and its gradient are 0, so the gradient is the hinge's: exactly 0 at
    M = 199, and d(mean z^2)/dz = 2z / 12 on each side at M = 201."""
    gradients = {}
    for square in (99.5, 100.5):
        z = torch.full((4, 3), math.sqrt(square), requires_grad=True)
        z_other = torch.full((4, 3), math.sqrt(square), requires_grad=True)
        total, _ = snd_v.contrastive_loss(z, z_other, torch.zeros(4))
        total.backward()
        gradients[square] = (z.grad, z_other.grad)
    assert all(torch.all(g == 0) for g in gradients[99.5])
    expected = torch.full((4, 3), 2 * math.sqrt(100.5) / 12)  # about 1.671
    for g in gradients[100.5]:
        torch.testing.assert_close(g, expected)


# ---------------------------------------------------------------------------------------------------- SND-VIC VICReg


def test_vicreg_loss_by_hand():
    """Invariance, unbiased variance hinge with eps 1e-4, off-diagonal covariance / D, and total = inv + var + cov / 25."""
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [2.0, 2.0, 0.0], [3.0, 3.0, 0.0]])
    z_next = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, -1.0], [0.0, 1.0, -1.0]])
    # z - z' = [[-1,0,-1],[1,0,-1],[1,2,1],[3,2,1]]: squares sum to 2 + 2 + 6 + 14 = 24 -> invariance 24 / 12 = 2
    invariance = 2.0
    # z: columns 0 and 1 are (0,1,2,3), centred (-1.5,-.5,.5,1.5), Var = 5/(4-1) = 5/3, std 1.29 > 1 -> 0;
    #    column 2 is constant: 1 - sqrt(0 + 1e-4) = 0.99 -> mean over 3 features 0.33
    # z': columns 0 and 1 are (1,0,1,0) and (0,1,0,1): Var = 1/3 each -> 1 - sqrt(1/3 + 1e-4) each;
    #     column 2 is (1,1,-1,-1): Var = 4/3, std > 1 -> 0
    variance = 0.99 / 3 + 2 * (1 - math.sqrt(1 / 3 + 1e-4)) / 3  # 0.33 + 0.28171 = 0.61171
    # z: C01 = C10 = (2.25 + .25 + .25 + 2.25) / 3 = 5/3, the rest 0 -> (2 * 25/9) / 3 = 50/27
    # z': C01 = C10 = -1/3 (column 1 = 1 - column 0), C02 = (.5 - .5 - .5 + .5) / 3 = 0, C12 = 0 -> (2 / 9) / 3 = 2/27
    covariance = 50 / 27 + 2 / 27
    total, terms = snd_vic.vicreg_loss(z, z_next)
    torch.testing.assert_close(terms["invariance"], torch.tensor(invariance))
    torch.testing.assert_close(terms["variance"], torch.tensor(variance))
    torch.testing.assert_close(terms["covariance"], torch.tensor(covariance))
    torch.testing.assert_close(total, torch.tensor(invariance + variance + covariance / 25))  # 2.68875


def test_vicreg_identical_views_have_zero_invariance():
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    _, terms = snd_vic.vicreg_loss(z, z.clone())
    assert terms["invariance"].item() == 0.0
    _, shifted = snd_vic.vicreg_loss(z, z + 0.5)  # the same views half a unit apart: 0.5^2
    torch.testing.assert_close(shifted["invariance"], torch.tensor(0.25))


def test_vicreg_collapsed_features_pay_one_minus_sqrt_eps_per_view():
    """Constant features: std = sqrt(0 + 1e-4) = 0.01 on every feature, so each view pays 0.99 (not 1: the eps), no
    covariance; the invariance is (3 - (-1))^2 = 16."""
    total, terms = snd_vic.vicreg_loss(torch.full((8, 5), 3.0), torch.full((8, 5), -1.0))
    torch.testing.assert_close(terms["variance"], torch.tensor(1.98))
    assert terms["covariance"].item() == 0.0
    torch.testing.assert_close(terms["invariance"], torch.tensor(16.0))
    torch.testing.assert_close(total, torch.tensor(17.98))


def test_vicreg_variance_hinge_is_zero_above_unit_std():
    """+-2 columns (unbiased std 2 * sqrt(8/7) = 2.14) give exactly 0, not a negative or squared term."""
    z = 2 * hadamard8()[:, 1:]
    _, terms = snd_vic.vicreg_loss(z, -z)
    assert terms["variance"].item() == 0.0
    # half the std (1.07) is still above 1 -> 0; a quarter (0.53) pays 1 - sqrt(Var + 1e-4) per feature and view
    _, half = snd_vic.vicreg_loss(z / 2, z / 2)
    assert half["variance"].item() == 0.0
    _, quarter = snd_vic.vicreg_loss(z / 4, z / 4)
    torch.testing.assert_close(quarter["variance"], torch.tensor(2 * (1 - math.sqrt(0.25 * 8 / 7 + 1e-4))))


def test_vicreg_decorrelated_unit_variance_features_cost_nothing():
    """Hadamard columns 1..7 scaled by sqrt(7/8): unbiased Var exactly 1, sample covariance exactly 0, so covariance ~0
    and variance 0 (std sqrt(1 + 1e-4) > 1)."""
    z = hadamard8()[:, 1:] * math.sqrt(7 / 8)
    torch.testing.assert_close(z.var(0), torch.ones(7))  # the premise
    total, terms = snd_vic.vicreg_loss(z, z)
    assert abs(terms["covariance"].item()) < 1e-10
    assert terms["variance"].item() == 0.0
    assert abs(total.item()) < 1e-10


def test_vicreg_perfectly_correlated_features():
    """Two equal columns x = (0, 1, 2, 3): C01 = C10 = 5/3 -> 2 * 25/9 / D(=2) = 25/9 per view; the anti-correlated
    view (x, -x) has C01 = -5/3, the same square."""
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])
    _, terms = snd_vic.vicreg_loss(torch.stack([x, x], 1), torch.stack([x, -x], 1))
    torch.testing.assert_close(terms["covariance"], torch.tensor(50 / 9))
    # invariance: second column differs by 2x: (0 + 4 + 16 + 36) / 8
    torch.testing.assert_close(terms["invariance"], torch.tensor(7.0))


# ---------------------------------------------------------------------------------------------------- SND-STD ST-DIM


def st_dim_by_loops(next_global_scores, next_local_scores, local_features, target_features) -> dict:
    """§4.3 in plain Python: for every position p and current state j, the logits over next states i, a stable
    log-sum-exp minus the logit of i = j; Frobenius norms of each p's N x N matrix; unbiased std per sample."""
    n, num_positions, _ = local_features.shape

    def logit(score, i, j, p):
        return sum(float(a) * float(b) for a, b in zip(score(i, p), local_features[j, p]))

    def infonce(score):
        total = 0.0
        for p in range(num_positions):
            for j in range(n):
                logits = [logit(score, i, j, p) for i in range(n)]
                top = max(logits)
                total += top + math.log(sum(math.exp(v - top) for v in logits)) - logits[j]
        return total / (num_positions * n)

    def mean_norm(score):
        norms = [math.sqrt(sum(logit(score, i, j, p) ** 2 for i in range(n) for j in range(n))) for p in range(num_positions)]
        return sum(norms) / num_positions

    def global_score(i, p):
        return next_global_scores[i]

    def local_score(i, p):
        return next_local_scores[i, p]

    stds = []
    for row in target_features.tolist():
        mean = sum(row) / len(row)
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in row) / (len(row) - 1)))
    return {
        "global_local_infonce": infonce(global_score),
        "local_local_infonce": infonce(local_score),
        "logit_norm": mean_norm(global_score) + mean_norm(local_score),
        "feature_std": -sum(stds) / len(stds),
    }


def test_st_dim_loss_by_hand():
    """N = 2 states, P = 2 positions (the second all zeros), d = 2: the softmax runs over the next states i (a column
    of logits[p]), the correct one is i = j, and everything is averaged over p and j."""
    next_global_scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # g_0, g_1
    local_features = torch.zeros(2, 2, 2)
    local_features[0, 0] = torch.tensor([2.0, 0.0])  # l_0 at p = 0
    local_features[1, 0] = torch.tensor([1.0, 1.0])  # l_1 at p = 0
    next_local_scores = torch.tensor([[[0.0, 1.0], [5.0, 5.0]], [[1.0, -1.0], [-3.0, 2.0]]])  # s_i at p = 0, 1
    target_features = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    # logits1[0] (rows i, columns j): <g_0, l_0> = 2, <g_0, l_1> = 1, <g_1, l_0> = 0, <g_1, l_1> = 1; logits1[1] = 0
    # j = 0: column (2, 0), answer i = 0 -> log(e^2 + e^0) - 2; j = 1: column (1, 1) -> log 2; p = 1: log 2 twice
    global_local = (math.log(math.exp(2) + 1) - 2 + 3 * math.log(2)) / 4
    # logits2[0]: <s_0, l_0> = 0, <s_0, l_1> = 1, <s_1, l_0> = 2, <s_1, l_1> = 0; logits2[1] = 0
    # j = 0: column (0, 2), answer 0 -> log(1 + e^2); j = 1: column (1, 0), answer 1 -> log(e + 1); p = 1: log 2 twice
    local_local = (math.log(1 + math.exp(2)) + math.log(math.e + 1) + 2 * math.log(2)) / 4
    # ||logits1[0]||_F = sqrt(4 + 1 + 0 + 1), ||logits2[0]||_F = sqrt(0 + 1 + 4 + 0), both 0 at p = 1: mean over p
    logit_norm = math.sqrt(6) / 2 + math.sqrt(5) / 2
    # sample 0: mean 2, deviations (-1, 0, 1) -> std sqrt(2 / 2) = 1; sample 1: mean 2, (-2, -2, 4) -> sqrt(24 / 2)
    feature_std = -(1 + math.sqrt(12)) / 2
    total, terms = snd_std.st_dim_loss(next_global_scores, next_local_scores, local_features, target_features)
    torch.testing.assert_close(terms["global_local_infonce"], torch.tensor(global_local))  # 0.84838
    torch.testing.assert_close(terms["local_local_infonce"], torch.tensor(local_local))  # 1.17357
    torch.testing.assert_close(terms["logit_norm"], torch.tensor(logit_norm))
    torch.testing.assert_close(terms["feature_std"], torch.tensor(feature_std))
    expected_total = global_local + local_local + 1e-4 * (logit_norm + feature_std)
    torch.testing.assert_close(total, torch.tensor(expected_total))


def test_st_dim_loss_matches_a_loop_reference_on_random_tensors():
    torch.manual_seed(0)
    n, num_positions, depth = 5, 3, 4
    next_global_scores = torch.randn(n, depth, dtype=torch.float64)
    next_local_scores = torch.randn(n, num_positions, depth, dtype=torch.float64)
    local_features = torch.randn(n, num_positions, depth, dtype=torch.float64)
    target_features = torch.randn(n, 7, dtype=torch.float64)
    total, terms = snd_std.st_dim_loss(next_global_scores, next_local_scores, local_features, target_features)
    expected = st_dim_by_loops(next_global_scores, next_local_scores, local_features, target_features)
    for key, value in expected.items():
        assert terms[key].item() == pytest.approx(value, rel=1e-10), key
    expected_total = (
        expected["global_local_infonce"]
        + expected["local_local_infonce"]
        + 1e-4 * (expected["logit_norm"] + expected["feature_std"])
    )
    assert total.item() == pytest.approx(expected_total, rel=1e-10)


def test_st_dim_loss_is_lower_for_true_next_states_than_shuffled_ones():
    """Next-state scores built to match each state's own local features score a much lower InfoNCE than the same
    batch with the next states deranged (state j paired with the next state of j - 1)."""
    torch.manual_seed(0)
    n, num_positions, depth = 16, 4, 8
    local_features = torch.randn(n, num_positions, depth)
    next_local_scores = local_features * 5
    next_global_scores = local_features.sum(1) * 3
    target_features = torch.randn(n, 32)
    derangement = torch.roll(torch.arange(n), 1)
    assert not torch.any(derangement == torch.arange(n))
    aligned_total, aligned = snd_std.st_dim_loss(next_global_scores, next_local_scores, local_features, target_features)
    shuffled_total, shuffled = snd_std.st_dim_loss(
        next_global_scores[derangement], next_local_scores[derangement], local_features, target_features
    )
    assert aligned["local_local_infonce"] < 0.1 * shuffled["local_local_infonce"]
    assert aligned["global_local_infonce"] < 0.5 * shuffled["global_local_infonce"]
    assert aligned_total < shuffled_total
    # a permutation of the next states does not change the logits' norms or the feature spread
    torch.testing.assert_close(aligned["logit_norm"], shuffled["logit_norm"])
    torch.testing.assert_close(aligned["feature_std"], shuffled["feature_std"])


# ---------------------------------------------------------------------------------------------------- error and reward


def test_snd_v_distillation_error_is_the_mean_squared_difference():
    target = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, -1.0, 2.0]])
    predicted = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, -1.0, 2.0]])
    error = snd_v.distillation_error(target, predicted)
    # (1 + 4 + 0) / 3, 1 / 3, exactly 0 (no epsilon)
    torch.testing.assert_close(error, torch.tensor([5 / 3, 1 / 3, 0.0]))
    assert error[2].item() == 0.0


@pytest.mark.parametrize("module", ABS_ERROR_SCRIPTS, ids=SCRIPT_IDS)
def test_std_and_vic_distillation_error_adds_1e_8_to_the_absolute_difference(module):
    target = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, -1.0, 2.0]], dtype=torch.float64)
    predicted = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, -1.0, 2.0]], dtype=torch.float64)
    eps = 1e-8
    expected = torch.tensor(
        [
            ((1 + eps) ** 2 + (2 + eps) ** 2 + eps**2) / 3,
            (eps**2 + (1 + eps) ** 2 + eps**2) / 3,  # T - P = -1: |-1| + eps, not (-1 + eps)
            eps**2,
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(module.distillation_error(target, predicted), expected, rtol=1e-13, atol=0)
    # float32, equal features: (0 + 1e-8)^2 = 1e-16 per feature, not 0
    same = torch.randn(4, 512)
    torch.testing.assert_close(module.distillation_error(same, same.clone()), torch.full((4,), 1e-16), rtol=1e-4, atol=0)


@pytest.mark.parametrize("module", ALL_SCRIPTS, ids=SCRIPT_IDS)
def test_intrinsic_reward_scales_by_eta_and_clips_to_unit_interval(module):
    error = torch.tensor([2.5, 0.5, 0.0, 1.2, -0.5])
    torch.testing.assert_close(module.intrinsic_reward(error, eta=0.3), torch.tensor([0.75, 0.15, 0.0, 0.36, 0.0]))
    torch.testing.assert_close(module.intrinsic_reward(error, eta=1.0), torch.tensor([1.0, 0.5, 0.0, 1.0, 0.0]))


# ---------------------------------------------------------------------------------------------------- SND-V augment

TILE_SIZES = (1, 2, 4, 8, 12, 16)


def tile_size_of(zeroed: torch.Tensor):
    """The largest t of TILE_SIZES dividing the image such that the (N, H, W) bool map is constant on every aligned
    t x t tile (its t x t averages are all 0 or 1); None when nothing is zeroed. For a random tile mask this is its tile
    size: a mask of 8-tiles is constant on 4-tiles too, but (barring odds of ~0.66^500) not on 16- or 12-tiles."""
    if not zeroed.any():
        return None
    zeroed = zeroed.float().unsqueeze(1)
    for t in sorted(TILE_SIZES, reverse=True):
        if zeroed.shape[2] % t == 0 and zeroed.shape[3] % t == 0:
            averages = nn.functional.avg_pool2d(zeroed, t)
            if torch.all((averages == 0) | (averages == 1)):
                return t


@pytest.fixture(scope="module")
def augment_stats():
    """120 calls of augment on (32, 1, 96, 96) ones: a pixel < 0.5 was zeroed by the mask (ones become 1 +- 0.2,
    zeros +- 0.2); what remains after subtracting 0 or 1 is the noise, exactly 0 on un-noised samples."""
    torch.manual_seed(0)
    ones = torch.ones(32, 1, 96, 96)
    stats = {"sizes": [], "masked": [], "noised": [], "zero_tiles": {t: [0, 0, 0] for t in TILE_SIZES}}
    noise_sum, noise_sq, noise_count, noise_min, noise_max, out_min, out_max = 0.0, 0.0, 0, 0.0, 0.0, 1.0, 1.0
    for _ in range(120):
        out = snd_v.augment(ones)
        zeroed = out[:, 0] < 0.5
        noise = out[:, 0] - (~zeroed).float()
        t = tile_size_of(zeroed)
        stats["sizes"].append(t)
        masked = zeroed.flatten(1).any(1)
        noised = (noise != 0).flatten(1).any(1)
        stats["masked"].append(masked)
        stats["noised"].append(noised)
        if t is not None:
            tiles_per_sample = (96 // t) ** 2
            counts = stats["zero_tiles"][t]
            counts[0] += int(zeroed[masked].sum()) // (t * t)  # zeroed tiles among masked samples
            counts[1] += int(masked.sum()) * tiles_per_sample  # tiles of masked samples
            counts[2] += int(masked.sum())
        if noised.any():
            values = noise[noised]
            noise_sum += float(values.sum())
            noise_sq += float(values.pow(2).sum())
            noise_count += values.numel()
            noise_min, noise_max = min(noise_min, float(values.min())), max(noise_max, float(values.max()))
        out_min, out_max = min(out_min, float(out.min())), max(out_max, float(out.max()))
    stats["noise"] = dict(
        mean=noise_sum / noise_count,
        std=math.sqrt(noise_sq / noise_count - (noise_sum / noise_count) ** 2),
        min=noise_min,
        max=noise_max,
        out_min=out_min,
        out_max=out_max,
    )
    return stats


def test_augment_draws_every_tile_size_and_zeroes_whole_aligned_tiles(augment_stats):
    """Each call's zero pattern is constant on the tiles of one size of {1, 2, 4, 8, 12, 16}, and every size occurs:
    a pattern not aligned to a tile grid would only ever read as size 1."""
    sizes = augment_stats["sizes"]
    assert None not in sizes
    assert set(sizes) == set(TILE_SIZES)


def test_augment_zeroes_a_tenth_of_the_tiles_of_masked_samples(augment_stats):
    """Per tile size: zeroed tiles / tiles among masked samples is 0.1 within 4 binomial stds. A masked sample is only
    seen if at least one of its T tiles is zeroed, so the expectation is 0.1 / (1 - 0.9^T) (0.1022 for 36 tiles)."""
    for t, (zeroed, tiles, samples) in augment_stats["zero_tiles"].items():
        assert samples > 100, t
        per_sample = (96 // t) ** 2
        expected = 0.1 / (1 - 0.9**per_sample)
        tolerance = 4 * math.sqrt(0.1 * 0.9 / tiles)
        assert zeroed / tiles == pytest.approx(expected, abs=tolerance), t


def test_augment_masks_and_noises_about_half_of_the_samples_independently(augment_stats):
    """Calls with tiles <= 8 (over 144 tiles per sample, so a masked sample has a zero tile but with odds 0.9^144):
    masked about 1/2, noised about 1/2, both about 1/4, each within 4 binomial stds."""
    keep = [t is not None and t <= 8 for t in augment_stats["sizes"]]
    masked = torch.cat([m for m, k in zip(augment_stats["masked"], keep) if k]).float()
    noised = torch.cat([m for m, k in zip(augment_stats["noised"], keep) if k]).float()
    n = masked.numel()
    assert n > 2000
    assert masked.mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / n))
    assert noised.mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / n))
    assert (masked * noised).mean().item() == pytest.approx(0.25, abs=4 * math.sqrt(0.25 * 0.75 / n))


def test_augment_noise_is_uniform_in_plus_minus_0_2_and_not_clipped(augment_stats):
    noise = augment_stats["noise"]
    assert -0.2 - 1e-6 <= noise["min"] < -0.199
    assert 0.199 < noise["max"] <= 0.2 + 1e-6
    assert noise["mean"] == pytest.approx(0.0, abs=1e-3)
    assert noise["std"] == pytest.approx(0.2 / math.sqrt(3), abs=1e-3)  # U(-0.2, 0.2): 0.1155
    # inputs of 1 go above 1 and zeroed pixels below 0: no clipping to [0, 1]
    assert noise["out_max"] > 1.19
    assert noise["out_min"] < -0.19


def test_augment_zeroes_the_same_pixels_in_every_channel():
    torch.manual_seed(1)
    ones = torch.ones(16, 3, 96, 96)
    any_zeroed = False
    for _ in range(5):
        zeroed = snd_v.augment(ones) < 0.5
        any_zeroed |= bool(zeroed.any())
        assert torch.equal(zeroed[:, 0], zeroed[:, 1]) and torch.equal(zeroed[:, 0], zeroed[:, 2])
    assert any_zeroed


def test_augment_returns_a_new_tensor_and_leaves_the_input_alone():
    torch.manual_seed(2)
    frames = torch.rand(16, 1, 96, 96)
    before = frames.clone()
    out = snd_v.augment(frames)
    assert torch.equal(frames, before)
    assert out.shape == frames.shape and out.dtype == frames.dtype
    assert not torch.equal(out, frames)


def test_augment_never_draws_12_for_64_pixel_frames():
    """At 64 px the sizes are {1, 2, 4, 8, 16}: all of them occur, and 12 (which does not divide 64) never does."""
    torch.manual_seed(3)
    ones = torch.ones(16, 1, 64, 64)
    sizes = set()
    for _ in range(100):
        out = snd_v.augment(ones)
        assert out.shape == ones.shape
        sizes.add(tile_size_of(out[:, 0] < 0.5))
    sizes.discard(None)  # a call with no zeroed tile at all (odds ~2e-4 with sixteen 16-px tiles per sample)
    assert sizes == {1, 2, 4, 8, 16}


# ---------------------------------------------------------------------------------------------------- SND-V pairs


def test_sample_pairs_label_0_repeats_the_state_and_label_1_draws_another():
    torch.manual_seed(0)
    num_states, num_pairs = 1_000_000, 20_000
    first, second, labels = snd_v.sample_pairs(num_states, num_pairs, torch.device("cpu"))
    assert first.shape == second.shape == labels.shape == (num_pairs,)
    assert labels.is_floating_point() and torch.all((labels == 0) | (labels == 1))
    assert labels.mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / num_pairs))
    close = labels == 0
    assert torch.equal(second[close], first[close])
    # label 1: an independent uniform draw, equal to the first by chance with odds 1e-6 each
    far_first, far_second = first[~close].double(), second[~close].double()
    n = far_first.numel()
    assert (far_first != far_second).float().mean().item() > 0.999
    correlation = torch.corrcoef(torch.stack([far_first, far_second]))[0, 1].item()
    assert abs(correlation) < 4 / math.sqrt(n)
    # uniform on 0..num_states-1: mean (num_states - 1) / 2, std of the mean num_states / sqrt(12 n)
    assert far_second.mean().item() == pytest.approx((num_states - 1) / 2, abs=4 * num_states / math.sqrt(12 * n))


def test_sample_pairs_indices_cover_the_range_and_stay_in_it():
    torch.manual_seed(0)
    first, second, labels = snd_v.sample_pairs(5, 2000, torch.device("cpu"))
    assert first.dtype == second.dtype == torch.long
    assert first.device.type == second.device.type == labels.device.type == "cpu"
    assert set(first.tolist()) == set(second.tolist()) == {0, 1, 2, 3, 4}
    assert set(second[labels == 1].tolist()) == {0, 1, 2, 3, 4}


# ---------------------------------------------------------------------------------------------------- s_{t+1} lookup


def tiny_rollout():
    """3 steps x 2 envs: newest frames of s_0..s_3 flattened step-major (8 frames of 2 x 2, frame k holds 4k..4k+3);
    env 0 ends its episode at step 1 (flat index 2) and env 1 at step 2 (flat index 5), final frames 200.. and 220..."""
    frames = (torch.arange(8 * 4).reshape(8, 2, 2)).to(torch.uint8)
    final_frames = torch.stack([torch.arange(200, 204).reshape(2, 2), torch.arange(220, 224).reshape(2, 2)]).to(torch.uint8)
    final_frame_slot = torch.tensor([-1, -1, 0, -1, -1, 1])
    return frames, final_frames, final_frame_slot


@pytest.mark.parametrize("module", ABS_ERROR_SCRIPTS, ids=SCRIPT_IDS)
def test_next_state_frames_reads_one_step_ahead_or_the_final_frame(module):
    frames, final_frames, final_frame_slot = tiny_rollout()
    # s_{t+1} of flat index k is frame k + 2 (frames 2, 3, 4, 5, 6, 7), except k = 2 and k = 5 (episode ends)
    expected = torch.stack([frames[2], frames[3], final_frames[0], frames[5], frames[6], final_frames[1]])
    whole = module.next_state_frames(frames, final_frames, final_frame_slot, 0, 6, num_envs=2)
    assert whole.dtype == torch.uint8
    assert torch.equal(whole, expected)
    # minibatches of the flat indices
    assert torch.equal(module.next_state_frames(frames, final_frames, final_frame_slot, 2, 4, 2), expected[2:4])
    assert torch.equal(module.next_state_frames(frames, final_frames, final_frame_slot, 4, 6, 2), expected[4:6])
    assert torch.equal(module.next_state_frames(frames, final_frames, final_frame_slot, 0, 2, 2), frames[2:4])


@pytest.mark.parametrize("module", ABS_ERROR_SCRIPTS, ids=SCRIPT_IDS)
def test_next_state_frames_without_episode_ends(module):
    frames, _, _ = tiny_rollout()
    no_final = torch.zeros((0, 2, 2), dtype=torch.uint8)
    no_slot = torch.full((6,), -1)
    assert torch.equal(module.next_state_frames(frames, no_final, no_slot, 0, 6, 2), frames[2:8])
    assert torch.equal(module.next_state_frames(frames, no_final, no_slot, 2, 4, 2), frames[4:6])


def test_next_state_frames_is_the_same_in_snd_std_and_snd_vic():
    torch.manual_seed(0)
    num_steps, num_envs = 5, 3
    frames = torch.randint(0, 256, ((num_steps + 1) * num_envs, 4, 4), dtype=torch.uint8)
    final_frames = torch.randint(0, 256, (4, 4, 4), dtype=torch.uint8)
    final_frame_slot = torch.full((num_steps * num_envs,), -1)
    final_frame_slot[torch.tensor([1, 5, 6, 13])] = torch.arange(4)
    for start, stop in [(0, 15), (3, 9), (12, 15)]:
        std_frames = snd_std.next_state_frames(frames, final_frames, final_frame_slot, start, stop, num_envs)
        vic_frames = snd_vic.next_state_frames(frames, final_frames, final_frame_slot, start, stop, num_envs)
        assert torch.equal(std_frames, vic_frames)
        assert std_frames.shape == (stop - start, 4, 4)
